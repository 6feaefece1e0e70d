"""The destination sender interface, and dry-run recording shared by all senders.

A sender takes a batch of outbox items for one batch key, makes one vendor
request (or several, when the vendor forces a split) and returns one
``Result`` per item, in order. It owns its HTTP session, its credentials and
the reading of the vendor's answers; tags never do I/O.

In ``dry_run`` mode a sender builds exactly the request it would send and
hands it to the recorder instead of the network, then reports every item
delivered. That is how the sample container shows the whole flow without any
vendor credentials.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, ClassVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway import secrets_mask
from gateway.delivery import JsonItem, Result
from gateway.tag import TagConfig


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    # Header names the tag's config declares secret, on top of the ones ``gateway.secrets_mask`` knows.
    secret_headers: tuple[str, ...] = ()

    def for_record(self) -> dict[str, Any]:
        """The request as stored for dry-run and debugging: credentials masked (``gateway.secrets_mask``)."""
        try:
            body: Any = orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            body = self.body.decode("utf-8", "replace")
        record = {"method": self.method, "url": self.url, "headers": self.headers, "body": body}
        return secrets_mask.mask_record(record, self.secret_headers)


# The usual reading of a vendor's HTTP answer (webhook conventions), shared by the senders that have no
# error body of their own to read: 2xx delivered; 408, 425, 429 and 5xx retried no sooner than Retry-After;
# anything else (redirects included: they are not followed) permanent, with the start of the answer.
RETRY_STATUSES = frozenset({408, 425, 429})
MESSAGE_CHARS = 200


async def http_result(response: aiohttp.ClientResponse, now: datetime, secret_headers: tuple[str, ...] = ()) -> Result:
    """One answer's result, with code ``http_<status>`` and, for a failure, at most 200 characters of the answer."""
    status = response.status
    if 200 <= status < 300:
        return Result.delivered(f"http_{status}")
    message = await short_message(response, secret_headers)
    if status in RETRY_STATUSES or status >= 500:
        return Result.retry(f"http_{status}", message, retry_after_seconds(response.headers.get("Retry-After"), now))
    return Result.permanent(f"http_{status}", message)


async def short_message(response: aiohttp.ClientResponse, secret_headers: tuple[str, ...] = ()) -> str:
    """``HTTP <status>: <the answer's start>``, cut short and with credentials masked: the answer may echo
    what was sent (an echo endpoint, a proxy's error page), and the message is stored, listed and logged."""
    head = f"HTTP {response.status}"
    try:
        chunk = await response.content.read(MESSAGE_CHARS * 4)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return head
    info = response.request_info
    sent = secrets_mask.secret_values(info.headers, str(info.real_url), secret_headers)
    text = secrets_mask.mask_text(" ".join(chunk.decode("utf-8", "replace").split()), sent)[:MESSAGE_CHARS]
    return f"{head}: {text}" if text else head


def base_url(value: str) -> str:
    """A destination's configured base URL: http(s) with a host, without a trailing slash (a field validator's body)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header: a number of seconds, or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


class PendingItem(JsonItem):
    """An outbox item handed to a sender: the item, and its JSON as the outbox stores it (``raw``).

    The storage hands over the stored JSON and the item is read from it on
    first use, so a sender that sends items as they are (the http_request
    tag's: its request body is the item, or a JSON array of items) takes
    ``raw`` and never parses and re-encodes them: for a GA4 page view's event
    that is about 50k instructions per delivered item. Built from an item
    (the debugger's explanations, the tests), ``raw`` is its JSON, encoded on
    first use.
    """

    __slots__ = ("id", "idempotency_key", "tag", "attempts", "created_at")

    def __init__(self, id: int, idempotency_key: str, item: dict[str, Any] | None, tag: str, attempts: int,
                 created_at: datetime, *, raw: bytes | None = None) -> None:
        if item is None and raw is None:
            raise ValueError("a pending item needs the item or its stored JSON")
        self.id = id
        self.idempotency_key = idempotency_key
        self.tag = tag
        self.attempts = attempts  # sends tried before this one
        self.created_at = created_at
        self._item = item
        self._raw = raw

    def __repr__(self) -> str:
        return (f"PendingItem(id={self.id!r}, idempotency_key={self.idempotency_key!r}, tag={self.tag!r}, "
                f"attempts={self.attempts!r})")


DryRunRecorder = Callable[[str, str, OutgoingRequest, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request a vendor accepted but processes later, under an id it gave (the Data Manager API's
    ``requestId``): kept by the storage so that its outcome can be asked for off the request path."""

    destination: str
    batch_key: str
    request_id: str
    item_keys: tuple[str, ...]  # idempotency keys of the items it carried
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """What the vendor says, later, about a ``SentRequest``: no personal data, counts and reasons only."""

    state: str  # processing | success | partial_success | failed | unknown
    records: int | None = None  # events the request carried, as the vendor counted them
    errors: dict[str, int] = field(default_factory=dict)  # vendor reason -> records that failed with it
    warnings: dict[str, int] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state not in ("processing", "unknown")


RequestRecorder = Callable[[SentRequest], Awaitable[None]]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class SenderContext:
    """What the gateway gives every sender."""

    record_dry_run: DryRunRecorder
    now: Callable[[], datetime] = _utcnow
    request_timeout: float = 30.0
    extras: dict[str, Any] = field(default_factory=dict)
    # The debugger's tap (gateway.debug.senders): a live sender calls it with each
    # request just before sending it, so a trace can show what went out. None when off.
    observe: Callable[[OutgoingRequest], None] | None = None
    # Keeps a request the vendor processes asynchronously (gateway.vendor_requests follows it up). None: not kept.
    record_request: RequestRecorder | None = None


class Sender(abc.ABC):
    """One per destination; built once at start-up from its config and tags."""

    destination: ClassVar[str]
    max_batch_size: int = 1
    flush_interval: float = 0.0  # seconds an incomplete batch may wait to fill

    def __init__(self, config: Any, tags: list[TagConfig], ctx: SenderContext) -> None:
        self.config = config
        self.tags = tags
        self.ctx = ctx

    async def start(self) -> None:
        """Open sessions; called once inside the running event loop."""

    async def close(self) -> None:
        """Close sessions; called once at shutdown."""

    def paused(self, batch_key: str) -> bool:
        """True while sending for this key is stopped (e.g. revoked credentials); items stay pending."""
        return False

    def batch_size(self, batch_key: str) -> int:
        """Items per ``send`` for this key: ``max_batch_size`` unless the key's tag sets its own."""
        return self.max_batch_size

    async def request_status(self, request_id: str) -> RequestStatus | None:
        """The vendor's word on a request it accepted earlier; None when it cannot say now (or never does)."""
        return None

    @abc.abstractmethod
    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        """Send one batch; one result per item, in the same order."""
