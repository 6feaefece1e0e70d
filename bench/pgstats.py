"""PostgreSQL for ``bench.workers``: a database of the run's own, its outbox read back, and what writing cost.

The database is created from ``template0`` under a unique ``gw_bench_<pid>_<hex>``
name and dropped with ``FORCE`` afterwards; nothing else on the server is
touched. ``Snapshot`` reads the counters a capacity plan needs: the WAL
position (bytes written, cluster-wide), ``pg_stat_wal`` (records, full-page
images, WAL fsyncs; cluster-wide too, so another database's work on the same
server is counted in them) and, for this database and its outbox table alone,
commits and rows inserted, updated (HOT or not) and deleted. Their
differences over a load phase, divided by the hits it committed, are what one
hit costs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ADMIN_URL = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def available() -> str | None:
    """Why no PostgreSQL can be used, or None when the server at ``BENCH_POSTGRES`` answers."""
    try:
        _run(_fetch(ADMIN_URL, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        return f"PostgreSQL at {urlsplit(ADMIN_URL).hostname}:{urlsplit(ADMIN_URL).port} does not answer: {exc}"
    return None


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of an empty database that exists only for the ``with`` block."""
    name = f"gw_bench_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    _run(_fetch(ADMIN_URL, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        _run(_fetch(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def committed(url: str) -> tuple[int, int, int]:
    """(pending, delivered, dead) items, as ``bench.outbox.committed`` reads them from SQLite."""
    async def read() -> tuple[int, int, int]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            rows = dict(await conn.fetch("SELECT status, count(*) FROM outbox GROUP BY status"))
            dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        finally:
            await conn.close()
        pending, delivered = rows.pop("pending", 0), rows.pop("delivered", 0)
        return pending, delivered, dead + sum(rows.values())
    return _run(read())


def pending(url: str) -> int:
    return _run(_fetch(url, "SELECT count(*) FROM outbox WHERE status = 'pending'"))[0][0]


@dataclass(frozen=True, slots=True)
class Snapshot:
    wal_lsn: str
    wal: dict[str, float]  # pg_stat_wal: wal_records, wal_fpi, wal_bytes, wal_write, wal_sync
    database: dict[str, int]  # pg_stat_database of this database: xact_commit, tup_*
    outbox: dict[str, int]  # pg_stat_user_tables of outbox: n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del


async def _snapshot(url: str) -> Snapshot:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        wal = await conn.fetchrow("SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync FROM pg_stat_wal")
        db = await conn.fetchrow("SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted"
                                 " FROM pg_stat_database WHERE datname = current_database()")
        table = await conn.fetchrow("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"
                                    " WHERE relname = 'outbox'")
    finally:
        await conn.close()
    return Snapshot(lsn, {k: float(v) for k, v in wal.items()}, dict(db), dict(table) if table else {})


def snapshot(url: str) -> Snapshot:
    """The counters now.

    A backend reports its statistics when it goes idle, but at most once a
    second, and an idle pooled connection may hold them for up to 10 s: read
    the closing snapshot after the gateway has stopped (a backend reports all
    it has when it exits).
    """
    return _run(_snapshot(url))


def wal_lsn(url: str) -> str:
    """The WAL's current write position: exact at any moment, unlike the statistics."""
    return _run(_fetch(url, "SELECT pg_current_wal_lsn()::text"))[0][0]


def wal_between(url: str, start: str, end: str) -> int:
    """Bytes of WAL written between two positions, by the whole server."""
    return _run(_wal_bytes(url, start, end))


async def _wal_bytes(url: str, start: str, end: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return int(await conn.fetchval("SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", end, start))
    finally:
        await conn.close()


def cost(url: str, before: Snapshot, after: Snapshot, hits: int) -> dict[str, Any]:
    """What ``hits`` requests (and their deliveries) cost PostgreSQL between two snapshots, in total and per hit.

    The WAL figures are the whole server's: work on another database in that time is counted too.
    """
    wal_bytes = _run(_wal_bytes(url, before.wal_lsn, after.wal_lsn))
    totals: dict[str, float] = {"wal_bytes_lsn": wal_bytes}
    totals |= {k: after.wal[k] - before.wal[k] for k in after.wal}
    totals |= {k: after.database[k] - before.database[k] for k in after.database}
    totals |= {f"outbox_{k}": after.outbox.get(k, 0) - before.outbox.get(k, 0) for k in after.outbox}
    per_hit = {k: round(v / hits, 3) for k, v in totals.items()} if hits else {}
    return {"hits": hits, "totals": totals, "per_hit": per_hit}


def sizes(url: str) -> dict[str, Any]:
    """On-disk size of the outbox and its indexes, per row, and the average stored row and item."""
    rows = _run(_fetch(url, """
        SELECT (SELECT count(*) FROM outbox) AS rows,
               (SELECT avg(pg_column_size(o.*)) FROM outbox o) AS avg_row_bytes,
               (SELECT avg(octet_length(item::text)) FROM outbox) AS avg_item_bytes,
               pg_relation_size('outbox') AS heap_bytes,
               pg_total_relation_size('outbox') AS total_bytes,
               pg_indexes_size('outbox') AS index_bytes"""))[0]
    indexes = _run(_fetch(url, "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
                               " WHERE relname = 'outbox' ORDER BY 1"))
    out: dict[str, Any] = {k: (float(v) if v is not None else None) for k, v in rows.items()}
    out["indexes"] = {name: size for name, size in indexes}
    n = out["rows"] or 0
    out["total_bytes_per_row"] = round(out["total_bytes"] / n, 1) if n else None
    out["heap_bytes_per_row"] = round(out["heap_bytes"] / n, 1) if n else None
    return out
