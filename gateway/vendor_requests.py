"""Following up requests a vendor accepted but processes later (the Data Manager API's ``requestId``).

A Data Manager ``events:ingest`` answer says only that the request was
valid; whether each event was recorded is known later, from
``requestStatus:retrieve`` (PROCESSING, SUCCESS, PARTIAL_SUCCESS, FAILED,
with error counts by reason per destination).
Ref: https://developers.google.com/data-manager/api/devguides/concepts/diagnostics

So a sender hands each accepted request to ``record`` (``SenderContext.
record_request``), which keeps it in the storage (``vendor_requests``), and
a task off the request path asks the sender for the status of the requests
that are due (``check_once``): first ``first_check`` after the send, then
with doubling waits up to ``max_wait``, and no more after ``give_up_after``
(Google keeps a status for about 50 days; a status that never settles is
recorded as ``unknown``). What it learns is visible:

- ``gateway_vendor_requests_total{destination, state}`` counts outcomes and
  ``gateway_vendor_request_errors_total{destination, reason}`` the failed
  records by the vendor's reason;
- ``gateway deliveries requests`` and the debugger (``/debug/api/requests``)
  list the requests with their state and error counts;
- a request whose every record failed (FAILED) names its events: they move
  from delivered to the dead letters, with the vendor's reason as the code.
  A partial success cannot say which events failed, so it stays a count.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from prometheus_client import Counter

from gateway import metrics
from gateway.sender import RequestStatus, Sender, SentRequest
from gateway.storage.base import Storage, StorageUnavailable, TrackedRequest

log = logging.getLogger("gateway.vendor_requests")

REQUEST_OUTCOMES = Counter(
    "gateway_vendor_requests", "Vendor requests followed up, by their final state.", ["destination", "state"]
)
REQUEST_ERRORS = Counter(
    "gateway_vendor_request_errors", "Records a vendor failed after accepting the request, by its reason.",
    ["destination", "reason"],
)

FIRST_CHECK = timedelta(minutes=15)
MAX_WAIT = timedelta(hours=6)
GIVE_UP_AFTER = timedelta(days=7)
BATCH = 50  # requests asked about per check


class RequestFollowUp:
    def __init__(self, storage: Storage, senders: Mapping[str, Sender], now: Callable[[], datetime], *,
                 first_check: timedelta = FIRST_CHECK, max_wait: timedelta = MAX_WAIT,
                 give_up_after: timedelta = GIVE_UP_AFTER) -> None:
        self.storage = storage
        self.senders = senders
        self.now = now
        self.first_check = first_check
        self.max_wait = max_wait
        self.give_up_after = give_up_after

    async def record(self, request: SentRequest) -> None:
        """``SenderContext.record_request``: keep the request, to be asked about ``first_check`` from now."""
        await self.storage.track_request(request, request.sent_at + self.first_check)

    async def check_once(self) -> int:
        """Ask about every request that is due; returns how many were asked about."""
        now = self.now()
        try:
            due = await self.storage.due_requests(now, BATCH)
        except StorageUnavailable:
            metrics.STORAGE_ERRORS.labels("due_requests").inc()
            return 0
        for tracked in due:
            sender = self.senders.get(tracked.destination)
            status = None if sender is None else await sender.request_status(tracked.request_id)
            await self._settle(tracked, status, now)
        return len(due)

    async def _settle(self, tracked: TrackedRequest, status: RequestStatus | None, now: datetime) -> None:
        if status is None or not status.final:  # not known yet: ask again later, or give up
            if now - tracked.sent_at >= self.give_up_after:
                status = RequestStatus("unknown", tracked.records, tracked.errors, tracked.warnings)
                REQUEST_OUTCOMES.labels(tracked.destination, "unknown").inc()
                await self.storage.update_request(tracked.id, status, now, None)
                return
            wait = min(self.max_wait, self.first_check * 2 ** min(tracked.checks + 1, 20))
            kept = status or RequestStatus(tracked.state, tracked.records, tracked.errors, tracked.warnings)
            await self.storage.update_request(tracked.id, kept, now, now + wait)
            return
        REQUEST_OUTCOMES.labels(tracked.destination, status.state).inc()
        for reason, count in status.errors.items():
            REQUEST_ERRORS.labels(tracked.destination, reason[:64]).inc(count)
        if status.state != "success":
            log.warning("vendor request finished with errors", extra={
                "destination": tracked.destination, "request_id": tracked.request_id, "state": status.state,
                "errors": status.errors, "records": status.records})
        if status.state == "failed" and tracked.item_keys:
            code = next(iter(status.errors)) if len(status.errors) == 1 else "request_failed"
            message = "failed after acceptance: " + ", ".join(f"{r} x{n}" for r, n in status.errors.items())
            moved = await self.storage.dead_letter_delivered(tracked.item_keys, code, message[:300], now)
            if moved:
                metrics.DEAD_LETTERS.labels(tracked.destination, code[:64]).inc(moved)
        await self.storage.update_request(tracked.id, status, now, None)


def request_report(tracked: TrackedRequest) -> dict[str, Any]:
    """A kept request as ``gateway deliveries requests`` and the debugger show it: ids, state, counts, no content."""
    return {"id": tracked.id, "destination": tracked.destination, "batch_key": tracked.batch_key,
            "request_id": tracked.request_id, "items": len(tracked.item_keys), "sent_at": tracked.sent_at,
            "state": tracked.state, "records": tracked.records, "errors": tracked.errors, "warnings": tracked.warnings,
            "checks": tracked.checks, "checked_at": tracked.checked_at, "next_check_at": tracked.next_check_at}
