"""The dispatcher's bookkeeping: its slots, its queue of results to write, its metric children.

Kept apart from ``gateway.dispatcher`` so that the loop reads as the loop:
each class here holds one piece of state the loop shares between its passes
and its send tasks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from gateway import metrics
from gateway.storage.base import Retry

log = logging.getLogger("gateway.dispatcher")

_CODE_LABEL_MAX = 64
# Distinct vendor codes kept as metric labels per destination; the rest count as "(other)". Codes come
# from the vendors' answers, so without a bound a misbehaving endpoint could grow the label set forever.
_CODE_LABELS_PER_DESTINATION = 100
_code_labels: dict[str, set[str]] = {}

Dead = tuple[int, str | None, str | None]  # item id, code, message


class Slots:
    """The batches that may be in flight: a semaphore from which a pass takes several slots at once.

    Each send task gives back exactly one slot when it ends; a pass gives back
    the slots it took but did not use. Only the counter changes between
    awaits, so a slot cannot be lost to a cancellation.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._freed = asyncio.Event()

    async def take(self, most: int, among: int = 1) -> int:
        """Wait for a free slot, then take up to ``most``, and no more than a ``1/among`` share of the free ones."""
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()
        taken = min(most, -(-self.free // among))
        self.free -= taken
        return taken

    def give(self, count: int = 1) -> None:
        if count > 0:
            self.free += count
            self._freed.set()


class DestinationMetrics:
    """One destination's metric children, looked up once: ``labels()`` costs more than the update itself."""

    __slots__ = ("destination", "send_latency", "batch_size", "lag", "retries", "_deliveries", "_dead_letters")

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.send_latency = metrics.SEND_LATENCY.labels(destination)
        self.batch_size = metrics.BATCH_SIZE.labels(destination)
        self.lag = metrics.DELIVERY_LAG.labels(destination)
        self.retries = metrics.RETRIES.labels(destination)
        # Unbuffered: these counts are read right after a delivery (tests, the debugger's operators).
        self._deliveries = metrics.LabelCache(metrics.DELIVERIES, buffered=False)
        self._dead_letters = metrics.LabelCache(metrics.DEAD_LETTERS, buffered=False)

    def deliveries(self, outcome: str, code: str | None) -> Any:
        return self._deliveries.get(self.destination, outcome, code_label(code, self.destination))

    def dead_letters(self, code: str | None) -> Any:
        return self._dead_letters.get(self.destination, code_label(code, self.destination))


class SettleQueue:
    """Results of finished sends, written to the storage by one task, as many at a time as are waiting.

    A send's results are queued without waiting for the storage; the writer
    takes everything queued, writes it with one call, and repeats until the
    queue is empty. Sends that finish while one write is under way therefore
    share the next one, instead of costing one storage transaction each.
    """

    def __init__(self, write: Callable[[list[int], list[Retry], list[Dead]], Awaitable[None]]) -> None:
        self._write = write
        self._delivered: list[int] = []
        self._retries: list[Retry] = []
        self._dead: list[Dead] = []
        self._queued = 0  # batches waiting for the next write
        self._writing = 0  # batches in the write under way
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Batches whose results are not written yet."""
        return self._queued + self._writing

    @property
    def items(self) -> int:
        return len(self._delivered) + len(self._retries) + len(self._dead)

    def put(self, delivered: list[int], retries: list[Retry], dead: list[Dead]) -> None:
        self._delivered += delivered
        self._retries += retries
        self._dead += dead
        self._queued += 1
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="dispatcher-settle")

    async def flush(self) -> None:
        """Return once everything queued, including what is queued meanwhile, was written (or given up)."""
        while self._task is not None:
            await asyncio.wait({self._task})

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _drain(self) -> None:
        try:
            while self._queued:
                delivered, retries, dead = self._delivered, self._retries, self._dead
                self._delivered, self._retries, self._dead = [], [], []
                self._writing, self._queued = self._queued, 0
                try:
                    await self._write(delivered, retries, dead)
                except Exception:  # noqa: BLE001 - the leases run out and the items go out again
                    log.exception("settle failed", extra={"items": len(delivered) + len(retries) + len(dead)})
                finally:
                    self._writing = 0
        finally:
            self._task = None


def code_label(code: str | None, destination: str = "") -> str:
    """A vendor code as a metric label: cut to 64 characters, at most 100 distinct ones per destination."""
    if code is None:
        return ""
    label = code[:_CODE_LABEL_MAX]
    seen = _code_labels.setdefault(destination, set())
    if label in seen:
        return label
    if len(seen) >= _CODE_LABELS_PER_DESTINATION:
        return "(other)"
    seen.add(label)
    return label
