"""Which address a request came from, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from typing import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(addr: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def resolve_client_ip(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str | None:
    """The first address, walking X-Forwarded-For from the right, that is not a trusted proxy.

    Only the right-most entries were added by our own proxies; anything to
    their left was written by the client and could be forged, so the walk
    stops at the first untrusted hop.
    """
    if peer is None or not forwarded_for or not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",")]
    candidate = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage in the chain: trust nothing to its left
        candidate = hop
        if not _trusted(hop, proxies):
            break
    return candidate
