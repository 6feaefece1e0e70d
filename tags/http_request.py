"""Forward the event, as JSON, to an HTTP endpoint of your own (a webhook, a data warehouse's collector).

The body is the whole event after consent was applied (``Event.to_json_bytes``:
sGTM's key names, empty fields left out), one request per event, with
``Content-Type: application/json`` and the tag's own headers. With
``batch_size`` above 1 the body is instead a JSON array of up to that many
events, as Segment's webhook batching sends them: a collector that takes
batches costs the gateway one request per batch instead of one per event.
The receiver may see the same event more than once (delivery is at least
once, like any webhook); ``event_id`` in the body is the key to deduplicate on.

The idempotency key falls back to a hash of the body when the event has no
``event_id``, so that the same hit sent twice is stored once. The body is
encoded once, and the same bytes are hashed and stored as the outbox row
(``Delivery.raw``). They are deterministic: the fields come in the event
model's order, and the keys of free-form objects (``extra``, ``items``,
``user_properties``) are sorted, because two clients may build the same
event in a different key order.

Sending, retries and the reading of the answer are in ``tags/_http_sender.py``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from gateway.delivery import Delivery
from gateway.event import Event
from gateway.tag import TagConfig

DESTINATION = "http_request"

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP header name (RFC 9110 token)
# Set by the HTTP client from the body and URL; a value from the config would corrupt the request.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})


class Config(TagConfig):
    type: Literal["http_request"] = Field(description="Forward each event as JSON to an HTTP endpoint.")
    url: str = Field(description="The endpoint, an http:// or https:// URL.")
    method: Literal["POST", "PUT"] = Field("POST", description="HTTP method of the request.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. Authorization; credentials are masked in dry-run records.",
    )
    secret_headers: list[str] = Field(
        default_factory=list,
        description="Names of further headers whose values are credentials, masked wherever the request is shown "
                    "or logged (Authorization, X-Api-Key, Cookie and names with auth, token, secret, password, signature "
                    "or session in them, or ending in -key, always are).",
    )
    mode: Literal["live", "dry_run"] = Field(
        "live", description="live sends; dry_run records the exact request instead of sending it."
    )
    batch_size: int = Field(
        1, ge=1, le=1000,
        description="Events per request. 1 sends each event as a JSON object; more sends a JSON array of up to "
                    "this many events waiting together, and the endpoint's answer counts for all of them.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("must be an http:// or https:// URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        url = info.data.get("url")
        if url and any(name.lower() == "authorization" for name in value) and urlsplit(url).username is not None:
            # The HTTP client refuses a request with both (aiohttp: "Cannot combine AUTHORIZATION header with
            # AUTH argument or credentials encoded in URL"): every send would fail, so the file is refused instead.
            raise ValueError("an Authorization header cannot go with credentials in the url (user:password@); "
                             "keep one of them")
        for name, header in value.items():
            if not _TOKEN.match(name):
                raise ValueError("header names may hold letters, digits and !#$%&'*+-.^_`|~ only")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the gateway and cannot be configured")
            if "\r" in header or "\n" in header:
                raise ValueError(f"the value of header {name} contains a line break")
        return value


def build(event: Event, config: Config) -> list[Delivery]:
    body = event.to_json_bytes()
    if event.event_id:
        key = f"{DESTINATION}:{config.name}:{event.event_id}"
    else:
        key = f"{DESTINATION}:{config.name}:{hashlib.sha256(body).hexdigest()}"
    return [Delivery(DESTINATION, config.name, key, None, config.name, raw=body)]
