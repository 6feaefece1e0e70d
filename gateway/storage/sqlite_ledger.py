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

# The order system's total (the base of refunds), the conversion uploads the ledger follows (NULL for
# orders recorded before), the identifiers kept under consent, which value each adjustment used, and
# why a change waits.
ORDER_SYSTEM_MIGRATION: tuple[str, ...] = (
    "ALTER TABLE orders ADD COLUMN total TEXT",
    "ALTER TABLE orders ADD COLUMN uploads TEXT",
    "ALTER TABLE orders ADD COLUMN identifiers TEXT",
    "ALTER TABLE order_changes ADD COLUMN basis TEXT",
    "ALTER TABLE order_changes ADD COLUMN adjusted_value TEXT",
    "ALTER TABLE held_changes ADD COLUMN reason TEXT NOT NULL DEFAULT 'order'",
)

_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit
_SWEEP_LIMIT = 1000  # held changes handled per sweep transaction
_ORDER_COLUMNS = (
    "order_id, conversion_time, recorded_at, value, currency, gclid, gbraid, wbraid, consent,"
    " uploaded_with_order_id, refunded, retracted_at, last_adjusted_at, source, total, uploads, identifiers"
)
_CHANGE_COLUMNS = ("order_id, change_id, kind, occurred_at, recorded_at, action, reason, amount, currency, retained,"
                   " basis, adjusted_value")
_HELD_COLUMNS = "id, order_id, change_id, event, held_at, expires_at, reason"
_UPSERT_ORDER = f"""INSERT INTO orders ({_ORDER_COLUMNS}, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (order_id) DO UPDATE SET value = excluded.value, currency = excluded.currency,
    gclid = excluded.gclid, gbraid = excluded.gbraid, wbraid = excluded.wbraid, consent = excluded.consent,
    refunded = excluded.refunded, retracted_at = excluded.retracted_at,
    last_adjusted_at = excluded.last_adjusted_at, total = excluded.total, identifiers = excluded.identifiers,
    updated_at = excluded.updated_at"""
_INSERT_HELD = ("INSERT OR IGNORE INTO held_changes (order_id, change_id, event, held_at, expires_at, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)")
_INSERT_DEAD = ("INSERT INTO dead_letters (destination, batch_key, idempotency_key, tag, item, attempts, code, message,"
                " created_at, failed_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)")


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


def _order(row: Sequence[Any], change_ids: frozenset[str], statuses: dict[str, str]) -> Order:
    (order_id, conversion_time, recorded_at, value, currency, gclid, gbraid, wbraid, consent,
     uploaded_with_order_id, refunded, retracted_at, last_adjusted_at, source, total, uploads, identifiers) = row
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
        total=_dec(total),
        uploads=None if uploads is None else tuple(
            Upload(action, key, statuses.get(key, "uploaded")) for action, key in orjson.loads(uploads)  # type: ignore[arg-type]
        ),
        identifiers=() if identifiers is None else tuple((k, v) for k, v in orjson.loads(identifiers)),
    )


def _held(row: Sequence[Any]) -> Held:
    id_, order_id, change_id, event, held_at, expires_at, reason = row
    return Held(order_id, change_id, orjson.loads(event), _dt(held_at), _dt(expires_at), id=id_, reason=reason)


def upload_statuses(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, str]:
    """What the dispatcher made of each outbox item: pending, uploaded, or failed (dead-lettered).

    A key in neither table was delivered and pruned after ``delivery.retention``:
    only delivered items leave the outbox other than as dead letters.
    """
    statuses: dict[str, str] = {}
    for chunk in _chunks(sorted(set(keys))):
        marks = _marks(len(chunk))
        for key, status in conn.execute(
            f"SELECT idempotency_key, status FROM outbox WHERE idempotency_key IN ({marks})", chunk
        ):
            statuses[key] = "uploaded" if status == "delivered" else "pending"
        for (key,) in conn.execute(
            f"SELECT DISTINCT idempotency_key FROM dead_letters WHERE idempotency_key IN ({marks})", chunk
        ):
            statuses.setdefault(key, "failed")
    return statuses


def _upload_keys(rows: Sequence[Sequence[Any]]) -> list[str]:
    return [key for row in rows if row[15] is not None for _, key in orjson.loads(row[15])]


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
        rows = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id IN ({marks})", chunk).fetchall()
        statuses = upload_statuses(conn, _upload_keys(rows))
        for row in rows:
            state.orders[row[0]] = _order(row, frozenset(change_ids.get(row[0], ())), statuses)
        state.held.extend(
            _held(row) for row in conn.execute(
                f"SELECT {_HELD_COLUMNS} FROM held_changes WHERE order_id IN ({marks}) ORDER BY id", chunk,
            )
        )
    return state


# -- writing -------------------------------------------------------------------------------------


def _json(pairs: Any) -> str:
    return orjson.dumps([list(p) for p in pairs]).decode()


