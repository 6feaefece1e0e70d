"""The order ledger's SQL for the SQLite backend: functions of the writer's (or reader's) connection.

``SQLiteStorage`` runs them inside its group-commit writer, so a request's
ledger read, the ledger's decision and the writes that follow share one
transaction, and the single writer decides concurrent refunds one after the
other. Amounts are stored as decimal text (never floats: 129.95 - 30 must
be 99.95), the times an adjustment is matched on (conversion and adjustment
times) as integer microseconds so they come back exactly, housekeeping
times as unix seconds like the rest of the file.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable, Sequence

import orjson

from gateway.ledger import (
    LEDGER_DESTINATION,
    ORDER_NOT_FOUND,
    AppliedChange,
    Held,
    LedgerState,
    LedgerWrite,
    Order,
)
from gateway.storage.base import OrderDelivery, OrderHistory

MIGRATION: tuple[str, ...] = (
    """CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        conversion_time INTEGER NOT NULL,
        recorded_at REAL NOT NULL,
        value TEXT,
        currency TEXT,
        gclid TEXT,
        gbraid TEXT,
        wbraid TEXT,
        consent TEXT NOT NULL,
        uploaded_with_order_id INTEGER NOT NULL,
        refunded TEXT NOT NULL,
        retracted_at INTEGER,
        last_adjusted_at INTEGER,
        source TEXT NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX orders_recorded ON orders (recorded_at)",
    """CREATE TABLE order_changes (
        order_id TEXT NOT NULL,
        change_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        recorded_at REAL NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        amount TEXT,
        currency TEXT,
        retained TEXT,
        PRIMARY KEY (order_id, change_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE held_changes (
        id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL,
        change_id TEXT NOT NULL,
        event BLOB NOT NULL,
        held_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        UNIQUE (order_id, change_id)
    )""",
    "CREATE INDEX held_changes_expiry ON held_changes (expires_at)",
    """CREATE TABLE order_deliveries (
        order_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        PRIMARY KEY (order_id, idempotency_key)
    ) WITHOUT ROWID""",
    "CREATE INDEX dead_letters_key ON dead_letters (idempotency_key)",
)

_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit
_SWEEP_LIMIT = 1000  # held changes handled per sweep transaction
_ORDER_COLUMNS = (
    "order_id, conversion_time, recorded_at, value, currency, gclid, gbraid, wbraid, consent,"
    " uploaded_with_order_id, refunded, retracted_at, last_adjusted_at, source"
)
_CHANGE_COLUMNS = "order_id, change_id, kind, occurred_at, recorded_at, action, reason, amount, currency, retained"
_UPSERT_ORDER = f"""INSERT INTO orders ({_ORDER_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (order_id) DO UPDATE SET value = excluded.value, currency = excluded.currency,
    gclid = excluded.gclid, gbraid = excluded.gbraid, wbraid = excluded.wbraid, consent = excluded.consent,
    refunded = excluded.refunded, retracted_at = excluded.retracted_at,
    last_adjusted_at = excluded.last_adjusted_at, updated_at = excluded.updated_at"""


