"""The dispatcher: takes due outbox items, sends them in batches, records what happened.

One pass: ask the storage which (destination, batch_key) groups have due
items; for each group whose sender is not paused and whose batch is full or
has waited ``flush_interval``, claim a batch under a lease, send it, and
settle every item by its result. Up to ``delivery.concurrency`` batches are in
flight at once; groups are served round-robin so that one large backlog does
not starve the others.

A claim is one storage write, so a group is claimed for as many batches as
there are free slots (its fair share of them when several groups wait) in one
call, and the items are split into batches there. Items are never claimed
ahead of a free slot: everything claimed is sent at once, and a lease never
runs while an item merely waits. Results are written the same way: sends that
finish while the storage is busy with the previous results are settled
together in the next write.

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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

from gateway import metrics
from gateway.config import DeliverySection
from gateway.delivery import FINAL_OUTCOMES, Result
from gateway.sender import DryRunRecorder, OutgoingRequest, PendingItem, Sender
from gateway.dispatch_state import Dead, DestinationMetrics, SettleQueue, Slots
from gateway.storage.base import GroupInfo, Retry, Storage, StorageUnavailable

log = logging.getLogger("gateway.dispatcher")

STATS_INTERVAL = 5.0  # seconds between outbox depth/age gauge updates
PRUNE_INTERVAL = 3600.0  # seconds between deletions of expired delivered items
# Seconds stop() gives the results of finished sends to reach the storage, even when its own timeout
# is spent: a result that is not written makes its item go out again once the lease runs out.
SETTLE_GRACE = 5.0
# Batches whose results may wait for the storage, per slot, before the dispatcher stops claiming
# more: a storage that writes slowly slows the sending down instead of piling up results.
SETTLE_BACKLOG_PER_SLOT = 4


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def dry_run_recorder(storage: Storage, now: Callable[[], datetime] = utcnow) -> DryRunRecorder:
    """The ``SenderContext.record_dry_run`` that stores requests with their credentials masked."""

    async def record(destination: str, batch_key: str, request: OutgoingRequest, item_count: int) -> None:
        await storage.record_dry_run(destination, batch_key, request.for_record(), item_count, now())

    return record


@dataclass(slots=True)
class _Due:
    """A group a pass serves: its sender, and the items of it still to claim in this pass."""

    sender: Sender
    group: GroupInfo
    left: int
    by_age: bool  # old enough to go out in an incomplete batch
    size: int  # items per batch: sender.batch_size(group.batch_key)

    def batches(self) -> int:
        """Batches still to send: full ones only, unless the group waited ``flush_interval``."""
        size = self.size
        return -(-self.left // size) if self.by_age else self.left // size


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
        self._slots = Slots(delivery.concurrency)
        self._request_timeout = delivery.request_timeout.total_seconds()
        self._settles = SettleQueue(self._write_settle)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[int], list[int]] = {}  # send task -> claimed item ids
        self._heartbeat = time.monotonic()
        self._next_stats = 0.0
        self._next_prune = 0.0
        self._seen_destinations: set[str] = set()
        self._unknown_destinations: set[str] = set()
        self._metrics: dict[str, DestinationMetrics] = {}

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        for sender in self.senders.values():
            await sender.start()
        self._stopping = False
        self._heartbeat = time.monotonic()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self, timeout: float = 10) -> None:
        """Stop claiming, let batches in flight finish for up to ``timeout`` seconds, then close the senders.

        The results of the batches that finished are written before it returns
        (given ``SETTLE_GRACE`` seconds even when ``timeout`` is spent); the
        leases of the batches cut short are released, so they go out again
        without waiting for the lease.
        """
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
            if task.cancel():  # False once the task ended: its results are queued for settling
                unsent.extend(ids)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._flush_settles(max(SETTLE_GRACE, deadline - time.monotonic()))
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

    async def _flush_settles(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._settles.flush()
        except TimeoutError:
            log.error("results not written; their items go out again once the leases expire",
                      extra={"items": self._settles.items})
            self._settles.cancel()
            await self._settles.flush()

    @property
    def alive(self) -> bool:
        """The loop runs and has made progress recently (for /readyz)."""
        if self._task is None or self._task.done():
            return False
        stale_after = self._request_timeout + 10 * self.delivery.poll_interval.total_seconds() + 5
        return time.monotonic() - self._heartbeat < stale_after

    def wake(self) -> None:
        """Look for work now instead of at the next poll (call after an enqueue)."""
        self._wake.set()

    async def run_once(self) -> int:
        """One pass, waiting for its sends and their settling: returns how many items were settled."""
        tasks: list[asyncio.Task[int]] = []
        await self._pass(tasks)
        counts = await asyncio.gather(*tasks)
        await self._settles.flush()
        return sum(counts)

    # -- the loop --------------------------------------------------------------

    async def _loop(self) -> None:
        poll = self.delivery.poll_interval.total_seconds()
        while not self._stopping:
            self._heartbeat = time.monotonic()
            metrics.DISPATCHER_HEARTBEAT.set(time.time())  # for the DispatcherStopped alert
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
        queue = self._due(groups, now)
        started = 0
        while queue and not self._stopping:
            next_round: list[_Due] = []
            for position, due in enumerate(queue):
                count = await self._claim_and_send(due, len(queue) - position, collect)
                if count is None:
                    return started
                started += count
                if count and due.batches() > 0:
                    next_round.append(due)
            queue = next_round
        return started

    def _due(self, groups: list[GroupInfo], now: datetime) -> list[_Due]:
        """The groups to serve, oldest first: a sender, not paused, and a full batch or one old enough."""
        queue: list[_Due] = []
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
            due = _Due(sender, group, group.count, by_age, max(1, sender.batch_size(group.batch_key)))
            if due.batches() > 0:
                queue.append(due)
        return queue

    async def _claim_and_send(self, due: _Due, among: int, collect: list[asyncio.Task[int]] | None) -> int | None:
        """Take this group's share of the free slots, claim that many batches in one call, start sending them.

        Returns how many batches were started (0 when the group had nothing
        left to claim or its sender was paused meanwhile), or None when the
        pass should end (stopping, storage unavailable). Slots not used for a
        batch are given back here.
        """
        if self._settles.backlog >= SETTLE_BACKLOG_PER_SLOT * self.delivery.concurrency:
            await self._settles.flush()
        taken = await self._slots.take(due.batches(), among)
        self._heartbeat = time.monotonic()
        if self._stopping:
            self._slots.give(taken)
            return None
        sender, group = due.sender, due.group
        if sender.paused(group.batch_key):  # a send of this pass ran into bad credentials while we waited
            self._slots.give(taken)
            return 0
        limit = min(taken * due.size, due.left)
        try:
            items = await self.storage.claim(group.destination, group.batch_key, limit, self._now(), self.delivery.lease)
        except StorageUnavailable as exc:
            self._slots.give(taken)
            metrics.STORAGE_ERRORS.labels("claim").inc()
            log.error("storage unavailable", extra={"operation": "claim", "error": str(exc)})
            return None
        except BaseException:
            self._slots.give(taken)
            raise
        batches = self._start_sends(sender, group.batch_key, items, collect, due.size)
        self._slots.give(taken - batches)
        # Fewer items than asked for: someone else claimed the rest, nothing more is due in this group.
        due.left = due.left - len(items) if len(items) == limit else 0
        return batches

    def _start_sends(
        self, sender: Sender, batch_key: str, items: list[PendingItem], collect: list[asyncio.Task[int]] | None,
        size: int,
    ) -> int:
        """One send task per ``size`` items (the group's batch size), each holding one slot until it ends."""
        batches = 0
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            task = asyncio.create_task(self._send(sender, batch_key, batch))
            self._inflight[task] = [item.id for item in batch]
            task.add_done_callback(self._inflight_done)
            if collect is not None:
                collect.append(task)
            batches += 1
        return batches

    def _inflight_done(self, task: asyncio.Task[int]) -> None:
        self._inflight.pop(task, None)
        self._slots.give()

    async def _send(self, sender: Sender, batch_key: str, items: list[PendingItem]) -> int:
        destination = sender.destination
        meters = self._destination_metrics(destination)
        started = time.monotonic()
        results: Sequence[Result]
        try:
            async with asyncio.timeout(self._request_timeout):
                results = await sender.send(batch_key, items)
            if len(results) != len(items):
                raise ValueError(f"sender returned {len(results)} results for {len(items)} items")
        except TimeoutError:
            log.warning("send timed out", extra={"destination": destination, "batch_key": batch_key, "items": len(items)})
            results = [Result.retry("timeout", "no answer within delivery.request_timeout")] * len(items)
        except Exception as exc:  # noqa: BLE001 - a failing sender must not take the loop down
            log.exception("sender failed", extra={"destination": destination, "batch_key": batch_key, "items": len(items)})
            results = [Result.retry("exception", type(exc).__name__)] * len(items)
        meters.send_latency.observe(time.monotonic() - started)
        meters.batch_size.observe(len(items))
        if sender.paused(batch_key) and all(r.outcome == "retry" for r in results):
            # The sender stopped for bad credentials during this send: the items
            # wait for new credentials without losing an attempt to it.
            try:
                await self.storage.release([item.id for item in items])
            except StorageUnavailable:
                metrics.STORAGE_ERRORS.labels("release").inc()  # the leases expire on their own
            return len(items)
        self._settle(meters, batch_key, items, results)
        return len(items)

    def _settle(self, meters: DestinationMetrics, batch_key: str, items: list[PendingItem], results: Sequence[Result]) -> None:
        """Sort a batch's results into delivered, retries and dead letters, count them, and queue them for writing."""
        now = self._now()
        delivered: list[int] = []
        retries: list[Retry] = []
        dead: list[Dead] = []
        outcomes: dict[tuple[str, str | None], int] = {}
        for item, result in zip(items, results):
            code = result.code
            key = (result.outcome, code)
            outcomes[key] = outcomes.get(key, 0) + 1
            if result.outcome in FINAL_OUTCOMES:
                delivered.append(item.id)
                meters.lag.observe(max(0.0, (now - item.created_at).total_seconds()))
                if result.outcome != "delivered":  # a final answer that is not a delivery: say which and why
                    log.info("item settled without delivery", extra={
                        "destination": meters.destination, "batch_key": batch_key, "item_id": item.id,
                        "outcome": result.outcome, "code": code})
            elif result.outcome == "retry" and item.attempts + 1 < self.delivery.max_attempts:
                delay = self.backoff_delay(item.attempts)
                if result.retry_after is not None:
                    delay = max(delay, result.retry_after)
                retries.append(Retry(item.id, now + timedelta(seconds=delay), code, result.message))
            else:
                dead.append((item.id, code, result.message))
                meters.dead_letters(code).inc()
                log.warning(
                    "item dead-lettered",
                    extra={"destination": meters.destination, "batch_key": batch_key, "item_id": item.id,
                           "attempts": item.attempts + 1, "code": code, "outcome": result.outcome},
                )
        for (outcome, code), count in outcomes.items():
            meters.deliveries(outcome, code).inc(count)
        if retries:
            meters.retries.inc(len(retries))
        self._settles.put(delivered, retries, dead)

    async def _write_settle(self, delivered: list[int], retries: list[Retry], dead: list[Dead]) -> None:
        """One storage write for the results of every batch queued meanwhile; tried three times."""
        now = self._now()
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

    def _destination_metrics(self, destination: str) -> DestinationMetrics:
        meters = self._metrics.get(destination)
        if meters is None:
            meters = self._metrics[destination] = DestinationMetrics(destination)
        return meters

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
                    log.info("pruned delivered items, request keys and settled vendor requests", extra={"rows": deleted})

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
