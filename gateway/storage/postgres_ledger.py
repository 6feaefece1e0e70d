"""The order ledger's SQL for the PostgreSQL backend: coroutines over one asyncpg connection.

``PostgresStorage`` calls them inside one transaction, so a request's ledger
read, the ledger's decision and the writes that follow commit together (or
not at all). Several gateway instances write to one database, so what SQLite
gets from its single writer is done with locks here:

- every transaction that reads an order to decide something first takes a
  transaction-level advisory lock per order id (``lock_orders``), in one
  sorted order so that two requests naming the same orders cannot deadlock.
  This is what stops two first sightings of one order from both inserting it
  (there is no row yet for ``FOR UPDATE`` to lock), and what makes two
  refunds of one order wait for each other;
- the order rows are then read ``FOR UPDATE``, so anything else that touches
  them (a pruning sweep) waits too;
- the housekeeping sweep only *tries* the advisory locks
  (``try_lock_orders``) and leaves an order whose lock is taken to its next
  run: a sweep never waits for the request path.

In READ COMMITTED every statement sees what committed before it started, so
the read that follows the lock sees the previous holder's writes. The row
lock alone would not do: a ``SELECT ... FOR UPDATE`` that waited gets the
order row's newest version but reads ``order_changes`` with its own, older
snapshot, and would miss the change the previous holder just recorded (a
redelivered refund would then count twice).

Amounts are ``numeric`` (129.95 - 30 is 99.95, never a float), times
``timestamptz`` (microseconds, exactly what the step compared), held events
``json`` like the outbox's items.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

import asyncpg
import orjson

from gateway.delivery import Delivery
from gateway.ledger import (
    LEDGER_DESTINATION,
    ORDER_NOT_FOUND,
    REFUND_STILL_PENDING,
    AppliedChange,
    Held,
    LedgerDeadLetter,
    LedgerState,
    LedgerWrite,
    Order,
    Upload,
)
from gateway.storage.base import OrderDelivery, OrderHistory

InsertDeliveries = Callable[[asyncpg.Connection, Sequence[Delivery], datetime], Awaitable[None]]

# The first key of every order lock (pg_advisory_xact_lock(int4, int4)): "ordr". The two-key form
# lives apart from the one-key (bigint) form that the migration lock uses.
ORDER_LOCK_SPACE = 0x6F726472
SWEEP_LIMIT = 1000  # orders handled per sweep step and transaction

MIGRATION: tuple[str, ...] = (
    """CREATE TABLE orders (
        order_id text PRIMARY KEY,
        conversion_time timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        value numeric,
        currency text,
        gclid text,
        gbraid text,
        wbraid text,
        consent json NOT NULL,
        uploaded_with_order_id boolean NOT NULL,
        refunded numeric NOT NULL,
        retracted_at timestamptz,
        last_adjusted_at timestamptz,
        source text NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    "CREATE INDEX orders_recorded ON orders (recorded_at)",
    """CREATE TABLE order_changes (
        order_id text NOT NULL,
        change_id text NOT NULL,
        kind text NOT NULL,
        occurred_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL,
        action text NOT NULL,
        reason text NOT NULL,
        amount numeric,
        currency text,
        retained numeric,
        PRIMARY KEY (order_id, change_id)
    )""",
    """CREATE TABLE held_changes (
        id bigserial PRIMARY KEY,
        order_id text NOT NULL,
        change_id text NOT NULL,
        event json NOT NULL,
        held_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        UNIQUE (order_id, change_id)
    )""",
    "CREATE INDEX held_changes_expiry ON held_changes (expires_at)",
    """CREATE TABLE order_deliveries (
        order_id text NOT NULL,
        idempotency_key text NOT NULL,
        PRIMARY KEY (order_id, idempotency_key)
    )""",
    "CREATE INDEX dead_letters_key ON dead_letters (idempotency_key)",
    # Expired held changes are filed under their order id (gateway orders show).
    "CREATE INDEX dead_letters_ledger ON dead_letters (batch_key) WHERE destination = 'order_ledger'",
)

