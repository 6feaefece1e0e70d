"""The storage interface: outbox, dead letters, dry-run records, request keys.

Two backends keep to it: SQLite (default; one file, WAL, group commit) and
PostgreSQL (several gateway instances share one database). Every write that
a 2xx depends on is committed durably before the method returns.

Outbox items move pending -> delivered (kept for ``delivery.retention`` so
that a re-enqueued idempotency key stays a no-op) or pending -> dead letter.
A claimed item carries a lease: a dispatcher that dies mid-send leaves it to
be claimed again once the lease runs out.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from gateway.delivery import Delivery
from gateway.sender import PendingItem


class StorageUnavailable(Exception):
    """The backend cannot commit now (disk full, read-only file, database down): answer 503."""


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """Due, unleased items of one (destination, batch_key)."""

    destination: str
    batch_key: str
    count: int
    oldest_created_at: datetime


@dataclass(frozen=True, slots=True)
class Retry:
    id: int
    next_attempt_at: datetime
    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    destination: str
    batch_key: str
    idempotency_key: str
    tag: str
    item: dict[str, Any]
    attempts: int
    code: str | None
    message: str | None
    created_at: datetime
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class DryRunRecord:
    id: int
    destination: str
    batch_key: str
    item_count: int
    request: dict[str, Any]  # OutgoingRequest.for_record()
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class DestinationStats:
    destination: str
    pending: int
    oldest_created_at: datetime | None


class Storage(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema and start background threads/pools."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish writes in flight, then release every resource."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when a trivial read succeeds (for /readyz)."""

    @abc.abstractmethod
    async def enqueue(self, deliveries: Sequence[Delivery], now: datetime, request_key: str | None = None) -> bool:
        """Durably store deliveries; a delivery whose idempotency key is already stored is skipped.

        Returns False (and writes nothing) when ``request_key`` was stored
        before: the request is a redelivery. Raises StorageUnavailable when it
        cannot commit.
        """

    @abc.abstractmethod
    async def ready_groups(self, now: datetime) -> list[GroupInfo]:
        """Groups with items due (not_before and next_attempt_at passed) and not leased."""

    @abc.abstractmethod
    async def claim(
        self, destination: str, batch_key: str, limit: int, now: datetime, lease: timedelta
    ) -> list[PendingItem]:
        """Lease up to ``limit`` due items of one group, oldest first."""

    @abc.abstractmethod
    async def settle(
        self,
        now: datetime,
        delivered: Sequence[int] = (),
        retries: Sequence[Retry] = (),
        dead: Sequence[tuple[int, str | None, str | None]] = (),
    ) -> None:
        """Record a batch's results: delivered ids, retries with their next time, dead letters (id, code, message)."""

    @abc.abstractmethod
    async def release(self, ids: Sequence[int]) -> None:
        """Drop the lease of claimed items that were not sent (the destination is paused)."""

    @abc.abstractmethod
    async def stats(self, now: datetime) -> list[DestinationStats]:
        """Pending items per destination (for metrics and backpressure)."""

    @abc.abstractmethod
    async def pending_count(self) -> int:
        """All pending items (cheap; checked for backpressure)."""

    @abc.abstractmethod
    async def record_dry_run(self, destination: str, batch_key: str, request: dict[str, Any], item_count: int, now: datetime) -> None:
        ...

    @abc.abstractmethod
    async def list_dry_runs(self, last: int) -> list[DryRunRecord]:
        """The most recent records, newest first."""

    @abc.abstractmethod
    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        ...

    @abc.abstractmethod
    async def replay_dead_letters(self, ids: Sequence[int] | None, now: datetime) -> int:
        """Move dead letters (all when ``ids`` is None) back to the outbox as new pending items; returns how many."""

    @abc.abstractmethod
    async def prune(self, now: datetime, retention: timedelta) -> int:
        """Delete delivered items and request keys older than ``retention``."""
