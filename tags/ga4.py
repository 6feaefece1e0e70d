"""Google Analytics 4: each event forwarded as the gtag.js hit it came as, to ``{collect_base}/g/collect``.

This is what sGTM's GA4 tag does: the page's own wire format (protocol v2),
every parameter the page sent, plus what only the server knows. Google does
not document ``/g/collect``; the parameter names are gtag.js's, as in the
captured hits in ``tests/fixtures/ga4/`` and ``gateway.ga4_params``. The item
is one event's parameters split the way gtag.js splits a batch: ``query``
(the page's: tid, cid, page, consent, client hints ...) and ``line`` (the
event's: en, ep.*, epn.*, items, engagement time ...). The sender
(``tags/_ga4_sender.py``) puts the events of one page that wait together
into one POST, one line each, as gtag.js batches them.

Wire rules, and why:

- The visitor's IP address goes as ``_uip`` and the user agent as the
  request's ``User-Agent`` header, so GA4's geography and device reports stay
  right although the request comes from our server.
- Consent travels as ``gcs`` and ``gcd``, written from the event's consent
  after the gateway applied its defaults and redaction: a signal the page
  left unset is the container's default, which GA4 must see as such. With
  ``ad_personalization`` denied the hit says ``npa=1``.
- ``analytics_storage`` denied: a cookieless ping, as gtag.js sends it. No
  identifier that outlives the page leaves: the client id is a number made
  from the page view (``_p``) alone, never from a cookie, and the user id,
  session id and number, user properties, the session flags and the
  enhanced client id are left out.
- ``ad_user_data`` denied: no user-provided data (``em``). Granted: the
  event's hashed email, phone, name and street as gtag.js sends them
  (``em=tv.1~em.<base64url sha256>~pn....``), raw values hashed with Google's
  normalisation first.
- ``measurement_ids`` sends one hit to several GA4 properties; without it the
  hit goes to the property it was meant for (``tid``).
- Events from an order system (purchases, refunds) are not browser hits and
  are skipped, or a purchase would count twice; ``ga4_refund`` sends the
  order system's refunds through the Measurement Protocol.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import socket
from typing import Annotated, Any, Literal

import msgspec
from pydantic import Field, StringConstraints

from gateway import ga4_params
from gateway.delivery import Delivery
from gateway.event import Event, UserData
from gateway.identity import google as identity
from gateway.percent import encode_query
from gateway.tag import Skip, TagConfig
from tags._ga4 import DESTINATION, MEASUREMENT_ID_PATTERN, digest_number, from_order_system, gcd, gcs
from tags._ga4_items import write_item as _item

# Extra keys that are protocol state of the GA4 client rather than the page's own parameters.
_CLIENT_KEYS = frozenset({"measurement_id", "ga_session_id", "ga_session_number", "npa", "x-ga-js_client_id"})
# Page-level parameters left out of a cookieless ping (session engagement, the enhanced client id).
_COOKIELESS_PAGE_SKIP = frozenset({"gcs", "gcd", "seg", "ecid"})
_PAGE_SKIP = frozenset({"gcs", "gcd"})
# Session flags and ids a cookieless ping does not carry (first visit, session start, new session, Google's session id).
_COOKIELESS_EVENT_SKIP = frozenset({"_fv", "_ss", "_nsi", "_gsid"})
_ID_PARAMS = ("transaction_id", "event_id")
_NUMBER_PARAMS = ("value", "tax", "shipping")


class Config(TagConfig):
    type: Literal["ga4"] = Field(description="Forward each event to Google Analytics 4 as gtag.js sends it.")
    measurement_ids: list[Annotated[str, StringConstraints(pattern=MEASUREMENT_ID_PATTERN)]] = Field(
        default_factory=list,
        description="GA4 measurement ids to send each event to (one hit each); empty: the measurement id the hit "
                    "itself was for (tid).",
    )
    debug_mode: bool = Field(
        False, description="Mark every hit as debug traffic (_dbg=1), so it shows in GA4's DebugView; hits the "
                           "page marked stay marked either way.",
    )


def build(event: Event, config: Config) -> list[Delivery]:
    if from_order_system(event):
        raise Skip("order_system_event")
    ids = config.measurement_ids or _own_measurement_id(event)
    if not ids:
        raise Skip("no_measurement_id")
    analytics = event.consent.analytics_storage == "granted"
    page, custom = ga4_params.split_extra(event.extra, _PAGE_SKIP if analytics else _COOKIELESS_PAGE_SKIP)
    query = _encode_page(_page(event, analytics, page))
    line = _encode(_event(event, config, analytics, custom))
    agent = event.user_agent or ""
    # The time as msgspec writes it (RFC 3339, to the microsecond, in C): datetime.isoformat costs ten times more.
    basis = "\n".join((query, line, agent, _rfc3339(event.timestamp).decode("ascii")))
    digest = hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]
    return [
        Delivery(
            destination=DESTINATION,
            batch_key=f"collect:{tid}",
            idempotency_key=f"{DESTINATION}:{config.name}:{tid}:{digest}",
            item={"query": f"v=2&tid={tid}&{query}", "line": line, "user_agent": agent},
            tag=config.name,
        )
        for tid in ids
    ]


def _own_measurement_id(event: Event) -> list[str]:
    tid = event.extra.get("measurement_id")
    return [tid] if isinstance(tid, str) and tid else []


def _page(event: Event, analytics: bool, page: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The page-level parameters, in the order gtag.js writes them; ``page``: those kept in ``extra``."""
    extra = event.extra
    consent = event.consent
    params: list[tuple[str, str]] = [
        ("gcs", gcs(consent)),
        ("gcd", gcd(consent, _text(extra.get("x-ga-gcd")))),
    ]
    npa = "1" if consent.ad_personalization == "denied" else _text(extra.get("npa"))
    if npa:
        params.append(("npa", npa))
    params.append(("cid", event.client_id if analytics and event.client_id else _cookieless_id(event)))
    if analytics and event.user_id:
        params.append(("uid", event.user_id))
    for param, value in (("ul", event.language), ("sr", event.screen_resolution)):
        if value:
            params.append((param, value))
    params.extend(page)
    if analytics:
        for param, key in (("sid", "ga_session_id"), ("sct", "ga_session_number")):
            value = _text(extra.get(key))
            if value:
                params.append((param, value))
    for param, value in (("dl", event.page_location), ("dr", event.page_referrer), ("dt", event.page_title)):
        if value:
            params.append((param, value))
    if event.ip_override and _is_ip(event.ip_override):
        params.append(("_uip", event.ip_override))
    if consent.ad_user_data == "granted" and event.user_data is not None:
        em = _em(event.user_data)
        if em:
            params.append(("em", em))
    return params


