"""Delivery attempts into traces: a wrapper around each sender, and what went out on the wire.

The dispatcher knows outbox items, not requests. With ``debug.enabled``,
``attach`` wraps every destination's sender in a ``TracingSender``: when a
batch holds items whose idempotency key belongs to a trace in the buffer, it
times the send, collects the outgoing requests, and appends each item's
result to its trace. A batch without traced items costs one dict lookup per
item. The dispatcher itself is unchanged: it still decides retries and dead
letters from the same results (the trace applies the same
``delivery.max_attempts`` rule to say which one an item is heading for).

Outgoing requests reach the wrapper through a context variable set around
the send: dry-run requests through the ``record_dry_run`` callback every
sender already calls, live ones through ``SenderContext.observe``, which a
sender calls with each request just before sending it. Both are masked
(credentials by ``OutgoingRequest.for_record``, personal data by
``gateway.debug.masking``) before they are kept. A sender that does not call
``observe`` still has its items (the elements of the vendor request) in the
trace; only the request around them is missing.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import TYPE_CHECKING, Any

from gateway.debug.masking import mask_outgoing
from gateway.delivery import Result
from gateway.sender import DryRunRecorder, OutgoingRequest, PendingItem, RequestStatus, Sender

if TYPE_CHECKING:
    from gateway.debug.recorder import Recorder

MAX_REQUEST_BYTES = 256 * 1024  # a larger outgoing body is summarised, not kept

_CAPTURE: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("gateway_debug_capture", default=None)


def masked_request(request: OutgoingRequest) -> dict[str, Any]:
    """An outgoing request as a trace keeps it: credentials and personal data masked, size bounded."""
    if len(request.body) > MAX_REQUEST_BYTES:
        record = OutgoingRequest(request.method, request.url, request.headers, b"").for_record()
        record["body"] = f"({len(request.body)} bytes: larger than the debugger keeps)"
        return mask_outgoing(record)
    return mask_outgoing(request.for_record())


def capture_request(request: OutgoingRequest) -> None:
    """``SenderContext.observe``: note a request in the send being traced, if any."""
    captured = _CAPTURE.get()
    if captured is not None:
        captured.append(masked_request(request))


def tee_dry_run(record: DryRunRecorder) -> DryRunRecorder:
    """The dry-run recorder, also noting each recorded request in the send being traced."""

    async def tee(destination: str, batch_key: str, request: OutgoingRequest, item_count: int) -> None:
        capture_request(request)
        await record(destination, batch_key, request, item_count)

    return tee


class TracingSender(Sender):
    """A destination's sender, with each traced item's result appended to its trace."""

    destination = "(wrapped)"  # replaced per wrapped sender by ``wrap``

    def __init__(self, inner: Sender, recorder: Recorder) -> None:
        super().__init__(inner.config, inner.tags, inner.ctx)
        self.inner = inner
        self.recorder = recorder
        self.max_batch_size = inner.max_batch_size
        self.flush_interval = inner.flush_interval

    def __getattr__(self, name: str) -> Any:  # anything else a caller reads is the wrapped sender's
        return getattr(self.inner, name)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def paused(self, batch_key: str) -> bool:
        return self.inner.paused(batch_key)

    def batch_size(self, batch_key: str) -> int:
        return self.inner.batch_size(batch_key)

    async def request_status(self, request_id: str) -> RequestStatus | None:
        return await self.inner.request_status(request_id)

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        traced = self.recorder.traces_for(items)
        if not traced:
            return await self.inner.send(batch_key, items)
        captured: list[dict[str, Any]] = []
        token = _CAPTURE.set(captured)
        started = time.monotonic()
        results: list[Result] | None = None
        failure: tuple[str, str] | None = None
        try:
            results = await self.inner.send(batch_key, items)
            return results
        except asyncio.CancelledError:  # the dispatcher's delivery.request_timeout, or shutdown
            failure = ("timeout", "no answer within delivery.request_timeout")
            raise
        except Exception as exc:  # the dispatcher retries these; the trace says so
            failure = ("exception", type(exc).__name__)
            raise
        finally:
            _CAPTURE.reset(token)
            self.recorder.delivered(traced, items, results, failure, captured,
                                    (time.monotonic() - started) * 1000, self.ctx.now())


def wrap(inner: Sender, recorder: Recorder) -> Sender:
    """``inner`` in a ``TracingSender`` that keeps its destination name."""
    cls = type(f"Tracing{type(inner).__name__}", (TracingSender,), {"destination": inner.destination})
    return cls(inner, recorder)
