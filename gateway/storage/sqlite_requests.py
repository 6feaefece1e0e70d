"""SQLite: requests a vendor accepted and processes later (the Data Manager API's ``requestId``), and their status.

One row per accepted request: which items it carried (their idempotency
keys), when its status is next asked for, and what the vendor said last.
``gateway.vendor_requests`` decides when to ask and what an answer means;
this module only reads and writes the rows.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Sequence

import orjson

from gateway.sender import RequestStatus, SentRequest
from gateway.storage.base import TrackedRequest

MIGRATION: tuple[str, ...] = (
    """CREATE TABLE vendor_requests (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        batch_key TEXT NOT NULL,
        request_id TEXT NOT NULL,
        item_keys TEXT NOT NULL,
        sent_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'processing',
        records INTEGER,
        errors TEXT,
        warnings TEXT,
        checks INTEGER NOT NULL DEFAULT 0,
        checked_at REAL,
        next_check_at REAL
    )""",
    "CREATE INDEX vendor_requests_due ON vendor_requests (next_check_at) WHERE next_check_at IS NOT NULL",
)
_COLUMNS = ("id, destination, batch_key, request_id, item_keys, sent_at, state, records, errors, warnings, checks,"
            " checked_at, next_check_at")


def _ts(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def insert(conn: sqlite3.Connection, request: SentRequest, next_check_at: datetime) -> None:
    conn.execute(
        "INSERT INTO vendor_requests (destination, batch_key, request_id, item_keys, sent_at, next_check_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (request.destination, request.batch_key, request.request_id, orjson.dumps(list(request.item_keys)).decode(),
         _ts(request.sent_at), _ts(next_check_at)),
    )


def due(conn: sqlite3.Connection, now: datetime, limit: int) -> list[TrackedRequest]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM vendor_requests WHERE next_check_at IS NOT NULL AND next_check_at <= ?"
                        " ORDER BY next_check_at LIMIT ?", (_ts(now), limit)).fetchall()
    return [_tracked(row) for row in rows]


def latest(conn: sqlite3.Connection, limit: int) -> list[TrackedRequest]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM vendor_requests ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [_tracked(row) for row in rows]


def update(conn: sqlite3.Connection, id_: int, status: RequestStatus, checked_at: datetime,
           next_check_at: datetime | None) -> None:
    conn.execute(
        "UPDATE vendor_requests SET state = ?, records = ?, errors = ?, warnings = ?, checks = checks + 1,"
        " checked_at = ?, next_check_at = ? WHERE id = ?",
        (status.state, status.records, orjson.dumps(status.errors).decode(), orjson.dumps(status.warnings).decode(),
         _ts(checked_at), None if next_check_at is None else _ts(next_check_at), id_),
    )


def prune(conn: sqlite3.Connection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` requests no longer asked about that settled before ``before``.

    Counted from when it settled (``checked_at``), not when it was sent: a
    request given up on after days stays visible for the whole retention.
    """
    return conn.execute(
        "DELETE FROM vendor_requests WHERE id IN (SELECT id FROM vendor_requests WHERE next_check_at IS NULL"
        " AND checked_at < ? LIMIT ?)", (_ts(before), limit)).rowcount


def dead_letter_delivered(conn: sqlite3.Connection, keys: Sequence[str], code: str, message: str,
                          now: datetime, dead_columns: str) -> int:
    """Delivered outbox items that the vendor failed later: moved to the dead letters with its reason."""
    moved = 0
    for key in keys:
        moved += conn.execute(
            f"INSERT INTO dead_letters ({dead_columns}) SELECT destination, batch_key, idempotency_key, tag, item,"
            " attempts + 1, ?, ?, created_at, ? FROM outbox WHERE idempotency_key = ? AND status = 'delivered'",
            (code, message, _ts(now), key),
        ).rowcount
        conn.execute("DELETE FROM outbox WHERE idempotency_key = ? AND status = 'delivered'", (key,))
    return moved


def _tracked(row: tuple) -> TrackedRequest:  # type: ignore[type-arg]
    (id_, destination, batch_key, request_id, keys, sent_at, state, records, errors, warnings, checks, checked_at,
     next_check_at) = row
    return TrackedRequest(id_, destination, batch_key, request_id, tuple(orjson.loads(keys)), _dt(sent_at) or
                          datetime.fromtimestamp(0, timezone.utc), state, records,
                          orjson.loads(errors) if errors else {}, orjson.loads(warnings) if warnings else {},
                          checks, _dt(checked_at), _dt(next_check_at))