# The order system's total (the base of refunds), the conversion uploads the ledger follows (NULL for
# orders recorded before), the identifiers kept under consent, which value each adjustment used, and
# why a change waits.
ORDER_SYSTEM_MIGRATION: tuple[str, ...] = (
    "ALTER TABLE orders ADD COLUMN total numeric",
    "ALTER TABLE orders ADD COLUMN uploads json",
    "ALTER TABLE orders ADD COLUMN identifiers json",
    "ALTER TABLE order_changes ADD COLUMN basis text",
    "ALTER TABLE order_changes ADD COLUMN adjusted_value numeric",
    "ALTER TABLE held_changes ADD COLUMN reason text NOT NULL DEFAULT 'order'",
)

_ORDER_COLUMNS = (
    "order_id, conversion_time, recorded_at, value, currency, gclid, gbraid, wbraid, consent,"
    " uploaded_with_order_id, refunded, retracted_at, last_adjusted_at, source, total, uploads, identifiers"
)
_CHANGE_COLUMNS = ("order_id, change_id, kind, occurred_at, recorded_at, action, reason, amount, currency, retained,"
                   " basis, adjusted_value")
_HELD_COLUMNS = "id, order_id, change_id, event, held_at, expires_at, reason"
_UPSERT_ORDER = f"""INSERT INTO orders ({_ORDER_COLUMNS}, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::json, $10, $11, $12, $13, $14, $15, $16::json, $17::json, $18)
    ON CONFLICT (order_id) DO UPDATE SET value = excluded.value, currency = excluded.currency,
    gclid = excluded.gclid, gbraid = excluded.gbraid, wbraid = excluded.wbraid, consent = excluded.consent,
    refunded = excluded.refunded, retracted_at = excluded.retracted_at,
    last_adjusted_at = excluded.last_adjusted_at, total = excluded.total, identifiers = excluded.identifiers,
    updated_at = excluded.updated_at"""
_INSERT_HELD = """INSERT INTO held_changes (order_id, change_id, event, held_at, expires_at, reason)
    VALUES ($1, $2, $3::json, $4, $5, $6) ON CONFLICT (order_id, change_id) DO NOTHING"""
_INSERT_DEAD = """INSERT INTO dead_letters (destination, batch_key, idempotency_key, tag, item, attempts, code, message,
    created_at, failed_at) VALUES ($1, $2, $3, $4, $5::json, 0, $6, $7, $8, $9)"""
# pg_advisory_xact_lock is volatile, so PostgreSQL calls it after the sort: the locks are taken in
# ascending key order by every transaction, which is what keeps two of them from deadlocking.
_LOCK = """SELECT pg_advisory_xact_lock($1, h)
    FROM (SELECT DISTINCT hashtext(o) AS h FROM unnest($2::text[]) AS o) AS keys ORDER BY h"""
_TRY_LOCK = "SELECT o FROM unnest($2::text[]) AS o WHERE pg_try_advisory_xact_lock($1, hashtext(o))"


# -- locks -----------------------------------------------------------------------------------------


async def lock_orders(conn: asyncpg.Connection, order_ids: Sequence[str]) -> None:
    """Wait for each order's advisory lock; held until the transaction ends."""
    if order_ids:
        await conn.execute(_LOCK, ORDER_LOCK_SPACE, sorted(set(order_ids)))


async def try_lock_orders(conn: asyncpg.Connection, order_ids: Sequence[str]) -> list[str]:
    """The orders whose advisory lock was free (and is now ours); never waits."""
    if not order_ids:
        return []
    return [r[0] for r in await conn.fetch(_TRY_LOCK, ORDER_LOCK_SPACE, list(order_ids))]


# -- reading -------------------------------------------------------------------------------------