def _event(event: Event, config: Config, analytics: bool, custom: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """The event-level parameters: a body line of a batched hit; ``custom``: ``extra``'s non-protocol keys."""
    extra = event.extra
    params: list[tuple[str, str]] = [("en", event.event_name)]
    params.extend(ga4_params.event_params(extra, frozenset() if analytics else _COOKIELESS_EVENT_SKIP))
    if config.debug_mode and not any(name == "_dbg" for name, _ in params):
        params.append(("_dbg", "1"))
    if event.currency:
        params.append(("cu", event.currency))
    for name in _ID_PARAMS:
        value = getattr(event, name)
        if value:
            params.append((f"ep.{name}", value))
    for name in _NUMBER_PARAMS:
        value = getattr(event, name)
        if value is not None:
            params.append((f"epn.{name}", _number(value)))
    for key, value in custom:
        if key in _CLIENT_KEYS:
            continue
        typed = _custom(key, value)
        if typed is not None:
            params.append(typed)
    for index, item in enumerate(event.items or (), 1):
        encoded = _item(item)
        if encoded:
            params.append((f"pr{index}", encoded))
    if analytics and event.user_properties:
        for key, value in event.user_properties.items():
            typed = _custom(key, value, "up", "upn")
            if typed is not None:
                params.append(typed)
    return params


def _custom(key: str, value: object, text: str = "ep", number: str = "epn") -> tuple[str, str] | None:
    """A custom parameter typed by prefix, as gtag.js sends it: ep.<name> for text, epn.<name> for numbers."""
    if isinstance(value, str):
        return f"{text}.{key}", value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{number}.{key}", _number(value)
    return None  # objects, lists and booleans have no wire form


def _em(user_data: UserData) -> str | None:
    """User-provided data as gtag.js sends it: SHA-256 digests in base64url without padding."""
    address = user_data.address
    digests = [
        ("em", user_data.sha256_email_address or identity.hash_email(user_data.email_address)),
        ("pn", user_data.sha256_phone_number or identity.hash_phone(user_data.phone_number)),
    ]
    if address is not None:
        digests += [
            ("fn0", address.sha256_first_name or identity.hash_name(address.first_name)),
            ("ln0", address.sha256_last_name or identity.hash_name(address.last_name)),
            ("sa0", address.sha256_street or identity.hash_name(address.street)),
        ]
    pieces = [f"{code}.{_base64url(digest)}" for code, digest in digests if digest]
    return "~".join(["tv.1", *pieces]) if pieces else None


def _base64url(hex_digest: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode("ascii")


def _cookieless_id(event: Event) -> str:
    """A client id for one page view only, as a cookieless ping has: made from the page id, never from a cookie."""
    seconds = int(event.timestamp.timestamp())
    page = event.extra.get("x-ga-page_id")
    basis = str(page) if page is not None else f"{event.timestamp.isoformat()}|{event.page_location or ''}"
    return f"{digest_number('cookieless', basis)}.{seconds}"


_rfc3339 = msgspec.json.encode  # of a datetime: b'"2026-12-07T15:00:00.123456Z"'
_encode = encode_query  # name=value&..., each percent-encoded as gtag.js does (encodeURIComponent)
# The last page-level parameters encoded, and their encoding. The events of one batched hit share their page's
# parameters (the query string), so each event after the first finds them here; one slot, so nothing grows.
_last_page: tuple[tuple[tuple[str, str], ...], str] = ((), "")


def _encode_page(params: list[tuple[str, str]]) -> str:
    """``_encode`` of the page-level parameters, remembered for the next event of the same page."""
    global _last_page
    key = tuple(params)
    seen, encoded = _last_page
    if key != seen or not key:
        encoded = _encode(params)
        _last_page = (key, encoded)
    return encoded


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _is_ip(text: str) -> bool:
    """An IPv4 or IPv6 address; the C parser first (what it accepts, ``ipaddress`` accepts too), then ``ipaddress``."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
        return True
    except (OSError, ValueError):
        pass
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
