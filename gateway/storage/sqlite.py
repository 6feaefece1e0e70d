"""The SQLite backend: one file in WAL mode, written through group commit.

One writer thread owns the write connection. A caller puts an operation (a
function of that connection) on a queue and awaits a future; the writer takes
the first operation, drains up to ``MAX_GROUP`` more that are already waiting,
and runs them all in one ``BEGIN IMMEDIATE ... COMMIT``, each inside its own
SAVEPOINT so that one failing operation fails only its own caller. N requests
that arrive together therefore share one fsync, which is what makes
``synchronous=FULL`` (an acknowledged enqueue survives power loss) affordable.

Reads go through a second connection on a thread of their own: in WAL mode a
reader never waits for the writer, and a slow count never delays a commit.

Several processes (uvicorn workers) may share one file: ``BEGIN IMMEDIATE``
takes the write lock up front, and ``busy_timeout`` lets a writer wait for
another process's commit instead of failing at once.

Times are stored as unix seconds (REAL, UTC); items as orjson bytes. The
order ledger's tables and SQL are in ``sqlite_ledger``; its operations run
through the same writer, so a ledger decision commits with its deliveries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence, TypeVar

import orjson

from gateway.delivery import Delivery
from gateway.ledger import LEDGER_DESTINATION, LedgerWrite
from gateway.sender import PendingItem
from gateway.storage import sqlite_ledger
from gateway.storage.base import (
    DeadLetter,
    DestinationStats,
    DryRunRecord,
    GroupInfo,
    LedgerStep,
    OrderHistory,
    Retry,
    Storage,
    StorageUnavailable,
    Sweep,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]

MAX_GROUP = 512  # operations committed together at most
DRY_RUN_CAP = 10_000  # dry-run records kept
PRUNE_CHUNK = 5_000  # rows deleted per transaction by prune(), so writers are not held up

# Each entry migrates the schema from its index to index + 1; append, never edit.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            batch_key TEXT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            tag TEXT NOT NULL,
            item BLOB NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            lease_until REAL,
            last_code TEXT,
            last_message TEXT,
            delivered_at REAL
        )""",
        # Covers ready_groups, stats, pending_count and claim's filter (status only makes it covering).
        """CREATE INDEX outbox_due ON outbox (destination, batch_key, next_attempt_at, lease_until, created_at, status)
            WHERE status = 'pending'""",
        "CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE status = 'delivered'",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            batch_key TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            tag TEXT NOT NULL,
            item BLOB NOT NULL,
            attempts INTEGER NOT NULL,
            code TEXT,
            message TEXT,
            created_at REAL NOT NULL,
            failed_at REAL NOT NULL
        )""",
        """CREATE TABLE dry_runs (
            id INTEGER PRIMARY KEY,
            destination TEXT NOT NULL,
            batch_key TEXT NOT NULL,
            item_count INTEGER NOT NULL,
            request TEXT NOT NULL,
            recorded_at REAL NOT NULL
        )""",
        "CREATE TABLE request_keys (key TEXT PRIMARY KEY, created_at REAL NOT NULL) WITHOUT ROWID",
        "CREATE INDEX request_keys_created ON request_keys (created_at)",
    ),
    sqlite_ledger.MIGRATION,  # the order ledger
]

_INSERT_ITEM = """INSERT OR IGNORE INTO outbox
    (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
_DUE = "status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
_SELECT_DUE = f"""SELECT id, idempotency_key, item, tag, attempts, created_at, lease_until FROM outbox
    WHERE destination = ? AND batch_key = ? AND {_DUE} ORDER BY next_attempt_at, id LIMIT ?"""
_READY_GROUPS = f"""SELECT destination, batch_key, count(*), min(created_at) FROM outbox
    WHERE {_DUE} GROUP BY destination, batch_key"""
_DEAD_COLUMNS = "destination, batch_key, idempotency_key, tag, item, attempts, code, message, created_at, failed_at"


def _ts(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _unavailable(exc: BaseException) -> BaseException:
    """A database that cannot commit (full, read-only, I/O error, locked) is StorageUnavailable."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)
    ):
        err = StorageUnavailable(f"sqlite: {exc}")
        err.__cause__ = exc
        return err
    return exc


class SQLiteStorage(Storage):
    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
        dry_run_cap: int = DRY_RUN_CAP,
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        self.dry_run_cap = dry_run_cap
        self.transactions = 0  # group commits done (for tests and benchmarks)
        self._queue: queue.SimpleQueue[tuple[Op[Any], asyncio.Future[Any], asyncio.AbstractEventLoop] | None]
        self._queue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._read_conn: sqlite3.Connection | None = None
        self._closed = False
        self._dry_runs_since_prune = 0

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._writer = threading.Thread(target=self._run_writer, args=(ready,), name="sqlite-writer", daemon=True)
        self._writer.start()
        await asyncio.wrap_future(ready)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)  # after every operation already queued
            await asyncio.to_thread(self._writer.join)
        await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    # -- the writer thread -----------------------------------------------------

    def _run_writer(self, ready: concurrent.futures.Future[None]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.synchronous == 'FULL' else 'NORMAL'}")
            conn.execute("PRAGMA journal_size_limit = 67108864")  # truncate the WAL back to 64 MiB after a burst
            self._migrate(conn)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            ready.set_exception(_unavailable(exc))
            return
        ready.set_result(None)
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                try:
                    self._commit_group(conn, batch)
                except Exception as exc:  # noqa: BLE001 - a bug here must not strand the callers
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    self._resolve(batch, [(False, exc)] * len(batch))
        finally:
            conn.close()

    def _commit_group(
        self, conn: sqlite3.Connection, batch: list[tuple[Op[Any], asyncio.Future[Any], asyncio.AbstractEventLoop]]
    ) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._resolve(batch, [(False, _unavailable(exc)) for _ in batch])
            return
        aborted: BaseException | None = None
        for op, _, _ in batch:
            if aborted is not None:
                outcomes.append((False, StorageUnavailable(str(aborted))))
                continue
            try:
                conn.execute("SAVEPOINT op")
                value = op(conn)
                conn.execute("RELEASE op")
                outcomes.append((True, value))
            except Exception as exc:  # noqa: BLE001 - reported to the caller, the thread lives on
                outcomes.append((False, _unavailable(exc)))
                if not conn.in_transaction:  # SQLite rolled the whole transaction back (I/O error, ...)
                    aborted = StorageUnavailable("sqlite: the transaction was rolled back")
                    continue
                try:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                except sqlite3.Error as rb_exc:
                    aborted = _unavailable(rb_exc)
        if aborted is None:
            try:
                conn.execute("COMMIT")
                self.transactions += 1
            except sqlite3.Error as exc:
                aborted = _unavailable(exc)
        if aborted is not None:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            reason = str(aborted)
            outcomes = [(False, StorageUnavailable(reason)) if ok else (ok, value) for ok, value in outcomes]
        self._resolve(batch, outcomes)

    @staticmethod
    def _resolve(
        batch: list[tuple[Op[Any], asyncio.Future[Any], asyncio.AbstractEventLoop]], outcomes: list[tuple[bool, Any]]
    ) -> None:
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, fut, loop), (ok, value) in zip(batch, outcomes):
            per_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, items in per_loop.items():
            try:
                loop.call_soon_threadsafe(_set_all, items)
            except RuntimeError:  # the caller's loop is closed; nobody is waiting
                pass

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] or 0
            for target in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _write(self, op: Op[T]) -> asyncio.Future[T]:
        """Queue ``op`` for the next group commit; the future holds its return value."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self._closed or self._writer is None or not self._writer.is_alive():
            fut.set_exception(StorageUnavailable("sqlite: storage is not open"))
        else:
            self._queue.put((op, fut, loop))
        return fut

    # -- the reader thread -----------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._read_conn is None:
                self._read_conn = self._connect()
                self._read_conn.execute("PRAGMA query_only = 1")
            try:
                return fn(self._read_conn)
            except sqlite3.Error as exc:
                mapped = _unavailable(exc)
                if mapped is exc:
                    raise
                raise mapped from exc

        if self._closed:
            raise StorageUnavailable("sqlite: storage is not open")
        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    # -- the Storage interface -------------------------------------------------

    async def ping(self) -> bool:
        try:
            return await self._read(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)
        except StorageUnavailable:
            return False

    async def enqueue(self, deliveries: Sequence[Delivery], now: datetime, request_key: str | None = None) -> bool:
        ts = _ts(now)
        rows = [
            (
                d.destination,
                d.batch_key,
                d.idempotency_key,
                d.tag,
                orjson.dumps(d.item),
                ts,
                ts if d.not_before is None else max(ts, _ts(d.not_before)),
            )
            for d in deliveries
        ]
        if request_key is None and not rows:
            return True

        def op(conn: sqlite3.Connection) -> bool:
            if request_key is not None:
                cur = conn.execute("INSERT OR IGNORE INTO request_keys (key, created_at) VALUES (?, ?)", (request_key, ts))
                if cur.rowcount == 0:
                    return False
            conn.executemany(_INSERT_ITEM, rows)
            return True

        return await self._write(op)

    async def ready_groups(self, now: datetime) -> list[GroupInfo]:
        ts = _ts(now)
        rows = await self._read(lambda c: c.execute(_READY_GROUPS, (ts, ts)).fetchall())
        return [GroupInfo(dest, key, count, _dt(oldest)) for dest, key, count, oldest in rows]

    async def claim(
        self, destination: str, batch_key: str, limit: int, now: datetime, lease: timedelta
    ) -> list[PendingItem]:
        ts = _ts(now)
        until = ts + lease.total_seconds()

        def op(conn: sqlite3.Connection) -> list[Any]:
            rows = [
                # A lease that ran out means its dispatcher died mid-send: that send counts as an attempt.
                (id_, key, item, tag, attempts + (lease is not None), created)
                for id_, key, item, tag, attempts, created, lease in conn.execute(
                    _SELECT_DUE, (destination, batch_key, ts, ts, limit)
                )
            ]
            conn.executemany(
                "UPDATE outbox SET lease_until = ?, attempts = ? WHERE id = ?",
                [(until, row[4], row[0]) for row in rows],
            )
            return rows

        rows = await self._write(op)
        return [
            PendingItem(id=id_, idempotency_key=key, item=orjson.loads(item), tag=tag, attempts=attempts,
                        created_at=_dt(created))
            for id_, key, item, tag, attempts, created in rows
        ]

    async def settle(
        self,
        now: datetime,
        delivered: Sequence[int] = (),
        retries: Sequence[Retry] = (),
        dead: Sequence[tuple[int, str | None, str | None]] = (),
    ) -> None:
        ts = _ts(now)
        done_rows = [(ts, id_) for id_ in delivered]
        retry_rows = [(_ts(r.next_attempt_at), r.code, r.message, r.id) for r in retries]
        dead_rows = [(code, message, ts, id_) for id_, code, message in dead]
        if not (done_rows or retry_rows or dead_rows):
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET status = 'delivered', delivered_at = ?, lease_until = NULL"
                " WHERE id = ? AND status = 'pending'",
                done_rows,
            )
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_code = ?, last_message = ?,"
                " lease_until = NULL WHERE id = ? AND status = 'pending'",
                retry_rows,
            )
            conn.executemany(
                f"INSERT INTO dead_letters ({_DEAD_COLUMNS}) SELECT destination, batch_key, idempotency_key, tag,"
                " item, attempts + 1, ?, ?, created_at, ? FROM outbox WHERE id = ? AND status = 'pending'",
                dead_rows,
            )
            conn.executemany("DELETE FROM outbox WHERE id = ? AND status = 'pending'", [(r[3],) for r in dead_rows])

        await self._write(op)

    async def release(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        rows = [(id_,) for id_ in ids]
        await self._write(lambda c: c.executemany("UPDATE outbox SET lease_until = NULL WHERE id = ?", rows))

    async def stats(self, now: datetime) -> list[DestinationStats]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT destination, count(*), min(created_at) FROM outbox WHERE status = 'pending'"
                " GROUP BY destination"
            ).fetchall()
        )
        return [DestinationStats(dest, count, None if oldest is None else _dt(oldest)) for dest, count, oldest in rows]

    async def pending_count(self) -> int:
        return await self._read(lambda c: c.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])

    async def record_dry_run(
        self, destination: str, batch_key: str, request: dict[str, Any], item_count: int, now: datetime
    ) -> None:
        row = (destination, batch_key, item_count, orjson.dumps(request).decode(), _ts(now))
        self._dry_runs_since_prune += 1
        prune = self._dry_runs_since_prune >= max(1, min(100, self.dry_run_cap // 10))
        if prune:
            self._dry_runs_since_prune = 0
        cap = self.dry_run_cap

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO dry_runs (destination, batch_key, item_count, request, recorded_at) VALUES (?, ?, ?, ?, ?)",
                row,
            )
            if prune:
                conn.execute(
                    "DELETE FROM dry_runs WHERE id < (SELECT id FROM dry_runs ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (cap - 1,),
                )

        await self._write(op)

    async def list_dry_runs(self, last: int) -> list[DryRunRecord]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, destination, batch_key, item_count, request, recorded_at FROM dry_runs"
                " ORDER BY id DESC LIMIT ?",
                (min(last, self.dry_run_cap),),
            ).fetchall()
        )
        return [DryRunRecord(id_, dest, key, n, orjson.loads(req), _dt(at)) for id_, dest, key, n, req, at in rows]

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._read(
            lambda c: c.execute(f"SELECT id, {_DEAD_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        )
        return [
            DeadLetter(id_, dest, key, ikey, tag, orjson.loads(item), attempts, code, message, _dt(created), _dt(failed))
            for id_, dest, key, ikey, tag, item, attempts, code, message, created, failed in rows
        ]

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: datetime) -> int:
        ts = _ts(now)
        wanted = None if ids is None else list(ids)

        def op(conn: sqlite3.Connection) -> int:
            select = "SELECT id, destination, batch_key, idempotency_key, tag, item, created_at FROM dead_letters"
            if wanted is None:
                rows = conn.execute(select + " ORDER BY id").fetchall()
            else:
                rows = [r for i in wanted for r in conn.execute(select + " WHERE id = ?", (i,)).fetchall()]
            for id_, dest, key, ikey, tag, item, created in rows:
                if dest == LEDGER_DESTINATION:  # an expired held change: held again, not sent
                    sqlite_ledger.rehold(conn, item, now)
                    conn.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
                    continue
                values = (dest, key, ikey, tag, item, created, ts)
                if conn.execute(_INSERT_ITEM, values).rowcount == 0:
                    # The key came back meanwhile (the same request was sent again): keep both, told apart.
                    conn.execute(_INSERT_ITEM, (dest, key, f"{ikey}#replay-{id_}", tag, item, created, ts))
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
            return len(rows)

        return await self._write(op)

    async def prune(self, now: datetime, retention: timedelta) -> int:
        cutoff = _ts(now) - retention.total_seconds()

        def op(conn: sqlite3.Connection) -> tuple[int, int]:
            items = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 'delivered'"
                " AND delivered_at < ? LIMIT ?)",
                (cutoff, PRUNE_CHUNK),
            ).rowcount
            keys = conn.execute(
                "DELETE FROM request_keys WHERE key IN (SELECT key FROM request_keys WHERE created_at < ? LIMIT ?)",
                (cutoff, PRUNE_CHUNK),
            ).rowcount
            return items, keys

        total = 0
        while True:  # in chunks, so that no commit holds the write lock for long
            items, keys = await self._write(op)
            total += items + keys
            if items < PRUNE_CHUNK and keys < PRUNE_CHUNK:
                return total

    # -- the order ledger ------------------------------------------------------------

    async def record_orders(
        self, order_ids: Sequence[str], step: LedgerStep, now: datetime, request_key: str | None = None
    ) -> LedgerWrite | None:
        ids = list(order_ids)
        ts = _ts(now)

        def op(conn: sqlite3.Connection) -> LedgerWrite | None:
            if request_key is not None:
                cur = conn.execute("INSERT OR IGNORE INTO request_keys (key, created_at) VALUES (?, ?)", (request_key, ts))
                if cur.rowcount == 0:
                    return None
            write = step(sqlite_ledger.load_state(conn, ids))
            sqlite_ledger.write_ledger(conn, write, now, _INSERT_ITEM)
            return write

        return await self._write(op)

    async def sweep_held(self, now: datetime, step: LedgerStep, retention: timedelta | None = None) -> Sweep:
        def op(conn: sqlite3.Connection) -> Sweep:
            state = sqlite_ledger.releasable(conn)
            released = step(state) if state.held else LedgerWrite()
            sqlite_ledger.write_ledger(conn, released, now, _INSERT_ITEM)
            expired = sqlite_ledger.expire_held(conn, now)
            pruned = 0 if retention is None else sqlite_ledger.prune_orders(conn, now, retention)
            return Sweep(released, expired, pruned)

        return await self._write(op)

    async def order_history(self, order_id: str) -> OrderHistory:
        return await self._read(lambda c: sqlite_ledger.history(c, order_id))


def _set_all(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in items:
        if fut.done():  # the caller gave up (cancelled); the work is done regardless
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
