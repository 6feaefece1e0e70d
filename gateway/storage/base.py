"""The storage interface: outbox, dead letters, dry-run records, request keys, the order ledger.

Two backends keep to it: SQLite (default; one file, WAL, group commit) and
PostgreSQL (several gateway instances share one database). Every write that
a 2xx depends on is committed durably before the method returns.

Outbox items move pending -> delivered (kept for ``delivery.retention`` so
that a re-enqueued idempotency key stays a no-op) or pending -> dead letter.
A claimed item carries a lease: a dispatcher that dies mid-send leaves it to
be claimed again once the lease runs out.

The order ledger (``gateway.ledger``) lives here too. ``record_orders`` is
the one way to change it: inside its write transaction it loads the ledger
rows of the request's orders, calls a pure ``step`` with them (the ledger's
decisions and the pipeline: CPU only), and writes what the step returns
(deliveries, ledger rows, the request key) before it commits. Reading,
deciding and writing are one transaction, so two refunds of one order that
arrive together are decided one after the other, the second from the
first's result. SQLite gets that from its single writer (and ``BEGIN
IMMEDIATE`` across processes); PostgreSQL does it with ``SELECT ... FOR
UPDATE`` on the order rows, plus a transaction-level advisory lock on each
order id, so that two first sightings of one order cannot both insert it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

from gateway.delivery import Delivery
from gateway.ledger import AppliedChange, Held, LedgerState, LedgerWrite, Order
from gateway.sender import PendingItem, RequestStatus, SentRequest

LedgerStep = Callable[[LedgerState], LedgerWrite]


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


@dataclass(frozen=True, slots=True)
class OrderDelivery:
    """An outbox item or dead letter made for an order, with where it stands."""

    destination: str
    tag: str
    idempotency_key: str
    status: str  # pending | delivered | dead
    attempts: int
    code: str | None
    message: str | None
    created_at: datetime
    settled_at: datetime | None  # delivered or dead-lettered at
    next_attempt_at: datetime | None  # pending items only


@dataclass(frozen=True, slots=True)
class OrderHistory:
    """Everything the gateway holds about one order (``gateway orders show``)."""

    order: Order | None
    changes: list[AppliedChange]
    held: list[Held]
    deliveries: list[OrderDelivery]


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one ``sweep_held`` did."""

    released: LedgerWrite  # held changes applied to orders that exist now
    expired: dict[str, int]  # held changes dead-lettered, by code (order_not_found, refund_still_pending)
    pruned: int  # orders dropped after orders.retention


@dataclass(frozen=True, slots=True)
class TrackedRequest:
    """A request a vendor accepted and processes later, and what it said about it last (``vendor_requests``)."""

    id: int
    destination: str
    batch_key: str
    request_id: str
    item_keys: tuple[str, ...]
    sent_at: datetime
    state: str  # processing (not asked yet, or still processing) | success | partial_success | failed | unknown
    records: int | None
    errors: dict[str, int]  # vendor reason -> records
    warnings: dict[str, int]
    checks: int
    checked_at: datetime | None
    next_check_at: datetime | None  # None once the outcome is final or it is no longer asked for


class Storage(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema and start background threads/pools."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish writes in flight, then release every resource."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when a trivial read succeeds."""

    async def write_problem(self) -> str | None:
        """Why the outbox could not take a write now (for /readyz), or None when it could.

        A backend that can tell more than "it answers" overrides this: a
        database that answers reads may still refuse every write (locked by
        another process, read-only).
        """
        return None if await self.ping() else "storage does not answer"

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
    async def track_request(self, request: SentRequest, next_check_at: datetime) -> None:
        """Keep a request the vendor processes later, to ask for its status at ``next_check_at``."""

    @abc.abstractmethod
    async def due_requests(self, now: datetime, limit: int) -> list[TrackedRequest]:
        """Kept requests whose status is due to be asked for, oldest due first."""

    @abc.abstractmethod
    async def update_request(self, id_: int, status: RequestStatus, checked_at: datetime,
                             next_check_at: datetime | None) -> None:
        """Record what the vendor said; ``next_check_at`` None stops asking."""

    @abc.abstractmethod
    async def list_requests(self, limit: int = 100) -> list[TrackedRequest]:
        """The most recent kept requests, newest first."""

    @abc.abstractmethod
    async def dead_letter_delivered(self, keys: Sequence[str], code: str, message: str, now: datetime) -> int:
        """Move delivered items (by idempotency key) that the vendor failed afterwards to the dead letters."""

    @abc.abstractmethod
    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        ...

    @abc.abstractmethod
    async def replay_dead_letters(self, ids: Sequence[int] | None, now: datetime) -> int:
        """Move dead letters (all when ``ids`` is None) back to the outbox as new pending items; returns how many.

        A change the ledger dead-lettered (destination ``order_ledger``) goes
        back to the held changes instead, for the same reason and as long as
        it was held the first time, so that it is applied once its order is
        known (a change already decided, such as a refund in another
        currency, stays decided).
        """

    @abc.abstractmethod
    async def prune(self, now: datetime, retention: timedelta) -> int:
        """Delete delivered items, request keys and settled vendor requests older than ``retention``.

        Returns how many rows went. A vendor request counts from when it
        settled, and one still asked about is never deleted.
        """

    # -- the order ledger ------------------------------------------------------------

    @abc.abstractmethod
    async def record_orders(
        self, order_ids: Sequence[str], step: LedgerStep, now: datetime, request_key: str | None = None
    ) -> LedgerWrite | None:
        """Load the ledger for ``order_ids``, call ``step``, store what it returns, in one transaction.

        ``step`` gets the orders that exist among ``order_ids`` and the changes
        held for them, and returns a ``LedgerWrite``: its deliveries are stored
        as ``enqueue`` stores them, its orders are upserted, its changes
        appended, its holds added and its released holds deleted, and each
        (order id, idempotency key) is remembered for ``order_history``.
        Returns None (and writes nothing, without calling ``step``) when
        ``request_key`` was stored before. ``step`` runs while the write
        transaction is open: it must be quick and do no I/O. It is called at
        most once per call, never retried: it may change the events it was
        built over.
        """

    @abc.abstractmethod
    async def sweep_held(self, now: datetime, step: LedgerStep, retention: timedelta | None = None) -> Sweep:
        """Housekeeping of the ledger, in one transaction.

        Held changes that can go now are given to ``step`` with their orders
        (their results are stored as ``record_orders`` stores them): those
        whose order exists now, and those that waited for the order system's
        total when it came or their wait is over. Held changes past
        ``expires_at`` move to the dead letters (destination ``order_ledger``):
        code ``order_not_found`` when their order is still unknown,
        ``refund_still_pending`` when their money never showed as moved.
        Orders recorded more than ``retention`` ago are deleted with their
        changes. With several instances, an order another transaction is
        deciding is left to the next sweep.
        """

    @abc.abstractmethod
    async def order_history(self, order_id: str) -> OrderHistory:
        """The ledger row, its changes, what is held for it, and every delivery made for it."""