def _ts(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    return ((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)) - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# -- reading -------------------------------------------------------------------------------------


def _order(row: Sequence[Any], change_ids: frozenset[str]) -> Order:
    (order_id, conversion_time, recorded_at, value, currency, gclid, gbraid, wbraid, consent,
     uploaded_with_order_id, refunded, retracted_at, last_adjusted_at, source) = row
    return Order(
        order_id=order_id,
        conversion_time=_from_us(conversion_time),  # type: ignore[arg-type]
        recorded_at=_dt(recorded_at),
        value=_dec(value),
        currency=currency,
        gclid=gclid,
        gbraid=gbraid,
        wbraid=wbraid,
        consent=tuple((k, v) for k, v in orjson.loads(consent)),
        uploaded_with_order_id=bool(uploaded_with_order_id),
        refunded=Decimal(refunded),
        retracted_at=_from_us(retracted_at),
        last_adjusted_at=_from_us(last_adjusted_at),
        source=source,
        change_ids=change_ids,
    )


def _held(row: Sequence[Any]) -> Held:
    id_, order_id, change_id, event, held_at, expires_at = row
    return Held(order_id, change_id, orjson.loads(event), _dt(held_at), _dt(expires_at), id=id_)


def load_state(conn: sqlite3.Connection, order_ids: Sequence[str]) -> LedgerState:
    ids = sorted(set(order_ids))
    state = LedgerState()
    for chunk in _chunks(ids):
        marks = _marks(len(chunk))
        change_ids: dict[str, set[str]] = {}
        for order_id, change_id in conn.execute(
            f"SELECT order_id, change_id FROM order_changes WHERE order_id IN ({marks})", chunk
        ):
            change_ids.setdefault(order_id, set()).add(change_id)
        for row in conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id IN ({marks})", chunk):
            state.orders[row[0]] = _order(row, frozenset(change_ids.get(row[0], ())))
        state.held.extend(
            _held(row) for row in conn.execute(
                "SELECT id, order_id, change_id, event, held_at, expires_at FROM held_changes"
                f" WHERE order_id IN ({marks}) ORDER BY id", chunk,
            )
        )
    return state


# -- writing -------------------------------------------------------------------------------------


def write_ledger(conn: sqlite3.Connection, write: LedgerWrite, now: datetime, insert_item: str) -> None:
    """Store ``write``: deliveries (through ``insert_item``, the outbox insert), rows, changes, holds."""
    ts = _ts(now)
    conn.executemany(
        insert_item,
        [
            (d.destination, d.batch_key, d.idempotency_key, d.tag, orjson.dumps(d.item), ts,
             ts if d.not_before is None else max(ts, _ts(d.not_before)))
            for d in write.deliveries
        ],
    )
    conn.executemany(
        _UPSERT_ORDER,
        [
            (o.order_id, _us(o.conversion_time), _ts(o.recorded_at), _text(o.value), o.currency, o.gclid, o.gbraid,
             o.wbraid, orjson.dumps([list(p) for p in o.consent]).decode(), int(o.uploaded_with_order_id),
             str(o.refunded), _us(o.retracted_at), _us(o.last_adjusted_at), o.source, ts)
            for o in write.orders.values()
        ],
    )
    conn.executemany(
        f"INSERT OR IGNORE INTO order_changes ({_CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (c.order_id, c.change_id, c.kind, _us(c.occurred_at), _ts(c.recorded_at), c.action, c.reason,
             _text(c.amount), c.currency, _text(c.retained))
            for c in write.changes
        ],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO held_changes (order_id, change_id, event, held_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        [(h.order_id, h.change_id, orjson.dumps(h.event), _ts(h.held_at), _ts(h.expires_at)) for h in write.hold],
    )
    conn.executemany("DELETE FROM held_changes WHERE id = ?", [(i,) for i in write.release])
    conn.executemany(
        "INSERT OR IGNORE INTO order_deliveries (order_id, idempotency_key) VALUES (?, ?)", write.order_deliveries
    )


def releasable(conn: sqlite3.Connection) -> LedgerState:
    """Held changes whose order exists (they come back from a replayed dead letter), with those orders."""
    order_ids = [
        r[0] for r in conn.execute(
            "SELECT DISTINCT h.order_id FROM held_changes h JOIN orders o ON o.order_id = h.order_id LIMIT ?",
            (_SWEEP_LIMIT,),
        )
    ]
    return load_state(conn, order_ids) if order_ids else LedgerState()


def expire_held(conn: sqlite3.Connection, now: datetime) -> int:
    """Dead-letter held changes past their time whose order never came."""
    ts = _ts(now)
    rows = conn.execute(
        "SELECT id, order_id, change_id, event, held_at, expires_at FROM held_changes h"
        " WHERE expires_at <= ? AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = h.order_id)"
        " ORDER BY expires_at LIMIT ?",
        (ts, _SWEEP_LIMIT),
    ).fetchall()
    for row in rows:
        held = _held(row)
        hours = round((held.expires_at - held.held_at).total_seconds() / 3600, 2)
        conn.execute(
            "INSERT INTO dead_letters (destination, batch_key, idempotency_key, tag, item, attempts, code, message,"
            " created_at, failed_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (LEDGER_DESTINATION, held.order_id, held_key(held.order_id, held.change_id), LEDGER_DESTINATION,
             orjson.dumps(held.dead_letter_item()), ORDER_NOT_FOUND,
             f"no order {held.order_id} within {hours:g}h", _ts(held.held_at), ts),
        )
        conn.execute("DELETE FROM held_changes WHERE id = ?", (held.id,))
    return len(rows)


