"""What only PostgreSQL shows: several instances on one database, its migrations, its server going away.

Two ``PostgresStorage`` objects have two connection pools, which is what two
gateway instances are to the database; the storage contract itself runs
against PostgreSQL in ``test_storage.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import AsyncIterator, Callable

import aiohttp
import asyncpg
import pytest

from gateway.cli import main as gateway_main
from gateway.delivery import Delivery
from gateway.errors import BadRequest
from gateway.ledger import AppliedChange, LedgerState, LedgerWrite, Order
from gateway.storage import postgres
from gateway.storage.base import Retry, StorageUnavailable
from gateway.storage.postgres import PostgresStorage
from tests.conftest import container_from
from tests.fakes.http_sink import HttpSink
from tests.postgres import ADMIN_URL, fresh_database, shared_database
from tests.running import serve_in_loop, wait_until

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
ORDER = Order(order_id="ORD-1", conversion_time=T0 - timedelta(days=1), recorded_at=T0, value=Decimal("129.95"),
              currency="EUR", gclid="gclid-1", source="order_webhook")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def delivery(key: str) -> Delivery:
    return Delivery("http_request", "hook", key, {"event_name": "purchase", "key": key}, "hook")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def two_instances(database: str) -> AsyncIterator[tuple[PostgresStorage, PostgresStorage]]:
    first, second = PostgresStorage(database, pool_size=4), PostgresStorage(database, pool_size=4)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


async def admin(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


# -- migrations ------------------------------------------------------------------------------------


async def test_instances_starting_at_once_migrate_the_schema_exactly_once(database: str) -> None:
    stores = [PostgresStorage(database, pool_size=1) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        runs = sorted(s.migrations_run for s in stores)
        versions = {s.schema_version for s in stores}
    finally:
        await asyncio.gather(*(s.close() for s in stores))

    assert runs == [0, 0, 0, 0, 0, len(postgres.MIGRATIONS)]
    assert versions == {len(postgres.MIGRATIONS)}
    rows = await admin(database, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, len(postgres.MIGRATIONS) + 1))


async def test_a_database_at_an_older_version_is_migrated_forward_and_keeps_its_rows(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        for statement in postgres.MIGRATIONS[0]:
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_version VALUES (1)")
        await conn.execute(
            "INSERT INTO outbox (destination, batch_key, idempotency_key, tag, item, created_at, next_attempt_at)"
            " VALUES ('http_request', 'hook', 'before-upgrade', 'hook', '{\"n\": 1}', $1, $1)",
            T0,
        )
    finally:
        await conn.close()

    store = PostgresStorage(database)
    await store.open()
    try:
        assert (store.migrations_run, store.schema_version) == (len(postgres.MIGRATIONS) - 1, len(postgres.MIGRATIONS))
        assert [p.idempotency_key for p in await store.claim("http_request", "hook", 10, T0, LEASE)] == ["before-upgrade"]
        assert (await store.order_history("ORD-1")).order is None  # the ledger's tables exist now
    finally:
        await store.close()


def test_gateway_db_migrate_creates_the_schema_and_prints_its_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with shared_database() as url:
        config = tmp_path / "container.yaml"
        config.write_text(f"storage:\n  url: {url}\n")

        assert gateway_main(["db", "migrate", "--config", str(config)]) == 0
        assert gateway_main(["db", "migrate", "--config", str(config)]) == 0

    latest = len(postgres.MIGRATIONS)
    assert capsys.readouterr().out.splitlines() == [
        f"schema at version {latest} ({latest} migration(s) applied)",
        f"schema at version {latest} (up to date)",
    ]


# -- several instances ---------------------------------------------------------------------------


async def test_two_instances_claiming_one_group_at_once_never_get_the_same_item(
    two_instances: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_instances
    keys = [f"k{i:03}" for i in range(400)]
    await first.enqueue([delivery(k) for k in keys], T0)
    claimed: dict[str, list[str]] = {"first": [], "second": []}

    async def claimer(name: str, store: PostgresStorage) -> None:
        while items := await store.claim("http_request", "hook", 7, at(1), LEASE):
            claimed[name].extend(p.idempotency_key for p in items)

    await asyncio.gather(*(claimer(n, s) for n, s in (("first", first), ("second", second)) for _ in range(4)))

    assert set(claimed["first"]).isdisjoint(claimed["second"])
    assert sorted(claimed["first"] + claimed["second"]) == keys
    assert claimed["first"] and claimed["second"]  # both took part


async def test_a_lease_that_runs_out_lets_the_other_instance_take_the_item_over(
    two_instances: tuple[PostgresStorage, PostgresStorage],
) -> None:
    crashed, survivor = two_instances
    await crashed.enqueue([delivery("a"), delivery("b")], T0)
    (a, b) = await crashed.claim("http_request", "hook", 10, T0, LEASE)
    await crashed.settle(at(1), delivered=[b.id])
    await crashed.close()  # the instance dies with "a" claimed and not settled

    assert await survivor.claim("http_request", "hook", 10, at(29), LEASE) == []
    assert await survivor.ready_groups(at(29)) == []
    taken = await survivor.claim("http_request", "hook", 10, at(30), LEASE)
    # The crashed instance's send counts as an attempt: it may have reached the vendor.
    assert [(p.id, p.idempotency_key, p.attempts) for p in taken] == [(a.id, "a", 1)]
    await survivor.settle(at(31), retries=[Retry(a.id, at(40), "http_500", None)])
    assert [(p.idempotency_key, p.attempts) for p in await survivor.claim("http_request", "hook", 10, at(40), LEASE)] == [
        ("a", 2)
    ]


def refund_step(amount: str, seen: list[Decimal]) -> Callable[[LedgerState], LedgerWrite]:
    """A refund decided from what the step is given: a lost update would show as a wrong total."""
    def step(state: LedgerState) -> LedgerWrite:
        order = state.orders["ORD-1"]
        change_id = f"r{len(order.change_ids) + 1}"
        refunded = order.refunded + Decimal(amount)
        seen.append(order.refunded)
        updated = replace(order, refunded=refunded, change_ids=order.change_ids | {change_id})
        change = AppliedChange("ORD-1", change_id, "refund", T0, T0, "RESTATEMENT", "partial_refund",
                               Decimal(amount), "EUR", order.value - refunded if order.value is not None else None)
        return LedgerWrite(orders={"ORD-1": updated}, changes=[change])
    return step


async def test_refunds_of_one_order_through_two_instances_at_once_add_up(
    two_instances: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_instances
    await first.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": ORDER}), T0)
    seen: list[Decimal] = []

    await asyncio.gather(*(
        store.record_orders(["ORD-1"], refund_step("2.50", seen), at(n))
        for n in range(20) for store in (first, second)
    ))

    history = await second.order_history("ORD-1")
    assert history.order is not None
    assert (history.order.refunded, history.order.retained) == (Decimal("100.00"), Decimal("29.95"))
    assert sorted(seen) == [Decimal("2.50") * n for n in range(40)]  # each decided from the one before
    assert sorted(c.change_id for c in history.changes) == sorted(f"r{n}" for n in range(1, 41))


async def test_two_first_sightings_of_one_order_through_two_instances_record_it_once(
    two_instances: tuple[PostgresStorage, PostgresStorage],
) -> None:
    def sighting(n: int) -> Callable[[LedgerState], LedgerWrite]:
        def step(state: LedgerState) -> LedgerWrite:
            if "ORD-1" in state.orders:
                return LedgerWrite()  # seen before: nothing fires
            return LedgerWrite(orders={"ORD-1": ORDER}, deliveries=[delivery(f"conversion-{n}")],
                               order_deliveries=[("ORD-1", f"conversion-{n}")])
        return step

    first, second = two_instances
    await asyncio.gather(*(
        store.record_orders(["ORD-1", "ORD-2"], sighting(n), T0) for n in range(10) for store in (first, second)
    ))

    assert await first.pending_count() == 1
    assert len((await second.order_history("ORD-1")).deliveries) == 1


async def test_two_gateways_on_one_database_deliver_every_hit_once(database: str, tmp_path: Path) -> None:
    async with HttpSink() as sink:
        yaml = f"""