def _order(row: asyncpg.Record, change_ids: frozenset[str], statuses: dict[str, str]) -> Order:
    uploads, identifiers = row["uploads"], row["identifiers"]
    return Order(
        order_id=row["order_id"],
        conversion_time=row["conversion_time"],
        recorded_at=row["recorded_at"],
        value=row["value"],
        currency=row["currency"],
        gclid=row["gclid"],
        gbraid=row["gbraid"],
        wbraid=row["wbraid"],
        consent=tuple((k, v) for k, v in orjson.loads(row["consent"])),
        uploaded_with_order_id=row["uploaded_with_order_id"],
        refunded=row["refunded"],
        retracted_at=row["retracted_at"],
        last_adjusted_at=row["last_adjusted_at"],
        source=row["source"],
        change_ids=change_ids,
        total=row["total"],
        uploads=None if uploads is None else tuple(
            Upload(action, key, statuses.get(key, "uploaded")) for action, key in orjson.loads(uploads)  # type: ignore[arg-type]
        ),
        identifiers=() if identifiers is None else tuple((k, v) for k, v in orjson.loads(identifiers)),
    )


def _held(row: asyncpg.Record) -> Held:
    return Held(row["order_id"], row["change_id"], orjson.loads(row["event"]), row["held_at"], row["expires_at"],
                id=row["id"], reason=row["reason"])


async def upload_statuses(conn: asyncpg.Connection, keys: Sequence[str]) -> dict[str, str]:
    """What the dispatcher made of each outbox item: pending, uploaded, or failed (dead-lettered).

    A key in neither table was delivered and pruned after ``delivery.retention``:
    only delivered items leave the outbox other than as dead letters.
    """
    if not keys:
        return {}
    wanted = sorted(set(keys))
    statuses: dict[str, str] = {}
    for r in await conn.fetch("SELECT idempotency_key, status FROM outbox WHERE idempotency_key = ANY($1::text[])", wanted):
        statuses[r[0]] = "uploaded" if r[1] == "delivered" else "pending"
    for r in await conn.fetch(
        "SELECT DISTINCT idempotency_key FROM dead_letters WHERE idempotency_key = ANY($1::text[])", wanted
    ):
        statuses.setdefault(r[0], "failed")
    return statuses


def _upload_keys(rows: Sequence[asyncpg.Record]) -> list[str]:
    return [key for row in rows if row["uploads"] is not None for _, key in orjson.loads(row["uploads"])]


async def load_state(conn: asyncpg.Connection, order_ids: Sequence[str]) -> LedgerState:
    """The orders among ``order_ids`` (row-locked) and their held changes; call under ``lock_orders``."""
    ids = sorted(set(order_ids))
    state = LedgerState()
    if not ids:
        return state
    rows = await conn.fetch(
        f"""SELECT {_ORDER_COLUMNS},
                ARRAY(SELECT c.change_id FROM order_changes c WHERE c.order_id = o.order_id) AS change_ids
            FROM orders o WHERE o.order_id = ANY($1::text[]) FOR UPDATE""",
        ids,
    )
    statuses = await upload_statuses(conn, _upload_keys(rows))
    for row in rows:
        state.orders[row["order_id"]] = _order(row, frozenset(row["change_ids"]), statuses)
    state.held.extend(
        _held(row) for row in await conn.fetch(
            f"SELECT {_HELD_COLUMNS} FROM held_changes WHERE order_id = ANY($1::text[]) ORDER BY id", ids
        )
    )
    return state


# -- writing -------------------------------------------------------------------------------------


def _json(pairs: Any) -> str:
    return orjson.dumps([list(p) for p in pairs]).decode()


