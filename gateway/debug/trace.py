"""Traces: one request's whole path, kept in a bounded ring buffer in memory.

Every collection request gets a trace id (``X-Gateway-Trace``), set in a
context variable that the log formatter reads, so every log line written
while handling the request carries it. That part always runs: it costs one
random id per request.

With ``debug.enabled`` a ``Trace`` is recorded as well: the request as
received, the events the client built, consent, triggers, tags, deliveries,
and later each delivery attempt. Only masked data enters a trace
(``gateway.debug.masking``): the raw request is masked when the trace is
published, events and items when they are noted.

The buffer keeps the last ``debug.keep_last`` traces. Deliveries are linked to
their trace by the outbox item's idempotency key (``by_key``), so the
dispatcher, which sees only outbox items, can append results to the trace
long after the request was answered. A key is indexed when the pipeline
builds the delivery and dropped when its trace leaves the buffer (or when its
request failed, in which case nothing was stored).

Threading: the ledger path runs the pipeline inside the storage's writer
thread; the trace it writes to is private to its request until the request
ends and the trace is published, so no lock is needed beyond the GIL's
atomic dict and list operations.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from gateway.debug.masking import mask_text

TRACE_HEADER = "X-Gateway-Trace"

TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("gateway_trace_id", default=None)
"""The id of the request being handled; read by ``gateway.logs``."""

CURRENT: contextvars.ContextVar["Trace | None"] = contextvars.ContextVar("gateway_trace", default=None)
"""The trace being recorded for this request (None when debug is disabled)."""

MAX_ATTEMPTS_KEPT = 5  # per delivery: the first attempt and the latest four
MAX_RUNS_KEPT = 200  # pipeline runs per trace (a request has at most limits.max_events_per_request events)


_TRACE_OFFSET = int.from_bytes(os.urandom(8), "big")  # per process: workers and restarts do not collide
_TRACE_STEP = 0x9E3779B97F4A7C15  # odd, so counter -> id is a bijection mod 2**64: unique, and spread out
_trace_counter = itertools.count(1)


def new_trace_id() -> str:
    """16 hex characters, all different within a process, cheap enough for every request.

    A counter scrambled by a multiplication rather than random bytes: no system
    call on the hot path, and any prefix of an id still tells requests apart.
    """
    return f"{(next(_trace_counter) * _TRACE_STEP + _TRACE_OFFSET) & 0xFFFFFFFFFFFFFFFF:016x}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class Delivery:
    """One outbox item of a trace and what happened to it."""

    key: str
    destination: str
    tag: str
    batch_key: str
    item: Any  # masked
    not_before: str | None = None
    status: str = "pending"  # pending | delivered | retry | dead_letter | dry_run (explain, resend)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    attempt_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            # The key holds the event's own id, which may still be personal: shown masked, looked up raw.
            "idempotency_key": mask_text(self.key), "destination": self.destination, "tag": self.tag,
            "batch_key": self.batch_key, "item": self.item, "not_before": self.not_before,
            "status": self.status, "attempts": self.attempts, "attempt_count": self.attempt_count,
        }


@dataclass(slots=True)
class Trace:
    """What the debugger knows about one request. Every value in it is already masked."""

    id: str
    method: str
    path: str
    started_at: datetime = field(default_factory=utcnow)
    clock: float = field(default_factory=time.monotonic)
    client: str | None = None
    request: dict[str, Any] | None = None
    status: int | None = None
    error: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)  # as the client built them
    runs: list[dict[str, Any]] = field(default_factory=list)  # each event as the pipeline saw it
    ledger: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # e.g. "resend of <id>"
    seq: int = 0  # the buffer's change counter when this trace last changed
    # Consent sources per client event, keyed by id() of the Event object (see recorder.parsed).
    sources: dict[int, tuple[int, dict[str, str]]] = field(default_factory=dict, repr=False)

    def mark(self, name: str) -> None:
        """Milliseconds from the start of the request to this step."""
        self.timings[name] = round((time.monotonic() - self.clock) * 1000, 3)

    # -- what the list and the filters use ----------------------------------------------------

    @property
    def outcome(self) -> str:
        """One word for the list: rejected, error, dead_letter, retry, pending, dry_run, delivered or none."""
        if self.status is not None and self.status >= 500:
            return "error"
        if self.status is not None and self.status >= 400:
            return "rejected"
        states = {d.status for d in self.deliveries.values()}
        for state in ("dead_letter", "retry", "pending", "dry_run", "delivered"):
            if state in states:
                return state
        return "none"

    def event_names(self) -> list[str]:
        return list(dict.fromkeys(e.get("event_name", "") for e in self.events))

    def tags_fired(self) -> list[str]:
        return list(dict.fromkeys(name for run in self.runs for name in run.get("fired", [])))

    def search_keys(self) -> set[str]:
        """Values the search box matches exactly: ids of orders, transactions and events."""
        keys = {self.id}
        for event in self.events:
            for name in ("transaction_id", "event_id"):
                value = event.get(name)
                if isinstance(value, str):
                    keys.add(value)
        for note in self.ledger:
            if isinstance(note.get("order_id"), str):
                keys.add(note["order_id"])
        keys.update(self.deliveries)
        return keys

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "seq": self.seq, "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "client": self.client, "method": self.method, "path": self.path, "status": self.status,
            "events": self.event_names(), "tags": self.tags_fired(), "outcome": self.outcome,
            "deliveries": len(self.deliveries), "note": self.note,
            "duration_ms": self.timings.get("response"),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "request": self.request, "error": self.error, "client_events": self.events, "runs": self.runs,
            "ledger": self.ledger, "delivery_items": [d.to_json() for d in self.deliveries.values()],
            "timings": self.timings,
        }


class TraceBuffer:
    """The last ``keep`` traces, newest last, with the idempotency-key index the dispatcher uses."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self.by_key: dict[str, Trace] = {}
        self._seq = itertools.count(1)
        self.last_seq = 0

    def __len__(self) -> int:
        return len(self._traces)

    def touch(self, trace: Trace) -> None:
        """Note that ``trace`` changed, so that the page's next poll picks it up."""
        trace.seq = self.last_seq = next(self._seq)

    def index(self, trace: Trace, keys: Iterable[str]) -> None:
        for key in keys:
            self.by_key.setdefault(key, trace)  # the first request that built an item owns it

    def unindex(self, trace: Trace) -> None:
        for key in trace.deliveries:
            if self.by_key.get(key) is trace:
                del self.by_key[key]

    def publish(self, trace: Trace) -> None:
        """Add a finished request's trace, dropping the oldest beyond ``keep``."""
        self._traces[trace.id] = trace
        self.touch(trace)
        while len(self._traces) > self.keep:
            _, old = self._traces.popitem(last=False)
            self.unindex(old)

    def get(self, trace_id: str) -> Trace | None:
        return self._traces.get(trace_id)

    def changed_since(self, seq: int) -> list[Trace]:
        """Traces changed after ``seq``, newest change first."""
        changed = [t for t in self._traces.values() if t.seq > seq]
        changed.sort(key=lambda t: t.seq, reverse=True)
        return changed

    def newest(self) -> list[Trace]:
        return list(reversed(self._traces.values()))

