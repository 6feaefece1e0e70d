"""The SQLite backend: one file in WAL mode, written through group commit.

One writer thread owns the write connection. A caller puts an operation (a
function of that connection) on a queue and awaits a future; the writer takes
the first operation, drains up to ``MAX_GROUP`` more that are already waiting,
and runs them all in one ``BEGIN IMMEDIATE ... COMMIT``, each inside its own
SAVEPOINT so that one failing operation fails only its own caller. N requests
that arrive together therefore share one fsync, which is what makes
``synchronous=FULL`` (an acknowledged enqueue survives power loss) affordable.

Savepoints are not free, though: while one is open SQLite keeps a copy of
each page the first time it changes, and with two more statements per
operation that is a sizeable share of what a small enqueue costs; so is a
statement per request, each one a round trip through the driver. So the
operations at the head of a group that only read and write the database
(replayable ones: enqueues, claims, settles, ...) run without savepoints,
and the enqueues among them are merged: their request keys are inserted one
by one, in queue order (each caller learns whether its key was new; the
first of two requests with one key wins), then the rows of every request
whose key was new go in together through a few multi-row INSERTs, in queue
order, so that ``OR IGNORE`` keeps the first of two deliveries with one
idempotency key as separate statements would. If anything there fails, the
whole transaction is rolled back and the group runs again the careful way,
every operation in a savepoint of its own, so that only the bad one fails
and nothing of it is written. Running them twice is safe because the
rollback undid all they did. From the first operation that may not run twice
(a ledger step, a sweep) to the end of the group, every operation has its
own savepoint from the start.

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
import itertools
import queue
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence, TypeVar

import orjson

from gateway.delivery import Delivery
from gateway.ledger import LEDGER_DESTINATION, LedgerWrite
from gateway.sender import PendingItem, RequestStatus, SentRequest
from gateway.storage import sqlite_ledger, sqlite_requests
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
    TrackedRequest,
    new_install_secret,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]
# What the writer's queue holds: the operation, its caller's future and loop, and whether the
# operation is replayable: it only reads and writes the database, so it may run again after a
# rollback (see the module docstring).
Queued = tuple[Op[Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop, bool]

MAX_GROUP = 512  # operations committed together at most
# WAL pages after which the commit that crossed them copies the log into the database file and syncs it
# (SQLite's automatic checkpoint, run by the writer connection right after its COMMIT). Every caller of that
# group, and every request queued behind it, waits for the copy, so its size sets the tail of the answer
# times. On a quiet 2-core VM with the outbox on disk, at half the maximum rate (BENCHMARKS.md, "An eighth
# pass"): SQLite's default 1,000 pages gave GA4 hits a p99 of 10.4-10.7 ms and webhooks 11.0-11.3 ms; 250
# pages 6.7 and 6.9-8.5 ms, for a maximum rate 4-9% lower; 10,000 pages 55.6 and 33.2 ms. Checkpoints taken
# out of the commit, from a thread of their own or between groups, made both tails worse.
CHECKPOINT_PAGES = 250
# Waiting for another process's write lock (the dispatcher process's claim or settle): the first retry
# after this many seconds, doubling up to BUSY_STEP_MAX. SQLite's own busy handler sleeps 1, 2, 5, 10 ms...
# between tries, so a request would wait milliseconds for a lock held for a fraction of one.
BUSY_STEP = 0.0001
BUSY_STEP_MAX = 0.002
SQLITE_BUSY = 5
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
    sqlite_requests.MIGRATION,  # vendor requests processed later (Data Manager API request ids)
    sqlite_ledger.ORDER_SYSTEM_MIGRATION,  # the order system's total, uploads followed, kept identifiers, hold reasons
    # Secrets the install makes for itself on first use (the key of consent's pseudonyms), never configured.
    ("CREATE TABLE install_secrets (name TEXT PRIMARY KEY, secret BLOB NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID",),
]

_INSERT_ITEM = """INSERT OR IGNORE INTO outbox
    (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
_INSERT_REQUEST_KEY = "INSERT OR IGNORE INTO request_keys (key, created_at) VALUES (?, ?)"
# Rows per multi-row outbox INSERT at most: 7 parameters each stays far below SQLite's oldest
# limit of 999 parameters per statement. Smaller remainders go in halves (32, 16, ... 1 rows),
# so that at most seven statement texts exist and all of them stay in the statement cache.
ROWS_PER_INSERT = 64
_INSERT_ROWS = {
    n: _INSERT_ITEM.replace("VALUES (?, ?, ?, ?, ?, ?, ?)", "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n))
    for n in (1 << k for k in range(ROWS_PER_INSERT.bit_length()))
}
_DUE = "status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
# The order is outbox_due's own, so a claim reads its LIMIT rows off the index: with "next_attempt_at, id"
# SQLite sorted every row sharing one next_attempt_at (a replay of 20,000 dead letters: 17 ms per claim).
_SELECT_DUE = f"""SELECT id, idempotency_key, item, tag, attempts, created_at, lease_until FROM outbox
    WHERE destination = ? AND batch_key = ? AND {_DUE} ORDER BY next_attempt_at, lease_until, created_at LIMIT ?"""
_READY_GROUPS = f"""SELECT destination, batch_key, count(*), min(created_at) FROM outbox
    WHERE {_DUE} GROUP BY destination, batch_key"""
_DEAD_COLUMNS = "destination, batch_key, idempotency_key, tag, item, attempts, code, message, created_at, failed_at"


def _ts(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


PROBE_TIMEOUT = 0.5  # seconds /readyz waits for the write lock


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


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert outbox rows with as few statements as the cached texts allow (one step each, not one per row)."""
    done, total, size = 0, len(rows), ROWS_PER_INSERT
    while done < total:
        while total - done < size:
            size >>= 1
        conn.execute(_INSERT_ROWS[size], list(itertools.chain.from_iterable(rows[done : done + size])))
        done += size


class _Enqueue:
    """A queued enqueue: the rows of one request and its request key, built on the caller's side.

    The writer recognises it by type and runs neighbouring ones together
    (``_run_enqueues``); called on its own it is an ordinary operation, which
    is how a failed run is replayed one request at a time.
    """

    __slots__ = ("rows", "request_key", "ts")

    def __init__(self, rows: list[tuple[Any, ...]], request_key: str | None, ts: float) -> None:
        self.rows = rows
        self.request_key = request_key
        self.ts = ts

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return _run_enqueues(conn, [self])[0]


def _run_enqueues(conn: sqlite3.Connection, ops: list[_Enqueue]) -> list[bool]:
    """Store several enqueues at once; each one's result is what it would have been on its own.

    Request keys go first and one by one, in queue order, so the first of two
    requests with the same key wins and the second stores nothing. The rows
    of every accepted request then go in together, in queue order, so that
    ``OR IGNORE`` keeps the first of two deliveries with the same key, as
    separate statements would.
    """
    results: list[bool] = []
    rows: list[tuple[Any, ...]] = []
    for op in ops:
        if op.request_key is not None:
            if conn.execute(_INSERT_REQUEST_KEY, (op.request_key, op.ts)).rowcount == 0:
                results.append(False)
                continue
        rows += op.rows
        results.append(True)
    if rows:
        _insert_rows(conn, rows)
    return results


class SQLiteStorage(Storage):
    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        busy_timeout: float = 5.0,
        dry_run_cap: int = DRY_RUN_CAP,
        checkpoint_pages: int = CHECKPOINT_PAGES,
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.checkpoint_pages = checkpoint_pages
        self.busy_timeout = busy_timeout
        self.dry_run_cap = dry_run_cap
        self.transactions = 0  # group commits done (for tests and benchmarks)
        self._queue: queue.SimpleQueue[Queued | None]
        self._queue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._read_conn: sqlite3.Connection | None = None
        self._closed = False
        self._dry_runs_since_prune = 0
        self._writing = False  # the writer thread takes operations (a flag: cheaper per call than is_alive())

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
            # SQLite checkpoints inside the commit that takes the WAL past this many pages; see CHECKPOINT_PAGES.
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(self.checkpoint_pages)}")
            self._migrate(conn)
            conn.execute("PRAGMA busy_timeout = 0")  # from here on _begin waits for the write lock, in finer steps
        except BaseException as exc:
            if conn is not None:
                conn.close()
            ready.set_exception(_unavailable(exc))
            return
        self._writing = True
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
                    self._resolve(batch, [(False, exc)] * len(batch))  # one bug: every caller gets the same exception
        finally:
            self._writing = False
            conn.close()
            while True:  # anything queued as the writer stopped is refused, not left waiting forever
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    self._resolve([left], [(False, StorageUnavailable("sqlite: storage is not open"))])

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, retried in short steps while another process holds the write lock.

        The writer's connection has no busy timeout of its own once migrated
        (``_run_writer``): in WAL mode taking the write lock is where one
        writer waits for another. This gives up after ``busy_timeout``, as
        SQLite's handler would (the caller then answers 503); only the wait
        in between is finer.
        """
        deadline = 0.0
        step = BUSY_STEP
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", SQLITE_BUSY) != SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.busy_timeout
                elif now >= deadline:
                    raise
            time.sleep(step)
            step = min(BUSY_STEP_MAX, step * 2)

    def _commit_group(self, conn: sqlite3.Connection, batch: list[Queued]) -> None:
        try:
            self._begin(conn)
        except sqlite3.Error as exc:
            self._resolve(batch, [(False, _unavailable(exc)) for _ in batch])
            return
        outcomes: list[tuple[bool, Any]] = []
        # The replayable operations at the head of the group (usually all of it) run without
        # savepoints (see the module docstring). If one of them fails, the transaction is rolled
        # back and the group runs again, each operation in a savepoint of its own, to find whose
        # failure it was.
        free = 0
        while free < len(batch) and batch[free][3]:
            free += 1
        if free:
            try:
                self._run_free(conn, batch[:free], outcomes)
            except Exception:  # noqa: BLE001 - found again below, in a savepoint of its own
                outcomes = []
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._begin(conn)
                except sqlite3.Error as exc:
                    self._resolve(batch, [(False, _unavailable(exc)) for _ in batch])
                    return
                free = 0
        aborted = self._run_careful(conn, batch, free, outcomes)
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
            outcomes += [(False, StorageUnavailable(reason)) for _ in range(len(batch) - len(outcomes))]
        self._resolve(batch, outcomes)

    @staticmethod
    def _run_free(conn: sqlite3.Connection, batch: list[Queued], outcomes: list[tuple[bool, Any]]) -> None:
        """Run replayable operations without savepoints, neighbouring enqueues together; raises on the first failure."""
        i, n = 0, len(batch)
        while i < n:
            op = batch[i][0]
            if type(op) is _Enqueue:
                j = i + 1
                while j < n and type(batch[j][0]) is _Enqueue:
                    j += 1
                outcomes += [(True, result) for result in _run_enqueues(conn, [e for e, _, _, _ in batch[i:j]])]
                i = j
            else:
                outcomes.append((True, op(conn)))
                i += 1

    @staticmethod
    def _run_careful(
        conn: sqlite3.Connection, batch: list[Queued], start: int, outcomes: list[tuple[bool, Any]]
    ) -> BaseException | None:
        """Run ``batch[start:]``, each operation in a savepoint of its own, so that a failure is its caller's alone.

        Appends one outcome per operation run. Returns why the whole
        transaction is lost when it is: the operations after the one that lost
        it are not run and have no outcome.
        """
        for op, _, _, _ in batch[start:]:
            try:
                conn.execute("SAVEPOINT op")
                value = op(conn)
                conn.execute("RELEASE op")
            except Exception as exc:  # noqa: BLE001 - reported to the caller, the thread lives on
                outcomes.append((False, _unavailable(exc)))
                if not conn.in_transaction:  # SQLite rolled the whole transaction back (I/O error, ...)
                    return StorageUnavailable("sqlite: the transaction was rolled back")
                try:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                except sqlite3.Error as rb_exc:
                    return _unavailable(rb_exc)
                continue
            outcomes.append((True, value))
        return None

    @staticmethod
    def _resolve(batch: list[Queued], outcomes: list[tuple[bool, Any]]) -> None:
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, fut, loop, _), (ok, value) in zip(batch, outcomes):
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

    def _write(self, op: Op[T], replayable: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` for the next group commit; the future holds its return value.

        ``replayable`` says that ``op`` only reads and writes the database, so
        that after a rollback it may run again: the writer then runs it without
        a savepoint of its own (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self._closed or not self._writing:
            fut.set_exception(StorageUnavailable("sqlite: storage is not open"))
        else:
            self._queue.put((op, fut, loop, replayable))
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

    async def write_problem(self) -> str | None:
        """Take the write lock for a moment, on a connection of its own, the way every commit begins.

        Another process holding the lock (a ``sqlite3`` shell left in a
        transaction, a second gateway on the same file) makes every commit
        wait ``busy_timeout`` and fail; this says so in at most ``PROBE_TIMEOUT``.
        """
        if self._closed or not self._writing:
            return "sqlite: storage is not open"

        def probe() -> str | None:
            try:
                conn = sqlite3.connect(self.path, timeout=PROBE_TIMEOUT, isolation_level=None)
            except sqlite3.Error as exc:
                return f"sqlite: {exc}"
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return None
            except sqlite3.Error as exc:
                return f"sqlite: cannot take the write lock: {exc}"
            finally:
                conn.close()

        return await asyncio.get_running_loop().run_in_executor(self._reader, probe)

    async def enqueue(self, deliveries: Sequence[Delivery], now: datetime, request_key: str | None = None) -> bool:
        ts = _ts(now)
        rows = [
            (
                d.destination,
                d.batch_key,
                d.idempotency_key,
                d.tag,
                d.raw,
                ts,
                ts if d.not_before is None else max(ts, _ts(d.not_before)),
            )
            for d in deliveries
        ]
        if request_key is None and not rows:
            return True
        return await self._write(_Enqueue(rows, request_key, ts), replayable=True)

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

        rows = await self._write(op, replayable=True)
        return [
            PendingItem(id=id_, idempotency_key=key, item=None, tag=tag, attempts=attempts, created_at=_dt(created),
                        raw=bytes(item))
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

        await self._write(op, replayable=True)

    async def release(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        rows = [(id_,) for id_ in ids]
        await self._write(
            lambda c: c.executemany("UPDATE outbox SET lease_until = NULL WHERE id = ?", rows), replayable=True
        )

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

    async def install_secret(self, name: str) -> bytes:
        secret = new_install_secret()
        now = datetime.now(timezone.utc).timestamp()

        def op(conn: sqlite3.Connection) -> bytes:
            # INSERT OR IGNORE then read: two instances starting together on one file keep the first one's.
            conn.execute("INSERT OR IGNORE INTO install_secrets (name, secret, created_at) VALUES (?, ?, ?)",
                         (name, secret, now))
            return bytes(conn.execute("SELECT secret FROM install_secrets WHERE name = ?", (name,)).fetchone()[0])

        return await self._write(op, replayable=True)

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

        await self._write(op, replayable=True)

    async def list_dry_runs(self, last: int) -> list[DryRunRecord]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id, destination, batch_key, item_count, request, recorded_at FROM dry_runs"
                " ORDER BY id DESC LIMIT ?",
                (min(last, self.dry_run_cap),),
            ).fetchall()
        )
        return [DryRunRecord(id_, dest, key, n, orjson.loads(req), _dt(at)) for id_, dest, key, n, req, at in rows]

    async def track_request(self, request: SentRequest, next_check_at: datetime) -> None:
        await self._write(lambda conn: sqlite_requests.insert(conn, request, next_check_at), replayable=True)

    async def due_requests(self, now: datetime, limit: int) -> list[TrackedRequest]:
        return await self._read(lambda conn: sqlite_requests.due(conn, now, limit))

    async def update_request(self, id_: int, status: RequestStatus, checked_at: datetime,
                             next_check_at: datetime | None) -> None:
        await self._write(lambda conn: sqlite_requests.update(conn, id_, status, checked_at, next_check_at),
                          replayable=True)

    async def list_requests(self, limit: int = 100) -> list[TrackedRequest]:
        return await self._read(lambda conn: sqlite_requests.latest(conn, limit))

    async def dead_letter_delivered(self, keys: Sequence[str], code: str, message: str, now: datetime) -> int:
        return await self._write(lambda conn: sqlite_requests.dead_letter_delivered(
            conn, keys, code, message, now, _DEAD_COLUMNS))

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
                if dest == LEDGER_DESTINATION:  # a change the ledger could not apply: held again, not sent
                    sqlite_ledger.rehold(conn, item, now)
                    conn.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
                    continue
                values = (dest, key, ikey, tag, item, created, ts)
                if conn.execute(_INSERT_ITEM, values).rowcount == 0:
                    # The key came back meanwhile (the same request was sent again): keep both, told apart.
                    conn.execute(_INSERT_ITEM, (dest, key, f"{ikey}#replay-{id_}", tag, item, created, ts))
                conn.execute("DELETE FROM dead_letters WHERE id = ?", (id_,))
            return len(rows)

        return await self._write(op, replayable=True)

    async def prune(self, now: datetime, retention: timedelta) -> int:
        cutoff = _ts(now) - retention.total_seconds()

        def op(conn: sqlite3.Connection) -> tuple[int, int, int]:
            items = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 'delivered'"
                " AND delivered_at < ? LIMIT ?)",
                (cutoff, PRUNE_CHUNK),
            ).rowcount
            keys = conn.execute(
                "DELETE FROM request_keys WHERE key IN (SELECT key FROM request_keys WHERE created_at < ? LIMIT ?)",
                (cutoff, PRUNE_CHUNK),
            ).rowcount
            requests = sqlite_requests.prune(conn, _dt(cutoff), PRUNE_CHUNK)
            return items, keys, requests

        total = 0
        while True:  # in chunks, so that no commit holds the write lock for long
            counts = await self._write(op, replayable=True)
            total += sum(counts)
            if max(counts) < PRUNE_CHUNK:
                return total

    # -- the order ledger ------------------------------------------------------------

    async def record_orders(
        self, order_ids: Sequence[str], step: LedgerStep, now: datetime, request_key: str | None = None
    ) -> LedgerWrite | None:
        ids = list(order_ids)
        ts = _ts(now)

        def op(conn: sqlite3.Connection) -> LedgerWrite | None:
            if request_key is not None:
                cur = conn.execute(_INSERT_REQUEST_KEY, (request_key, ts))
                if cur.rowcount == 0:
                    return None
            write = step(sqlite_ledger.load_state(conn, ids))
            sqlite_ledger.write_ledger(conn, write, now, _INSERT_ITEM)
            return write

        return await self._write(op)

    async def sweep_held(self, now: datetime, step: LedgerStep, retention: timedelta | None = None) -> Sweep:
        def op(conn: sqlite3.Connection) -> Sweep:
            state = sqlite_ledger.releasable(conn, now)
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