async def write_ledger(conn: asyncpg.Connection, write: LedgerWrite, now: datetime, insert: InsertDeliveries) -> None:
    """Store ``write``: deliveries (through ``insert``, the outbox's own), rows, changes, holds, links, dead letters.

    Released holds go before new ones: a change held again for another
    reason (its order arrived, its total did not) is deleted, then inserted.
    """
    if write.deliveries:
        await insert(conn, write.deliveries, now)
    if write.orders:
        await conn.executemany(_UPSERT_ORDER, [
            (o.order_id, o.conversion_time, o.recorded_at, o.value, o.currency, o.gclid, o.gbraid, o.wbraid,
             _json(o.consent), o.uploaded_with_order_id, o.refunded, o.retracted_at, o.last_adjusted_at, o.source,
             o.total, None if o.uploads is None else _json((u.action, u.key) for u in o.uploads),
             _json(o.identifiers) if o.identifiers else None, now)
            for o in write.orders.values()
        ])
    if write.changes:
        await conn.executemany(
            f"""INSERT INTO order_changes ({_CHANGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (order_id, change_id) DO NOTHING""",
            [(c.order_id, c.change_id, c.kind, c.occurred_at, c.recorded_at, c.action, c.reason, c.amount,
              c.currency, c.retained, c.basis, c.adjusted_value) for c in write.changes],
        )
    if write.release:
        await conn.execute("DELETE FROM held_changes WHERE id = ANY($1::bigint[])", list(write.release))
    if write.hold:
        await conn.executemany(_INSERT_HELD, [
            (h.order_id, h.change_id, orjson.dumps(h.event).decode(), h.held_at, h.expires_at, h.reason)
            for h in write.hold
        ])
    if write.dead_letters:
        await conn.executemany(_INSERT_DEAD, [_dead_letter_row(d, now) for d in write.dead_letters])
    if write.order_deliveries:
        await conn.execute(
            """INSERT INTO order_deliveries (order_id, idempotency_key)
               SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING""",
            [o for o, _ in write.order_deliveries],
            [k for _, k in write.order_deliveries],
        )


def _dead_letter_row(letter: LedgerDeadLetter, now: datetime) -> tuple[object, ...]:
    held = letter.held
    return (LEDGER_DESTINATION, held.order_id, held_key(held.order_id, held.change_id), LEDGER_DESTINATION,
            orjson.dumps(held.dead_letter_item()).decode(), letter.code, letter.message, held.held_at, now)


async def releasable(conn: asyncpg.Connection, now: datetime) -> LedgerState:
    """Held changes that can go now, with their orders: their order exists (a replayed dead letter, a race lost
    to the sweep), or they waited for the order system's total and it came or their wait is over.

    Only orders whose lock is free are taken; the rest wait for the next sweep.
    """
    candidates = [
        r[0] for r in await conn.fetch(
            """SELECT DISTINCT h.order_id FROM held_changes h JOIN orders o ON o.order_id = h.order_id
               WHERE h.reason = 'order' OR (h.reason = 'total' AND (o.total IS NOT NULL OR h.expires_at <= $1))
               LIMIT $2""",
            now,
            SWEEP_LIMIT,
        )
    ]
    locked = await try_lock_orders(conn, candidates)
    return await load_state(conn, locked) if locked else LedgerState()


async def expire_held(conn: asyncpg.Connection, now: datetime) -> dict[str, int]:
    """Dead-letter held changes past their time: whose order never came, or whose money never moved."""
    candidates = [
        r[0] for r in await conn.fetch(
            """SELECT DISTINCT h.order_id FROM held_changes h
               WHERE h.expires_at <= $1 AND (h.reason = 'pending'
                   OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = h.order_id))
               LIMIT $2""",
            now,
            SWEEP_LIMIT,
        )
    ]
    locked = await try_lock_orders(conn, candidates)
    if not locked:
        return {}
    # Asked again under the locks: an order that arrived meanwhile took its held changes with it.
    rows = await conn.fetch(
        f"""DELETE FROM held_changes h WHERE h.order_id = ANY($1::text[]) AND h.expires_at <= $2
                AND (h.reason = 'pending' OR NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = h.order_id))
            RETURNING {_HELD_COLUMNS}""",
        locked,
        now,
    )
    letters = []
    expired: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: (r["expires_at"], r["id"])):
        held = _held(row)
        hours = f"{round((held.expires_at - held.held_at).total_seconds() / 3600, 2):g}h"
        if held.reason == "pending":
            code, message = REFUND_STILL_PENDING, f"refund of {held.order_id} still pending after {hours}"
        else:
            code, message = ORDER_NOT_FOUND, f"no order {held.order_id} within {hours}"
        letters.append(_dead_letter_row(LedgerDeadLetter(held, code, message), now))
        expired[code] = expired.get(code, 0) + 1
    if letters:
        await conn.executemany(_INSERT_DEAD, letters)
    return expired