storage:
  url: {database}
  pool_size: 4
delivery:
  poll_interval: 20ms
clients:
  - type: ga4
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: {sink.url}/hook
"""
        container = container_from(yaml, tmp_path / "unused.db")
        async with serve_in_loop(container) as one, serve_in_loop(container) as two:
            async with aiohttp.ClientSession() as session:
                for n in range(60):
                    base = (one, two)[n % 2]
                    async with session.get(f"{base}/g/collect?v=2&tid=G-TEST1&cid=1.2&en=page_view&ep.n={n}") as r:
                        assert r.status == 204
            await wait_until(lambda: len(sink.requests) >= 60)
            await asyncio.sleep(0.3)  # time for a second copy, were one coming

    sent = sorted(int(r.json()["extra"]["n"]) for r in sink.requests)
    assert sent == list(range(60))


async def test_an_id_with_a_nul_character_is_refused_as_the_callers_and_nothing_is_stored(database: str) -> None:
    # PostgreSQL's text cannot hold U+0000; inside an item (json) it is fine.
    store = PostgresStorage(database)
    await store.open()
    try:
        with pytest.raises(BadRequest) as refused:
            await store.enqueue([delivery("ok"), delivery("event\x00id")], T0, request_key="req-1")
        opening = LedgerWrite(orders={"ORD\x001": replace(ORDER, order_id="ORD\x001")})
        with pytest.raises(BadRequest):
            await store.record_orders(["ORD\x001"], lambda s: opening, T0)
        kept = Delivery("http_request", "hook", "nul-in-item", {"page_title": "a\x00b"}, "hook")
        assert await store.enqueue([kept], at(1), request_key="req-1") is True
        items = await store.claim("http_request", "hook", 10, at(1), LEASE)
    finally:
        await store.close()
    assert (refused.value.status, refused.value.body()) == (
        400, {"error": "an identifier in the request contains a NUL character", "detail": None}
    )
    assert [(p.idempotency_key, p.item) for p in items] == [("nul-in-item", {"page_title": "a\x00b"})]


# -- the server going away -----------------------------------------------------------------------


async def test_an_unreachable_server_is_storage_unavailable_and_the_password_is_never_shown() -> None:
    store = PostgresStorage(f"postgresql://gw:hunter2-secret@127.0.0.1:{closed_port()}/gw", command_timeout=2)

    with pytest.raises(StorageUnavailable) as info:
        await store.open()

    assert "hunter2" not in str(info.value) and info.value.__cause__ is None
    assert await store.ping() is False
    with pytest.raises(StorageUnavailable):
        await store.enqueue([delivery("a")], T0)


async def test_a_server_that_stops_answering_makes_writes_unavailable_until_it_is_back(database: str) -> None:
    name = database.rsplit("/", 1)[1]
    store = PostgresStorage(database, command_timeout=2)
    await store.open()
    try:
        await store.enqueue([delivery("before")], T0)
        await admin(ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin(ADMIN_URL, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

        with pytest.raises(StorageUnavailable):
            await store.enqueue([delivery("during")], at(1), request_key="req-1")
        assert await store.ping() is False

        await admin(ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await store.enqueue([delivery("after")], at(2), request_key="req-1") is True
        assert [p.idempotency_key for p in await store.claim("http_request", "hook", 10, at(3), LEASE)] == [
            "before", "after"
        ]
    finally:
        await admin(ADMIN_URL, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await store.close()


async def test_a_read_only_database_makes_writes_unavailable_while_reads_go_on(database: str) -> None:
    name = database.rsplit("/", 1)[1]
    store = PostgresStorage(database, command_timeout=2)
    await store.open()

    async def reconnect(setting: str) -> None:  # the setting applies to new connections
        await admin(ADMIN_URL, f'ALTER DATABASE "{name}" {setting}')
        await admin(ADMIN_URL, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        await wait_until(store.ping)

    try:
        await store.enqueue([delivery("before")], T0)
        await reconnect("SET default_transaction_read_only = on")  # as a hot standby would be

        with pytest.raises(StorageUnavailable, match="ReadOnlySQLTransactionError"):
            await store.enqueue([delivery("a")], at(1), request_key="req-1")
        with pytest.raises(StorageUnavailable, match="ReadOnlySQLTransactionError"):
            await store.claim("http_request", "hook", 10, at(1), LEASE)
        assert await store.pending_count() == 1

        await reconnect("RESET default_transaction_read_only")
        assert await store.enqueue([delivery("a")], at(2), request_key="req-1") is True
        assert await store.pending_count() == 2
    finally:
        await admin(ADMIN_URL, f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        await store.close()


async def test_a_connection_lost_inside_the_ledger_transaction_leaves_nothing_behind(database: str) -> None:
    store = PostgresStorage(database, command_timeout=2)
    await store.open()
    killer = concurrent.futures.ThreadPoolExecutor(1)

    def terminate_own_backend() -> None:
        sql = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE application_name = 'gateway' AND state = 'idle in transaction'")
        killer.submit(asyncio.run, admin(database, sql)).result()

    def step(state: LedgerState) -> LedgerWrite:
        terminate_own_backend()  # the server ends the connection between the read and the writes
        return LedgerWrite(orders={"ORD-1": ORDER}, deliveries=[delivery("conversion")],
                           order_deliveries=[("ORD-1", "conversion")])

    try:
        with pytest.raises(StorageUnavailable):
            await store.record_orders(["ORD-1"], step, T0, request_key="shopify:wh-1")

        assert (await store.order_history("ORD-1")).order is None
        assert await store.pending_count() == 0
        assert await store.record_orders(["ORD-1"], lambda s: LedgerWrite(), at(1), request_key="shopify:wh-1") is not None
    finally:
        killer.shutdown()
        await store.close()
