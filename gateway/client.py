"""The client interface: a raw HTTP request in, events and a response out.

A client module in ``clients/`` holds ``ROUTES`` (method, path pairs),
``AUTHENTICATED`` (whether it verifies a signature over every request it
turns into events: the order webhooks do, GA4 hits and beacons come from
anyone), ``Config`` (a ``ClientConfig``) and a pure ``parse(raw, config)``. The one
adapter that reads the body, enforces the size limit, resolves the client
address and calls ``parse`` is ``Gateway.handle`` in ``gateway.app``, reached
from the ASGI front in ``gateway.collect``; clients never see ASGI or
Starlette, which keeps them testable with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import BadRequest
from gateway.event import ConsentState, Event, Source


class ClientConsentDefaults(BaseModel):
    """A client's own consent default: each signal it names overrides the container's for this client's events."""

    model_config = ConfigDict(extra="forbid")
    ad_storage: ConsentState | None = None
    analytics_storage: ConsentState | None = None
    ad_user_data: ConsentState | None = None
    ad_personalization: ConsentState | None = None


class ClientConsent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: ClientConsentDefaults = Field(
        default_factory=ClientConsentDefaults,
        description="Assumed for a signal this client's requests do not carry (order systems and call trackers "
        "carry none: set what the shop recorded at checkout); signals left out take the container's default.",
    )


class ClientConfig(BaseModel):
    """Base of every client's config section; ``type`` chooses the module."""

    model_config = ConfigDict(extra="forbid")
    type: str
    consent: ClientConsent | None = Field(
        None,
        description="This client's own consent.default, e.g. {default: {ad_user_data: granted}}: each signal it "
        "names overrides the container's consent.default for this client's events (an order system or call "
        "tracker carries no signals; set what the shop recorded at checkout).",
    )


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

    ``ignored`` is the reason a webhook is acknowledged without acting on it
    (an event or topic the client does not handle): order systems retry a
    refusal and end up disabling the subscription, so it gets a 2xx, and the
    gateway counts it in ``gateway_webhooks_ignored_total``.
    """

    events: list[Event]
    status: int = 204
    body: bytes = b""
    media_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    request_key: str | None = None
    consent_sources: list[dict[str, str]] | None = None
    ignored: str | None = None

    @classmethod
    def ignore(cls, reason: str, request_key: str | None = None) -> ClientResult:
        """A 200 ``{"ignored": reason}`` with no events; ``reason`` is a short code, never request data."""
        return cls([], status=200, body=orjson.dumps({"ignored": reason}), media_type="application/json",
                   request_key=request_key, ignored=reason)


def stamp(events: list[Event], source: Source) -> None:
    """Stamp each event with where it came from, after checking no request set what only the gateway may.

    Clients refuse internal fields with the exact path; this is the net under
    them: ``source`` and ``adjustment`` are never set by a client, and
    ``order`` only by a client that verified the request's signature.
    """
    for index, event in enumerate(events):
        if event.source is not None or event.adjustment is not None or (event.order is not None and not source.authenticated):
            name = "source" if event.source is not None else "adjustment" if event.adjustment is not None else "order"
            raise BadRequest(400, f"{name} is set by the gateway, never by a request", field=f"events[{index}].{name}")
        event.source = source
