"""The PostgreSQL backend: several gateway instances share one database.

What SQLite does with one writer thread, PostgreSQL does with row locks:
dispatchers in any number of processes claim due items with
``FOR UPDATE SKIP LOCKED`` and a lease, so two of them never take the same
row while both are alive, and a claim whose owner died is taken again once
its lease runs out (the model is RudderStack's job store). Each request's
enqueue is one statement; PostgreSQL's WAL flush is shared by concurrent
commits, so there is no group-commit queue here. The order ledger's SQL, and
how it locks orders across instances, is in ``postgres_ledger``.

The schema is created and migrated by the gateway itself (``gateway db
migrate``, and at every start). Migrations run under a transaction-level
advisory lock, so several instances starting at once migrate exactly once;
a database already newer than this code (during a rolling upgrade) is used
as it is, because migrations only ever add.

Errors that mean "the database cannot take this now" (connection refused or
lost, shutdown, disk full, too many connections, a deadlock, a timeout) are
``StorageUnavailable``, which the app answers with 503. Every write is one
statement or one transaction, so a failure leaves nothing half-written. No
message ever carries the connection URL: it may hold a password.

Times are ``timestamptz``; items, requests and held events ``json`` (the
text as written, so an operator can query it, and a ``\\u0000`` in an event
is stored as SQLite stores it, which ``jsonb`` would refuse).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import asyncpg
import orjson

from gateway.delivery import Delivery
from gateway.errors import BadRequest
from gateway.ledger import LEDGER_DESTINATION, LedgerWrite
from gateway.sender import PendingItem, RequestStatus, SentRequest
from gateway.storage import postgres_ledger, postgres_requests
from gateway.storage.postgres_errors import connect_failure
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
from gateway.storage_url import PostgresTarget, parse_storage_url

T = TypeVar("T")
log = logging.getLogger("gateway.storage")

MIGRATION_LOCK = 0x6761746577  # pg_advisory_xact_lock(bigint) key: "gatew", the same in every version
MIGRATION_TIMEOUT = 900.0  # seconds a migration statement (or the wait for another instance's) may take
DRY_RUN_CAP = 10_000
PRUNE_CHUNK = 5_000

# Each entry migrates the schema from its index to index + 1; append, never edit.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE outbox (
            id bigserial PRIMARY KEY,
            destination text NOT NULL,
            batch_key text NOT NULL,
            idempotency_key text NOT NULL UNIQUE,
            tag text NOT NULL,
            item json NOT NULL,
            status text NOT NULL DEFAULT 'pending',
            attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            next_attempt_at timestamptz NOT NULL,
            lease_until timestamptz,
            last_code text,
            last_message text,
            delivered_at timestamptz
        )""",
        # Serves claim (its order), ready_groups, stats and pending_count; pending rows only.
        """CREATE INDEX outbox_due ON outbox (destination, batch_key, next_attempt_at, id)
            WHERE status = 'pending'""",
        "CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE status = 'delivered'",
        """CREATE TABLE dead_letters (
            id bigserial PRIMARY KEY,
            destination text NOT NULL,
            batch_key text NOT NULL,
            idempotency_key text NOT NULL,
            tag text NOT NULL,
            item json NOT NULL,
            attempts integer NOT NULL,
            code text,
            message text,
            created_at timestamptz NOT NULL,
            failed_at timestamptz NOT NULL
        )""",
        """CREATE TABLE dry_runs (
            id bigserial PRIMARY KEY,
            destination text NOT NULL,
            batch_key text NOT NULL,
            item_count integer NOT NULL,
            request json NOT NULL,
            recorded_at timestamptz NOT NULL
        )""",
        "CREATE TABLE request_keys (key text PRIMARY KEY, created_at timestamptz NOT NULL)",
        "CREATE INDEX request_keys_created ON request_keys (created_at)",
    ),
    postgres_ledger.MIGRATION,  # the order ledger
    postgres_requests.MIGRATION,  # vendor requests processed later (Data Manager API request ids)
    postgres_ledger.ORDER_SYSTEM_MIGRATION,  # the order system's total, uploads followed, kept identifiers, hold reasons
    # Secrets the install makes for itself on first use (the key of consent's pseudonyms), never configured.
    ("CREATE TABLE install_secrets (name text PRIMARY KEY, secret bytea NOT NULL, created_at timestamptz NOT NULL)",),
]