async def prune_orders(conn: asyncpg.Connection, now: datetime, retention: timedelta) -> int:
    """Delete orders recorded before ``now - retention``, with their changes and delivery links."""
    cutoff = now - retention
    candidates = [
        r[0] for r in await conn.fetch(
            "SELECT order_id FROM orders WHERE recorded_at < $1 LIMIT $2", cutoff, SWEEP_LIMIT
        )
    ]
    locked = await try_lock_orders(conn, candidates)
    if not locked:
        return 0
    ids = [r[0] for r in await conn.fetch(
        "DELETE FROM orders WHERE order_id = ANY($1::text[]) AND recorded_at < $2 RETURNING order_id", locked, cutoff
    )]
    if ids:
        await conn.execute("DELETE FROM order_changes WHERE order_id = ANY($1::text[])", ids)
        await conn.execute("DELETE FROM order_deliveries WHERE order_id = ANY($1::text[])", ids)
    return len(ids)


def held_key(order_id: str, change_id: str) -> str:
    return f"{LEDGER_DESTINATION}:{order_id}/{change_id}"


async def rehold(conn: asyncpg.Connection, item: str, now: datetime) -> None:
    """A replayed ledger dead letter: held again, for the same reason and as long as the first time."""
    data = orjson.loads(item)
    await conn.execute(
        _INSERT_HELD,
        data["order_id"], data["change_id"], orjson.dumps(data["event"]).decode(), now,
        now + timedelta(seconds=float(data["hold_seconds"])), data.get("reason", "order"),
    )


# -- the admin view ------------------------------------------------------------------------------


async def history(conn: asyncpg.Connection, order_id: str) -> OrderHistory:
    """Everything held about one order; run in one snapshot (REPEATABLE READ) so the parts agree."""
    changes = [
        AppliedChange(
            order_id=r["order_id"], change_id=r["change_id"], kind=r["kind"], occurred_at=r["occurred_at"],
            recorded_at=r["recorded_at"], action=r["action"], reason=r["reason"], amount=r["amount"],
            currency=r["currency"], retained=r["retained"], basis=r["basis"], adjusted_value=r["adjusted_value"],
        )
        for r in await conn.fetch(
            f"SELECT {_CHANGE_COLUMNS} FROM order_changes WHERE order_id = $1 ORDER BY recorded_at, occurred_at",
            order_id,
        )
    ]
    row = await conn.fetchrow(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = $1", order_id)
    order = None if row is None else _order(row, frozenset(c.change_id for c in changes),
                                            await upload_statuses(conn, _upload_keys([row])))
    held = [
        _held(r) for r in await conn.fetch(
            f"SELECT {_HELD_COLUMNS} FROM held_changes WHERE order_id = $1 ORDER BY id", order_id
        )
    ]
    keys = [r[0] for r in await conn.fetch("SELECT idempotency_key FROM order_deliveries WHERE order_id = $1", order_id)]
    deliveries: list[OrderDelivery] = []
    for r in await conn.fetch(
        """SELECT destination, tag, idempotency_key, status, attempts, last_code, last_message, created_at,
               delivered_at, next_attempt_at FROM outbox WHERE idempotency_key = ANY($1::text[]) ORDER BY id""",
        keys,
    ):
        pending = r["status"] == "pending"
        deliveries.append(OrderDelivery(
            r["destination"], r["tag"], r["idempotency_key"], r["status"], r["attempts"], r["last_code"],
            r["last_message"], r["created_at"], r["delivered_at"], r["next_attempt_at"] if pending else None,
        ))
    for r in await conn.fetch(
        """SELECT destination, tag, idempotency_key, attempts, code, message, created_at, failed_at FROM dead_letters
           WHERE idempotency_key = ANY($1::text[]) OR (destination = $2 AND batch_key = $3) ORDER BY id""",
        keys,
        LEDGER_DESTINATION,
        order_id,
    ):
        deliveries.append(OrderDelivery(
            r["destination"], r["tag"], r["idempotency_key"], "dead", r["attempts"], r["code"], r["message"],
            r["created_at"], r["failed_at"], None,
        ))
    deliveries.sort(key=lambda d: (d.created_at, d.idempotency_key))
    return OrderHistory(order, changes, held, deliveries)
