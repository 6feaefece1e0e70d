"""One log line per refused request, rate-limited per client and status.

A webhook refused for its signature (a mistyped Shopify secret: 401) used to
leave nothing in the log, only a counter. Now every refusal is a line with
the client, the status, the error and the field it names (never the
field's value), and the trace id the caller got back, so the line leads to
the request in ``/debug``. A client sending garbage could otherwise write
the log full: each (client, status) may log ``BURST`` lines at once and one
more per ``REFILL_SECONDS`` after that; the refusals it skipped are counted
in the next line it writes (``suppressed``). Counts are in
``gateway_requests_total`` either way.

Refusals from before a client is known (a request head too slow or too
large, an unknown path) are logged under the client ``(none)``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from gateway import metrics

log = logging.getLogger("gateway.requests")

BURST = 10
REFILL_SECONDS = 1.0
NO_CLIENT = "(none)"


def level_of(status: int) -> int:
    if status >= 500:
        return logging.WARNING if status == 503 else logging.ERROR
    if status in (401, 403):  # a signature or an origin refused: someone has the wrong secret or is trying
        return logging.WARNING
    return logging.INFO


class RejectionLog:
    """Token buckets per (client, status), and the line each refusal may write."""

    def __init__(
        self, burst: int = BURST, refill_seconds: float = REFILL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.clock = clock
        self._buckets: dict[tuple[str, int], list[float]] = {}  # -> [tokens, last refill, suppressed]

    def note(
        self, client: str, status: int, error: str, field: str | None = None, level: int | None = None, **extra: Any
    ) -> bool:
        """Log the refusal unless its (client, status) is over its rate; True when a line was written.

        ``level`` overrides the status's own (``level_of``): a 503 because the
        storage cannot commit is an error of ours, one for a full outbox is not.
        """
        now = self.clock()
        bucket = self._buckets.get((client, status))
        if bucket is None:
            bucket = self._buckets[(client, status)] = [float(self.burst), now, 0.0]
        else:
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) / self.refill_seconds)
            bucket[1] = now
        if bucket[0] < 1.0:
            bucket[2] += 1
            return False
        bucket[0] -= 1.0
        suppressed, bucket[2] = int(bucket[2]), 0.0
        line: dict[str, Any] = {"client": client, "status": status, "error": error}
        if field is not None:
            line["field"] = field
        if suppressed:
            line["suppressed"] = suppressed
        line.update(extra)
        log.log(level_of(status) if level is None else level, "request refused", extra=line)
        return True


REJECTIONS = RejectionLog()


def note_refused(status: int, error: str) -> None:
    """A request refused before any client saw it (its head too slow or too large): counted and logged."""
    metrics.REQUESTS.labels(NO_CLIENT, str(status)).inc()
    REJECTIONS.note(NO_CLIENT, status, error)