_DUE = "status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
_ITEMS = """SELECT x.d, x.b, x.k, x.t, x.i::json, $6::timestamptz, x.n
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::timestamptz[]) AS x(d, b, k, t, i, n)"""
_INSERT_ITEMS = f"""INSERT INTO outbox (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)
    {_ITEMS} ON CONFLICT (idempotency_key) DO NOTHING"""
# The request key and the items in one statement (one round trip, atomic): the items go in only when
# the key is new. A second request with the same key waits on the key's unique index until the first
# commits, then finds it taken.
_ENQUEUE_KEYED = f"""WITH request AS (
        INSERT INTO request_keys (key, created_at) VALUES ($8, $6) ON CONFLICT DO NOTHING RETURNING 1
    ), items AS (
        INSERT INTO outbox (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)
        {_ITEMS} WHERE EXISTS (SELECT 1 FROM request)
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT EXISTS (SELECT 1 FROM request)"""
_INSERT_KEY = "INSERT INTO request_keys (key, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1"
# SKIP LOCKED passes over rows another claim holds; a row another claim leased and committed since this
# statement's snapshot is re-checked against _DUE on its newest version (READ COMMITTED), and dropped.
_CLAIM = f"""WITH due AS (
        SELECT id FROM outbox WHERE destination = $3 AND batch_key = $4 AND {_DUE}
        ORDER BY next_attempt_at, id LIMIT $5 FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o SET lease_until = $2,
        -- a lease that ran out means its dispatcher died mid-send: that send counts as an attempt
        attempts = o.attempts + (CASE WHEN o.lease_until IS NULL THEN 0 ELSE 1 END)
    FROM due WHERE o.id = due.id
    RETURNING o.id, o.idempotency_key, o.item, o.tag, o.attempts, o.created_at, o.next_attempt_at"""
_DEAD_COLUMNS = "destination, batch_key, idempotency_key, tag, item, attempts, code, message, created_at, failed_at"
_REPLAY = """INSERT INTO outbox (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)
    VALUES ($1, $2, $3, $4, $5::json, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1"""

# Errors that mean "the database cannot take this now", not "this call is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (a command or a wait for the pool) is one too
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, out of memory, too many connections
    asyncpg.exceptions.TransactionRollbackError,  # class 40: deadlock, serialization failure
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, or default_transaction_read_only
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # 55: "not currently accepting connections", lock_timeout
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # class 28: bad user or password
    asyncpg.exceptions.InvalidCatalogNameError,  # the database does not exist
    # The client's side of a broken connection (a protocol state it cannot leave), and a statement
    # cache made stale by a migration another instance ran: both are gone on the next try.
    asyncpg.exceptions._base.InternalClientError,
)
_NOT_UNAVAILABLE = (asyncpg.exceptions._base.DataError, asyncpg.exceptions._base.ClientConfigurationError)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _NOT_UNAVAILABLE):
        return False
    return isinstance(exc, _UNAVAILABLE) or isinstance(exc, asyncpg.InterfaceError)  # "connection is closed"


def _unavailable(exc: BaseException) -> StorageUnavailable:
    """The error's class and SQLSTATE only (raised ``from None``): asyncpg's messages can carry parts of the URL."""
    code = getattr(exc, "sqlstate", None)
    return StorageUnavailable(f"postgresql: {type(exc).__name__}" + (f" ({code})" if code else ""))


# PostgreSQL's text cannot hold U+0000, which SQLite stores: an id with one is refused as the
# caller's (items, requests and held events are json, where it is an escape and fine).
_NUL_IN_TEXT = (asyncpg.exceptions.CharacterNotInRepertoireError, asyncpg.exceptions.UntranslatableCharacterError)


def _nul_refused() -> BadRequest:
    return BadRequest(400, "an identifier in the request contains a NUL character")


