"""PostgreSQL: requests a vendor accepted and processes later, and their status (see ``sqlite_requests``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import asyncpg
import orjson

from gateway.sender import RequestStatus, SentRequest
from gateway.storage.base import TrackedRequest

MIGRATION: tuple[str, ...] = (
    """CREATE TABLE vendor_requests (
        id bigserial PRIMARY KEY,
        destination text NOT NULL,
        batch_key text NOT NULL,
        request_id text NOT NULL,
        item_keys jsonb NOT NULL,
        sent_at timestamptz NOT NULL,
        state text NOT NULL DEFAULT 'processing',
        records bigint,
        errors jsonb,
        warnings jsonb,
        checks integer NOT NULL DEFAULT 0,
        checked_at timestamptz,
        next_check_at timestamptz
    )""",
    "CREATE INDEX vendor_requests_due ON vendor_requests (next_check_at) WHERE next_check_at IS NOT NULL",
)
_COLUMNS = ("id, destination, batch_key, request_id, item_keys::text, sent_at, state, records, errors::text,"
            " warnings::text, checks, checked_at, next_check_at")


async def insert(conn: asyncpg.Connection, request: SentRequest, next_check_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO vendor_requests (destination, batch_key, request_id, item_keys, sent_at, next_check_at)"
        " VALUES ($1, $2, $3, $4::jsonb, $5, $6)",
        request.destination, request.batch_key, request.request_id, orjson.dumps(list(request.item_keys)).decode(),
        request.sent_at, next_check_at,
    )


async def due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[TrackedRequest]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM vendor_requests WHERE next_check_at IS NOT NULL"
                            " AND next_check_at <= $1 ORDER BY next_check_at LIMIT $2", now, limit)
    return [_tracked(row) for row in rows]


async def latest(conn: asyncpg.Connection, limit: int) -> list[TrackedRequest]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM vendor_requests ORDER BY id DESC LIMIT $1", limit)
    return [_tracked(row) for row in rows]


async def update(conn: asyncpg.Connection, id_: int, status: RequestStatus, checked_at: datetime,
                 next_check_at: datetime | None) -> None:
    await conn.execute(
        "UPDATE vendor_requests SET state = $1, records = $2, errors = $3::jsonb, warnings = $4::jsonb,"
        " checks = checks + 1, checked_at = $5, next_check_at = $6 WHERE id = $7",
        status.state, status.records, orjson.dumps(status.errors).decode(), orjson.dumps(status.warnings).decode(),
        checked_at, next_check_at, id_,
    )


async def prune(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` requests no longer asked about that settled (``checked_at``) before ``before``."""
    result = await conn.execute(
        "DELETE FROM vendor_requests WHERE id IN (SELECT id FROM vendor_requests WHERE next_check_at IS NULL"
        " AND checked_at < $1 LIMIT $2)", before, limit)
    return int(result.split()[-1])


async def dead_letter_delivered(conn: asyncpg.Connection, keys: Sequence[str], code: str, message: str,
                                now: datetime, dead_columns: str) -> int:
    """Delivered outbox items that the vendor failed later: moved to the dead letters with its reason."""
    rows = await conn.fetch(
        f"""WITH gone AS (
                DELETE FROM outbox WHERE idempotency_key = ANY($1::text[]) AND status = 'delivered' RETURNING *
            )
            INSERT INTO dead_letters ({dead_columns})
            SELECT destination, batch_key, idempotency_key, tag, item, attempts + 1, $2, $3, created_at, $4 FROM gone
            RETURNING id""",
        list(keys), code, message, now,
    )
    return len(rows)


def _tracked(row: Any) -> TrackedRequest:
    return TrackedRequest(row[0], row[1], row[2], row[3], tuple(orjson.loads(row[4])), row[5], row[6], row[7],
                          orjson.loads(row[8]) if row[8] else {}, orjson.loads(row[9]) if row[9] else {}, row[10],
                          row[11], row[12])