def prune_orders(conn: sqlite3.Connection, now: datetime, retention: timedelta) -> int:
    cutoff = _ts(now) - retention.total_seconds()
    ids = [r[0] for r in conn.execute(
        "SELECT order_id FROM orders WHERE recorded_at < ? LIMIT ?", (cutoff, _SWEEP_LIMIT)
    )]
    for chunk in _chunks(ids):
        marks = _marks(len(chunk))
        for table in ("order_changes", "order_deliveries", "orders"):
            conn.execute(f"DELETE FROM {table} WHERE order_id IN ({marks})", chunk)
    return len(ids)


def held_key(order_id: str, change_id: str) -> str:
    return f"{LEDGER_DESTINATION}:{order_id}/{change_id}"


def rehold(conn: sqlite3.Connection, item: bytes, now: datetime) -> None:
    """A replayed ``order_not_found`` dead letter: held again, as long as the first time."""
    data = orjson.loads(item)
    ts = _ts(now)
    conn.execute(
        "INSERT OR IGNORE INTO held_changes (order_id, change_id, event, held_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        (data["order_id"], data["change_id"], orjson.dumps(data["event"]), ts, ts + float(data["hold_seconds"])),
    )


# -- the admin view ------------------------------------------------------------------------------


def history(conn: sqlite3.Connection, order_id: str) -> OrderHistory:
    changes = [
        AppliedChange(
            order_id=row[0], change_id=row[1], kind=row[2], occurred_at=_from_us(row[3]),  # type: ignore[arg-type]
            recorded_at=_dt(row[4]), action=row[5], reason=row[6], amount=_dec(row[7]), currency=row[8],
            retained=_dec(row[9]),
        )
        for row in conn.execute(
            f"SELECT {_CHANGE_COLUMNS} FROM order_changes WHERE order_id = ? ORDER BY recorded_at, occurred_at",
            (order_id,),
        )
    ]
    row = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    order = None if row is None else _order(row, frozenset(c.change_id for c in changes))
    held = [
        _held(r) for r in conn.execute(
            "SELECT id, order_id, change_id, event, held_at, expires_at FROM held_changes WHERE order_id = ? ORDER BY id",
            (order_id,),
        )
    ]
    keys = [r[0] for r in conn.execute("SELECT idempotency_key FROM order_deliveries WHERE order_id = ?", (order_id,))]
    deliveries: list[OrderDelivery] = []
    for chunk in _chunks(keys):
        marks = _marks(len(chunk))
        for dest, tag, key, status, attempts, code, message, created, delivered, next_at in conn.execute(
            "SELECT destination, tag, idempotency_key, status, attempts, last_code, last_message, created_at,"
            f" delivered_at, next_attempt_at FROM outbox WHERE idempotency_key IN ({marks})", chunk,
        ):
            pending = status == "pending"
            deliveries.append(OrderDelivery(
                dest, tag, key, status, attempts, code, message, _dt(created),
                None if delivered is None else _dt(delivered), _dt(next_at) if pending else None,
            ))
    dead_columns = "destination, tag, idempotency_key, attempts, code, message, created_at, failed_at"
    dead_rows = [
        row for chunk in _chunks(keys) for row in conn.execute(
            f"SELECT id, {dead_columns} FROM dead_letters WHERE idempotency_key IN ({_marks(len(chunk))})", chunk
        )
    ]
    dead_rows += conn.execute(  # held changes that expired: filed under the order id
        f"SELECT id, {dead_columns} FROM dead_letters WHERE destination = ? AND batch_key = ?",
        (LEDGER_DESTINATION, order_id),
    ).fetchall()
    for _, dest, tag, key, attempts, code, message, created, failed in sorted(dead_rows):
        deliveries.append(OrderDelivery(dest, tag, key, "dead", attempts, code, message, _dt(created), _dt(failed), None))
    deliveries.sort(key=lambda d: (d.created_at, d.idempotency_key))
    return OrderHistory(order, changes, held, deliveries)