def _readable(text: str | None) -> str | None:
    """A vendor's code or message, storable whatever the vendor sent."""
    return None if text is None else text.replace("\x00", "\ufffd")


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


def _count(status: str) -> int:
    """Rows affected, from asyncpg's command tag ("DELETE 42")."""
    return int(status.rsplit(" ", 1)[-1])


def _delivery_columns(deliveries: Sequence[Delivery], now: datetime) -> tuple[Any, ...]:
    """The deliveries as column arrays for one ``unnest`` insert: one round trip whatever their number."""
    return (
        [d.destination for d in deliveries],
        [d.batch_key for d in deliveries],
        [d.idempotency_key for d in deliveries],
        [d.tag for d in deliveries],
        [d.raw.decode() for d in deliveries],
        now,
        [now if d.not_before is None else max(now, _utc(d.not_before)) for d in deliveries],
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs back in the pool: nothing beyond the rollback asyncpg always does.

    asyncpg's default resets every released connection with a round trip
    (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``).
    Nothing here leaves session state (the advisory locks are transaction
    locks; no SET, LISTEN or cursor outlives a transaction), so that round
    trip would be pure cost. Without it, one-delivery enqueues through the
    pool ran about a quarter faster, with a quarter less client CPU and a
    third less server CPU each.
    """


async def _insert_deliveries(conn: asyncpg.Connection, deliveries: Sequence[Delivery], now: datetime) -> None:
    await conn.execute(_INSERT_ITEMS, *_delivery_columns(deliveries, _utc(now)))


class PostgresStorage(Storage):
    """``dsn`` is a postgresql:// URL; asyncpg also reads PGPASSWORD, PGSSLMODE and the other PG* variables."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        command_timeout: float = 10.0,
        dry_run_cap: int = DRY_RUN_CAP,
        target: PostgresTarget | None = None,
    ) -> None:
        self._dsn = dsn
        self._target = target or parse_storage_url(dsn)  # where, for messages: never the password
        self.pool_size = pool_size
        self.command_timeout = command_timeout
        self.dry_run_cap = dry_run_cap
        self.schema_version: int | None = None  # after open(): the database's schema version
        self.migrations_run = 0  # after open(): how many migrations this instance applied
        self._pool: asyncpg.Pool | None = None
        self._dry_runs_since_prune = 0

    def __repr__(self) -> str:  # never the DSN: it may hold a password
        return f"PostgresStorage(pool_size={self.pool_size})"

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=self.command_timeout,  # to connect
                command_timeout=self.command_timeout,
                server_settings={"application_name": "gateway", "jit": "off"},
                reset=_keep_session,
            )
        except Exception as exc:
            raise connect_failure(exc, self._target, self.command_timeout) from None
        try:
            await self.migrate()
        except asyncpg.exceptions.InsufficientPrivilegeError as exc:  # a user that may not create tables
            await self.close()
            raise connect_failure(exc, self._target, self.command_timeout) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.command_timeout)
            except (TimeoutError, *_UNAVAILABLE):
                pool.terminate()

    async def migrate(self) -> int:
        """Bring the schema to the newest version this code knows; returns how many migrations ran.

        Several instances may call it at once: the advisory lock makes the
        others wait, then find nothing left to do.
        """
        async def run(conn: asyncpg.Connection) -> tuple[int, int]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT)
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
                version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                for target in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[target]:
                        await conn.execute(statement, timeout=MIGRATION_TIMEOUT)
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", target + 1)
                return version, max(version, len(MIGRATIONS))

        before, after = await self._run(run)
        self.schema_version, self.migrations_run = after, after - before
        if before > len(MIGRATIONS):
            log.warning("database schema is newer than this gateway; using it as it is",
                        extra={"schema_version": before, "known": len(MIGRATIONS)})
        elif after > before:
            log.info("database schema migrated", extra={"from_version": before, "to_version": after})
        return self.migrations_run

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("postgresql: storage is not open")
        try:
            async with pool.acquire(timeout=self.command_timeout) as conn:
                return await fn(conn)
        except Exception as exc:
            if _is_unavailable(exc):
                raise _unavailable(exc) from None
            raise

    async def _transaction(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], **options: Any) -> T:
        async def run(conn: asyncpg.Connection) -> T:
            async with conn.transaction(**options):
                return await fn(conn)

        return await self._run(run)

    # -- the Storage interface -------------------------------------------------

    async def ping(self) -> bool:
        try:
            return await self._run(lambda c: c.fetchval("SELECT 1")) == 1
        except StorageUnavailable:
            return False

    async def write_problem(self) -> str | None:
        """None when the database answers and takes writes: a standby in recovery answers, and refuses them."""
        try:
            read_only = await self._run(
                lambda c: c.fetchval("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"))
        except StorageUnavailable as exc:
            return str(exc)
        return "postgresql: the database is read-only (a standby, or default_transaction_read_only)" if read_only else None

    async def enqueue(self, deliveries: Sequence[Delivery], now: datetime, request_key: str | None = None) -> bool:
        try:
            return await self._enqueue(deliveries, _utc(now), request_key)
        except _NUL_IN_TEXT:
            raise _nul_refused() from None

    async def _enqueue(self, deliveries: Sequence[Delivery], now: datetime, request_key: str | None) -> bool:
        if request_key is None:
            if deliveries:
                await self._run(lambda c: _insert_deliveries(c, deliveries, now))
            return True
        if not deliveries:
            return await self._run(lambda c: c.fetchval(_INSERT_KEY, request_key, now)) is not None
        columns = _delivery_columns(deliveries, now)
        return bool(await self._run(lambda c: c.fetchval(_ENQUEUE_KEYED, *columns, request_key)))

    async def ready_groups(self, now: datetime) -> list[GroupInfo]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT destination, batch_key, count(*), min(created_at) FROM outbox WHERE {_DUE}"
                " GROUP BY destination, batch_key",
                _utc(now),
            )
        )
        return [GroupInfo(r[0], r[1], r[2], r[3]) for r in rows]

    async def claim(
        self, destination: str, batch_key: str, limit: int, now: datetime, lease: timedelta
    ) -> list[PendingItem]:
        now = _utc(now)
        rows = await self._run(lambda c: c.fetch(_CLAIM, now, now + lease, destination, batch_key, limit))
        rows = sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"]))
        return [
            PendingItem(r["id"], r["idempotency_key"], None, r["tag"], r["attempts"], r["created_at"],
                        raw=r["item"].encode())
            for r in rows
        ]

    async def settle(
        self,
        now: datetime,
        delivered: Sequence[int] = (),
        retries: Sequence[Retry] = (),
        dead: Sequence[tuple[int, str | None, str | None]] = (),
    ) -> None:
        now = _utc(now)
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if delivered:
            statements.append((
                "UPDATE outbox SET status = 'delivered', delivered_at = $1, lease_until = NULL"
                " WHERE id = ANY($2::bigint[]) AND status = 'pending'",
                (now, list(delivered)),
            ))
        if retries:
            statements.append((
                """UPDATE outbox SET attempts = attempts + 1, next_attempt_at = x.n, last_code = x.c,
                       last_message = x.m, lease_until = NULL
                   FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[]) AS x(i, n, c, m)
                   WHERE outbox.id = x.i AND outbox.status = 'pending'""",
                ([r.id for r in retries], [_utc(r.next_attempt_at) for r in retries],
                 [_readable(r.code) for r in retries], [_readable(r.message) for r in retries]),
            ))
        if dead:
            statements.append((
                f"""WITH gone AS (
                        DELETE FROM outbox WHERE id = ANY($1::bigint[]) AND status = 'pending' RETURNING *
                    )
                    INSERT INTO dead_letters ({_DEAD_COLUMNS})
                    SELECT g.destination, g.batch_key, g.idempotency_key, g.tag, g.item, g.attempts + 1, x.c, x.m,
                           g.created_at, $4
                    FROM gone g JOIN unnest($1::bigint[], $2::text[], $3::text[]) WITH ORDINALITY AS x(i, c, m, n)
                      ON g.id = x.i
                    ORDER BY x.n""",
                ([d[0] for d in dead], [_readable(d[1]) for d in dead], [_readable(d[2]) for d in dead], now),
            ))
        if not statements:
            return

        async def run(conn: asyncpg.Connection) -> None:
            for sql, args in statements:
                await conn.execute(sql, *args)

        if len(statements) == 1:  # one statement is its own transaction
            await self._run(run)
        else:
            await self._transaction(run)

    async def release(self, ids: Sequence[int]) -> None:
        if ids:
            await self._run(lambda c: c.execute(
                "UPDATE outbox SET lease_until = NULL WHERE id = ANY($1::bigint[]) AND status = 'pending'", list(ids)
            ))

    async def stats(self, now: datetime) -> list[DestinationStats]:
        rows = await self._run(
            lambda c: c.fetch(
                "SELECT destination, count(*), min(created_at) FROM outbox WHERE status = 'pending' GROUP BY destination"
            )
        )
        return [DestinationStats(r[0], r[1], r[2]) for r in rows]

    async def pending_count(self) -> int:
        return await self._run(lambda c: c.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'"))

    async def install_secret(self, name: str) -> bytes:
        secret = new_install_secret()

        async def run(conn: asyncpg.Connection) -> bytes:
            # ON CONFLICT then read: instances starting together on one database all keep the first one's.
            await conn.execute("INSERT INTO install_secrets (name, secret, created_at) VALUES ($1, $2, now())"
                               " ON CONFLICT (name) DO NOTHING", name, secret)
            return bytes(await conn.fetchval("SELECT secret FROM install_secrets WHERE name = $1", name))

        return await self._run(run)

    async def record_dry_run(
        self, destination: str, batch_key: str, request: dict[str, Any], item_count: int, now: datetime
    ) -> None:
        self._dry_runs_since_prune += 1
        prune = self._dry_runs_since_prune >= max(1, min(100, self.dry_run_cap // 10))
        if prune:
            self._dry_runs_since_prune = 0
        args = (destination, batch_key, item_count, orjson.dumps(request).decode(), _utc(now))
        insert = ("INSERT INTO dry_runs (destination, batch_key, item_count, request, recorded_at)"
                  " VALUES ($1, $2, $3, $4::json, $5)")

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(insert, *args)
            if prune:  # each instance prunes after its own records; the cap holds across instances
                await conn.execute(
                    "DELETE FROM dry_runs WHERE id < (SELECT id FROM dry_runs ORDER BY id DESC LIMIT 1 OFFSET $1)",
                    self.dry_run_cap - 1,
                )

        await (self._transaction(run) if prune else self._run(run))

    async def list_dry_runs(self, last: int) -> list[DryRunRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                "SELECT id, destination, batch_key, item_count, request, recorded_at FROM dry_runs"
                " ORDER BY id DESC LIMIT $1",
                min(last, self.dry_run_cap),
            )
        )
        return [DryRunRecord(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5]) for r in rows]

    async def track_request(self, request: SentRequest, next_check_at: datetime) -> None:
        await self._run(lambda conn: postgres_requests.insert(conn, request, _utc(next_check_at)))

    async def due_requests(self, now: datetime, limit: int) -> list[TrackedRequest]:
        return await self._run(lambda conn: postgres_requests.due(conn, _utc(now), limit))

    async def update_request(self, id_: int, status: RequestStatus, checked_at: datetime,
                             next_check_at: datetime | None) -> None:
        await self._run(lambda conn: postgres_requests.update(
            conn, id_, status, _utc(checked_at), None if next_check_at is None else _utc(next_check_at)))

    async def list_requests(self, limit: int = 100) -> list[TrackedRequest]:
        return await self._run(lambda conn: postgres_requests.latest(conn, limit))

    async def dead_letter_delivered(self, keys: Sequence[str], code: str, message: str, now: datetime) -> int:
        return await self._run(lambda conn: postgres_requests.dead_letter_delivered(
            conn, keys, code, message, _utc(now), _DEAD_COLUMNS))

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._run(
            lambda c: c.fetch(f"SELECT id, {_DEAD_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT $1", limit)
        )
        return [
            DeadLetter(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6], r[7], r[8], r[9], r[10]) for r in rows
        ]

    async def replay_dead_letters(self, ids: Sequence[int] | None, now: datetime) -> int:
        now = _utc(now)
        wanted = None if ids is None else list(dict.fromkeys(ids))  # in the order given, each once

        async def run(conn: asyncpg.Connection) -> int:
            # DELETE ... RETURNING: two operators replaying at once each get a dead letter at most once.
            if wanted is None:
                rows = sorted(await conn.fetch("DELETE FROM dead_letters RETURNING *"), key=lambda r: r["id"])
            else:
                found = {r["id"]: r for r in await conn.fetch(
                    "DELETE FROM dead_letters WHERE id = ANY($1::bigint[]) RETURNING *", wanted
                )}
                rows = [found[i] for i in wanted if i in found]
            for r in rows:
                if r["destination"] == LEDGER_DESTINATION:  # a change the ledger could not apply: held again, not sent
                    await postgres_ledger.rehold(conn, r["item"], now)
                    continue
                args = (r["destination"], r["batch_key"], r["idempotency_key"], r["tag"], r["item"], r["created_at"], now)
                if await conn.fetchval(_REPLAY, *args) is None:
                    # The key came back meanwhile (the same request was sent again): keep both, told apart.
                    renamed = f"{r['idempotency_key']}#replay-{r['id']}"
                    await conn.fetchval(_REPLAY, *args[:2], renamed, *args[3:])
            return len(rows)

        return await self._transaction(run)

    async def prune(self, now: datetime, retention: timedelta) -> int:
        cutoff = _utc(now) - retention
        total = 0
        while True:  # in chunks: no statement holds many row locks for long
            items = _count(await self._run(lambda c: c.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 'delivered'"
                " AND delivered_at < $1 LIMIT $2)",
                cutoff,
                PRUNE_CHUNK,
            )))
            keys = _count(await self._run(lambda c: c.execute(
                "DELETE FROM request_keys WHERE key IN (SELECT key FROM request_keys WHERE created_at < $1 LIMIT $2)",
                cutoff,
                PRUNE_CHUNK,
            )))
            requests = await self._run(lambda c: postgres_requests.prune(c, cutoff, PRUNE_CHUNK))
            total += items + keys + requests
            if max(items, keys, requests) < PRUNE_CHUNK:
                return total

    # -- the order ledger ------------------------------------------------------------

    async def record_orders(
        self, order_ids: Sequence[str], step: LedgerStep, now: datetime, request_key: str | None = None
    ) -> LedgerWrite | None:
        """The request key, the order locks, the read, the step and the writes: one transaction.

        The step is not retried: it is called at most once per call (it may
        change the events it was built over), so a deadlock or a lost
        connection is StorageUnavailable and the sender tries again.
        """
        ids = sorted(set(order_ids))
        now = _utc(now)

        async def run(conn: asyncpg.Connection) -> LedgerWrite | None:
            if request_key is not None and await conn.fetchval(_INSERT_KEY, request_key, now) is None:
                return None
            await postgres_ledger.lock_orders(conn, ids)
            write = step(await postgres_ledger.load_state(conn, ids))
            await postgres_ledger.write_ledger(conn, write, now, _insert_deliveries)
            return write

        try:
            return await self._transaction(run)
        except _NUL_IN_TEXT:
            raise _nul_refused() from None

    async def sweep_held(self, now: datetime, step: LedgerStep, retention: timedelta | None = None) -> Sweep:
        now = _utc(now)

        async def run(conn: asyncpg.Connection) -> Sweep:
            state = await postgres_ledger.releasable(conn, now)
            released = step(state) if state.held else LedgerWrite()
            await postgres_ledger.write_ledger(conn, released, now, _insert_deliveries)
            expired = await postgres_ledger.expire_held(conn, now)
            pruned = 0 if retention is None else await postgres_ledger.prune_orders(conn, now, retention)
            return Sweep(released, expired, pruned)

        return await self._transaction(run)

    async def order_history(self, order_id: str) -> OrderHistory:
        return await self._transaction(
            lambda c: postgres_ledger.history(c, order_id), isolation="repeatable_read", readonly=True
        )