def write_ledger(conn: sqlite3.Connection, write: LedgerWrite, now: datetime, insert_item: str) -> None:
    """Store ``write``: deliveries (through ``insert_item``, the outbox insert), rows, changes, holds, dead letters.

    Released holds go before new ones: a change held again for another
    reason (its order arrived, its total did not) is deleted, then inserted.
    """
    ts = _ts(now)
    conn.executemany(
        insert_item,
        [
            (d.destination, d.batch_key, d.idempotency_key, d.tag, d.raw, ts,
             ts if d.not_before is None else max(ts, _ts(d.not_before)))
            for d in write.deliveries
        ],
    )
    conn.executemany(
        _UPSERT_ORDER,
        [
            (o.order_id, _us(o.conversion_time), _ts(o.recorded_at), _text(o.value), o.currency, o.gclid, o.gbraid,
             o.wbraid, _json(o.consent), int(o.uploaded_with_order_id),
             str(o.refunded), _us(o.retracted_at), _us(o.last_adjusted_at), o.source, _text(o.total),
             None if o.uploads is None else _json((u.action, u.key) for u in o.uploads),
             _json(o.identifiers) if o.identifiers else None, ts)
            for o in write.orders.values()
        ],
    )
    conn.executemany(
        f"INSERT OR IGNORE INTO order_changes ({_CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (c.order_id, c.change_id, c.kind, _us(c.occurred_at), _ts(c.recorded_at), c.action, c.reason,
             _text(c.amount), c.currency, _text(c.retained), c.basis, _text(c.adjusted_value))
            for c in write.changes
        ],
    )
    conn.executemany("DELETE FROM held_changes WHERE id = ?", [(i,) for i in write.release])
    conn.executemany(
        _INSERT_HELD,
        [(h.order_id, h.change_id, orjson.dumps(h.event), _ts(h.held_at), _ts(h.expires_at), h.reason)
         for h in write.hold],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO order_deliveries (order_id, idempotency_key) VALUES (?, ?)", write.order_deliveries
    )
    conn.executemany(_INSERT_DEAD, [_dead_letter_row(d, ts) for d in write.dead_letters])


def _dead_letter_row(letter: LedgerDeadLetter, ts: float) -> tuple[Any, ...]:
    held = letter.held
    return (LEDGER_DESTINATION, held.order_id, held_key(held.order_id, held.change_id), LEDGER_DESTINATION,
            orjson.dumps(held.dead_letter_item()), letter.code, letter.message, _ts(held.held_at), ts)


def releasable(conn: sqlite3.Connection, now: datetime) -> LedgerState:
    """Held changes that can go now, with their orders: their order exists (a replayed dead letter, a race lost
    to the sweep), or they waited for the order system's total and it came or their wait is over."""
    order_ids = [
        r[0] for r in conn.execute(
            "SELECT DISTINCT h.order_id FROM held_changes h JOIN orders o ON o.order_id = h.order_id"
            " WHERE h.reason = 'order' OR (h.reason = 'total' AND (o.total IS NOT NULL OR h.expires_at <= ?))"
            " LIMIT ?",
            (_ts(now), _SWEEP_LIMIT),
        )
    ]
    return load_state(conn, order_ids) if order_ids else LedgerState()


def expire_held(conn: sqlite3.Connection, now: datetime) -> dict[str, int]:
    """Dead-letter held changes past their time: whose order never came, or whose money never moved."""
    ts = _ts(now)
    expired: dict[str, int] = {}
    unknown = conn.execute(
        f"SELECT {_HELD_COLUMNS} FROM held_changes h"
        " WHERE h.reason != 'pending' AND expires_at <= ?"
        " AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = h.order_id)"
        " ORDER BY expires_at LIMIT ?",
        (ts, _SWEEP_LIMIT),
    ).fetchall()
    pending = conn.execute(
        f"SELECT {_HELD_COLUMNS} FROM held_changes WHERE reason = 'pending' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        (ts, _SWEEP_LIMIT),
    ).fetchall()
    for rows, code, why in ((unknown, ORDER_NOT_FOUND, "no order {order} within {hours}"),
                            (pending, REFUND_STILL_PENDING, "refund of {order} still pending after {hours}")):
        for row in rows:
            held = _held(row)
            hours = f"{round((held.expires_at - held.held_at).total_seconds() / 3600, 2):g}h"
            conn.execute(_INSERT_DEAD, _dead_letter_row(
                LedgerDeadLetter(held, code, why.format(order=held.order_id, hours=hours)), ts))
            conn.execute("DELETE FROM held_changes WHERE id = ?", (held.id,))
        if rows:
            expired[code] = len(rows)
    return expired


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
    """A replayed ledger dead letter: held again, for the same reason and as long as the first time."""
    data = orjson.loads(item)
    ts = _ts(now)
    conn.execute(_INSERT_HELD, (data["order_id"], data["change_id"], orjson.dumps(data["event"]), ts,
                                ts + float(data["hold_seconds"]), data.get("reason", "order")))


# -- the admin view ------------------------------------------------------------------------------


def history(conn: sqlite3.Connection, order_id: str) -> OrderHistory:
    changes = [
        AppliedChange(
            order_id=row[0], change_id=row[1], kind=row[2], occurred_at=_from_us(row[3]),  # type: ignore[arg-type]
            recorded_at=_dt(row[4]), action=row[5], reason=row[6], amount=_dec(row[7]), currency=row[8],
            retained=_dec(row[9]), basis=row[10], adjusted_value=_dec(row[11]),
        )
        for row in conn.execute(
            f"SELECT {_CHANGE_COLUMNS} FROM order_changes WHERE order_id = ? ORDER BY recorded_at, occurred_at",
            (order_id,),
        )
    ]
    row = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    order = None if row is None else _order(row, frozenset(c.change_id for c in changes),
                                            upload_statuses(conn, _upload_keys([row])))
    held = [
        _held(r) for r in conn.execute(
            f"SELECT {_HELD_COLUMNS} FROM held_changes WHERE order_id = ? ORDER BY id", (order_id,),
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

