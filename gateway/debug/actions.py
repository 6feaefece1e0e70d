"""The debugger's actions: resend a recorded event to dry-run destinations, replay dead letters.

Resending works from what the trace kept, which is masked: the debugger never
holds personal data, so it cannot send it again either. Every masked value is
dropped from the recorded event before it goes back through consent,
triggers and tags, and the deliveries go to the destinations' senders in
``dry_run`` mode, whose requests are recorded in the storage's dry-run table
(``gateway deliveries list``) and in a new trace marked as a resend. Nothing
reaches a vendor and nothing enters the outbox.

Replaying dead letters is the storage's own ``replay_dead_letters``, the same
as ``gateway dead-letters replay --id N``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import msgspec

from gateway.config import Container
from gateway.debug.explain import explain_events, utcnow
from gateway.debug.masking import MASK
from gateway.debug.trace import Trace, TraceBuffer, new_trace_id
from gateway.event import Event
from gateway.storage.base import Storage

_MASKED_HASH_END = "…"


def _masked(value: Any) -> bool:
    return isinstance(value, str) and (MASK in value or value.endswith(_MASKED_HASH_END))


def _drop_masked(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            if _masked(inner):
                continue
            kept = _drop_masked(inner)
            if isinstance(kept, (dict, list)) and not kept and inner:
                continue  # everything in it was masked
            out[key] = kept
        return out
    if isinstance(value, list):
        return [_drop_masked(v) for v in value if not _masked(v)]
    return value


def event_from_masked(data: dict[str, Any]) -> Event | None:
    """A recorded event, every masked value dropped; None when what is left is not an event."""
    try:
        return Event.from_data(_drop_masked(data))
    except msgspec.ValidationError:
        return None


async def resend(
    container: Container,
    buffer: TraceBuffer,
    storage: Storage,
    original: Trace,
    now: Callable[[], datetime] = utcnow,
) -> Trace:
    """The recorded events again, through the current container, to dry-run destinations."""
    events = [e for e in (event_from_masked(x["event"]) for x in original.events) if e is not None]
    trace = Trace(new_trace_id(), original.method, original.path,
                  note=f"resend of {original.id} to dry-run destinations; masked values were left out")
    trace.request = original.request

    async def record(destination: str, batch_key: str, request: Any, item_count: int) -> None:
        await storage.record_dry_run(destination, batch_key, request.for_record(), item_count, now())

    await explain_events(container, trace, events, original.client, also_record=record, now=now)
    buffer.publish(trace)
    return trace
