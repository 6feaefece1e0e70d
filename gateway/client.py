"""The client interface: a raw HTTP request in, events and a response out.

A client module in ``clients/`` holds ``ROUTES`` (method, path pairs),
``Config`` (a ``ClientConfig``) and a pure ``parse(raw, config)``. The one
adapter that reads the body, enforces the size limit, resolves the client
address and calls ``parse`` is ``Gateway.handle`` in ``gateway.app``, reached
from the ASGI front in ``gateway.collect``; clients never see ASGI or
Starlette, which keeps them testable with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from pydantic import BaseModel, ConfigDict

from gateway.event import Event


class ClientConfig(BaseModel):
    """Base of every client's config section; ``type`` chooses the module."""

    model_config = ConfigDict(extra="forbid")
    type: str


@dataclass(frozen=True, slots=True)
class RawRequest:
    method: str
    path: str
    query_string: str  # undecoded, as sent
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    client_ip: str | None  # already resolved through server.trusted_proxies
    received_at: datetime  # UTC-aware


@dataclass(slots=True)
class ClientResult:
    """What a client made of a request.

    ``request_key`` makes a redelivered request (a webhook retried by its
    sender) a no-op: when the storage already holds that key, nothing is
    stored again and the response is still sent.

    ``consent_sources`` is for the debugger: one entry per event, saying which
    wire field set each consent signal (GA4: ``gcd`` or ``gcs``). Clients with
    a single source for every signal leave it None; the debugger then names
    the source after the client (``json``, ``webhook``).
    """

    events: list[Event]
    status: int = 204
    body: bytes = b""
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    request_key: str | None = None
    consent_sources: list[dict[str, str]] | None = None
