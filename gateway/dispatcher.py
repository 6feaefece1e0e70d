"""The dispatcher: takes due outbox items, sends them in batches, records what happened.

One pass: ask the storage which (destination, batch_key) groups have due
items; for each group whose sender is not paused and whose batch is full or
has waited ``flush_interval``, claim a batch under a lease, send it, and
settle every item by its result. Up to ``delivery.concurrency`` batches are in
flight at once; groups are served round-robin so that one large backlog does
not starve the others.

A retry waits ``backoff_initial * 2**attempts`` (capped at ``backoff_max``)
with equal jitter, so a vendor outage does not come back as one synchronised
wave, and never less than the vendor's ``Retry-After``. An item whose send
was tried ``max_attempts`` times, or that the vendor refused for good, moves
to the dead-letter table, from where it can be replayed.

A sender that raises, times out or answers with the wrong number of results
makes every item of its batch a retry: the loop itself never dies of a
vendor. A dispatcher that dies mid-send leaves leased items behind; the lease
runs out and another pass (or another process) claims them again, so delivery
is at least once and the vendors' own deduplication keys do the rest.

Log lines carry ids, counts and codes, never item contents.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

from gateway import metrics
from gateway.config import DeliverySection
from gateway.delivery import Result
from gateway.sender import DryRunRecorder, OutgoingRequest, PendingItem, Sender
from gateway.storage.base import GroupInfo, Retry, Storage, StorageUnavailable

log = logging.getLogger("gateway.dispatcher")

STATS_INTERVAL = 5.0  # seconds between outbox depth/age gauge updates
PRUNE_INTERVAL = 3600.0  # seconds between deletions of expired delivered items
_CODE_LABEL_MAX = 64
# Distinct vendor codes kept as metric labels per destination; the rest count as "(other)". Codes come
# from the vendors' answers, so without a bound a misbehaving endpoint could grow the label set forever.
_CODE_LABELS_PER_DESTINATION = 100
_code_labels: dict[str, set[str]] = {}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def dry_run_recorder(storage: Storage, now: Callable[[], datetime] = utcnow) -> DryRunRecorder:
    """The ``SenderContext.record_dry_run`` that stores requests with their credentials masked."""

    async def record(destination: str, batch_key: str, request: OutgoingRequest, item_count: int) -> None:
        await storage.record_dry_run(destination, batch_key, request.for_record(), item_count, now())

    return record


class Dispatcher:
    def __init__(
        self,
        storage: Storage,
        senders: dict[str, Sender],
        delivery: DeliverySection,
        now: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.storage = storage
        self.senders = senders
        self.delivery = delivery
        self._now = now
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(delivery.concurrency)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[int], list[int]] = {}  # send task -> claimed item ids
        self._heartbeat = time.monotonic()
        self._next_stats = 0.0
        self._next_prune = 0.0
        self._seen_destinations: set[str] = set()
        self._unknown_destinations: set[str] = set()

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        for sender in self.senders.values():
            await sender.start()
        self._stopping = False
        self._heartbeat = time.monotonic()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self, timeout: float = 10) -> None:
        """Stop claiming, let batches in flight finish for up to ``timeout`` seconds, then close the senders."""
        self._stopping = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=max(0.0, deadline - time.monotonic()))
        unsent: list[int] = []
        for task, ids in list(self._inflight.items()):
            task.cancel()
            unsent.extend(ids)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if unsent:
            log.warning("dispatcher stopped with batches in flight", extra={"items": len(unsent)})
            try:
                await self.storage.release(unsent)
            except StorageUnavailable:
                log.error("could not release leases; they expire on their own", extra={"items": len(unsent)})
        for sender in self.senders.values():
            try:
                await sender.close()
            except Exception:  # noqa: BLE001 - shutting down regardless
                log.exception("sender close failed", extra={"destination": sender.destination})

    @property
    def alive(self) -> bool:
        """The loop runs and has made progress recently (for /readyz)."""
        if self._task is None or self._task.done():
            return False
        stale_after = self.delivery.request_timeout.total_seconds() + 10 * self.delivery.poll_interval.total_seconds() + 5
        return time.monotonic() - self._heartbeat < stale_after

    def wake(self) -> None:
        """Look for work now instead of at the next poll (call after an enqueue)."""
        self._wake.set()

    async def run_once(self) -> int:
        """One pass, waiting for its sends: returns how many items were settled."""
        tasks: list[asyncio.Task[int]] = []
        await self._pass(tasks)
        counts = await asyncio.gather(*tasks)
        return sum(counts)

    # -- the loop --------------------------------------------------------------

    async def _loop(self) -> None:
        poll = self.delivery.poll_interval.total_seconds()
        while not self._stopping:
            self._heartbeat = time.monotonic()
            claimed = False
            try:
                claimed = await self._pass() > 0
                await self._housekeeping()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("dispatcher pass failed")
            if self._stopping:
                break
            if claimed:
                await asyncio.sleep(0)
                continue
            try:
                async with asyncio.timeout(poll):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _pass(self, collect: list[asyncio.Task[int]] | None = None) -> int:
        """Claim every batch that is due now and start sending it; returns how many batches.

        The send tasks are kept only when ``collect`` asks for them (``run_once``):
        over a large backlog a pass starts one task per batch, and holding them
        all until the pass ends grew the heap with the backlog.
        """
        now = self._now()
        try:
            groups = await self.storage.ready_groups(now)
        except StorageUnavailable as exc:
            metrics.STORAGE_ERRORS.labels("ready_groups").inc()
            log.error("storage unavailable", extra={"operation": "ready_groups", "error": str(exc)})
            return 0
        queue: list[tuple[Sender, GroupInfo, int, bool]] = []  # sender, group, items left, flushing by age
        for group in sorted(groups, key=lambda g: g.oldest_created_at):
            sender = self.senders.get(group.destination)
            if sender is None:
                if group.destination not in self._unknown_destinations:
                    self._unknown_destinations.add(group.destination)
                    log.warning("no sender for destination; items stay pending", extra={"destination": group.destination})
                continue
            if sender.paused(group.batch_key):
                continue
            by_age = (now - group.oldest_created_at).total_seconds() >= sender.flush_interval
            if group.count >= sender.max_batch_size or by_age:
                queue.append((sender, group, group.count, by_age))

        started = 0
        while queue and not self._stopping:
            next_round = []
            for sender, group, left, by_age in queue:
                await self._slots.acquire()
                self._heartbeat = time.monotonic()
                if self._stopping:
                    self._slots.release()
                    return started
                try:
                    items = await self.storage.claim(
                        group.destination, group.batch_key, sender.max_batch_size, self._now(), self.delivery.lease
                    )
                except StorageUnavailable as exc:
                    self._slots.release()
                    metrics.STORAGE_ERRORS.labels("claim").inc()
                    log.error("storage unavailable", extra={"operation": "claim", "error": str(exc)})
                    return started
                except BaseException:
                    self._slots.release()
                    raise
                if not items:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._send(sender, group.batch_key, items))
                self._inflight[task] = [item.id for item in items]
                task.add_done_callback(self._inflight_done)
                started += 1
                if collect is not None:
                    collect.append(task)
                left -= len(items)
                if left >= sender.max_batch_size or (by_age and left > 0):
                    next_round.append((sender, group, left, by_age))
            queue = next_round
        return started

    def _inflight_done(self, task: asyncio.Task[int]) -> None:
        self._inflight.pop(task, None)
        self._slots.release()

    async def _send(self, sender: Sender, batch_key: str, items: list[PendingItem]) -> int:
        destination = sender.destination
        started = time.monotonic()
        results: Sequence[Result]
        try:
            results = await asyncio.wait_for(
                sender.send(batch_key, items), self.delivery.request_timeout.total_seconds()
            )
            if len(results) != len(items):
                raise ValueError(f"sender returned {len(results)} results for {len(items)} items")
        except TimeoutError:
            log.warning("send timed out", extra={"destination": destination, "batch_key": batch_key, "items": len(items)})
            results = [Result.retry("timeout", "no answer within delivery.request_timeout")] * len(items)
        except Exception as exc:  # noqa: BLE001 - a failing sender must not take the loop down
            log.exception("sender failed", extra={"destination": destination, "batch_key": batch_key, "items": len(items)})
            results = [Result.retry("exception", type(exc).__name__)] * len(items)
        metrics.SEND_LATENCY.labels(destination).observe(time.monotonic() - started)
        metrics.BATCH_SIZE.labels(destination).observe(len(items))
        if sender.paused(batch_key) and all(r.outcome == "retry" for r in results):
            # The sender stopped for bad credentials during this send: the items
            # wait for new credentials without losing an attempt to it.
            try:
                await self.storage.release([item.id for item in items])
            except StorageUnavailable:
                metrics.STORAGE_ERRORS.labels("release").inc()  # the leases expire on their own
            return len(items)
        await self._settle(destination, batch_key, items, results)
        return len(items)

    async def _settle(self, destination: str, batch_key: str, items: list[PendingItem], results: Sequence[Result]) -> None:
        now = self._now()
        delivered: list[int] = []
        retries: list[Retry] = []
        dead: list[tuple[int, str | None, str | None]] = []
        for item, result in zip(items, results):
            code = result.code
            metrics.DELIVERIES.labels(destination, result.outcome, _label(code, destination)).inc()
            if result.outcome == "delivered":
                delivered.append(item.id)
                metrics.DELIVERY_LAG.labels(destination).observe(max(0.0, (now - item.created_at).total_seconds()))
            elif result.outcome == "retry" and item.attempts + 1 < self.delivery.max_attempts:
                delay = self.backoff_delay(item.attempts)
                if result.retry_after is not None:
                    delay = max(delay, result.retry_after)
                retries.append(Retry(item.id, now + timedelta(seconds=delay), code, result.message))
                metrics.RETRIES.labels(destination).inc()
            else:
                dead.append((item.id, code, result.message))
                metrics.DEAD_LETTERS.labels(destination, _label(code, destination)).inc()
                log.warning(
                    "item dead-lettered",
                    extra={"destination": destination, "batch_key": batch_key, "item_id": item.id,
                           "attempts": item.attempts + 1, "code": code, "outcome": result.outcome},
                )
        for attempt in range(3):
            try:
                await self.storage.settle(now, delivered, retries, dead)
                return
            except StorageUnavailable as exc:
                metrics.STORAGE_ERRORS.labels("settle").inc()
                log.error("storage unavailable", extra={"operation": "settle", "error": str(exc), "attempt": attempt + 1})
                if attempt < 2:
                    await asyncio.sleep(0.5 * (attempt + 1))
        # The leases run out and the items are sent again: at least once, never lost.

    def backoff_delay(self, attempts: int) -> float:
        """Seconds to wait after the send number ``attempts + 1`` failed: exponential, capped, equal jitter."""
        initial = self.delivery.backoff_initial.total_seconds()
        cap = self.delivery.backoff_max.total_seconds()
        base = min(cap, initial * 2 ** min(attempts, 62))
        return base / 2 + self._rng.uniform(0, base / 2)

    async def _housekeeping(self) -> None:
        clock = time.monotonic()
        if clock >= self._next_stats:
            self._next_stats = clock + STATS_INTERVAL
            try:
                await self.update_outbox_metrics()
            except StorageUnavailable:
                metrics.STORAGE_ERRORS.labels("stats").inc()
        if clock >= self._next_prune:
            self._next_prune = clock + PRUNE_INTERVAL
            try:
                deleted = await self.storage.prune(self._now(), self.delivery.retention)
            except StorageUnavailable:
                metrics.STORAGE_ERRORS.labels("prune").inc()
                self._next_prune = clock + 60
            else:
                if deleted:
                    log.info("pruned delivered items and request keys", extra={"rows": deleted})

    async def update_outbox_metrics(self) -> None:
        """Set the outbox depth and oldest-age gauges from the storage."""
        now = self._now()
        stats = await self.storage.stats(now)
        seen = set()
        for row in stats:
            seen.add(row.destination)
            metrics.OUTBOX_DEPTH.labels(row.destination).set(row.pending)
            age = 0.0 if row.oldest_created_at is None else max(0.0, (now - row.oldest_created_at).total_seconds())
            metrics.OUTBOX_OLDEST.labels(row.destination).set(age)
        for destination in (self._seen_destinations | set(self.senders)) - seen:
            metrics.OUTBOX_DEPTH.labels(destination).set(0)
            metrics.OUTBOX_OLDEST.labels(destination).set(0)
        self._seen_destinations |= seen


def _label(code: str | None, destination: str = "") -> str:
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
