"""The storage contract, run against every backend, then what only SQLite does (group commit, its file).

Each backend in ``BACKENDS`` is a factory: called twice, it gives two storages
over the same data, which is how durability across a restart is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from gateway.config import StorageSection
from gateway.delivery import Delivery
from gateway.errors import ConfigError
from gateway.storage import SQLiteStorage, open_storage
from gateway.storage.base import (
    DeadLetter,
    DestinationStats,
    GroupInfo,
    Retry,
    Storage,
    StorageUnavailable,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def delivery(key: str, batch_key: str = "hook", destination: str = "http_request", **extra: Any) -> Delivery:
    return Delivery(destination=destination, batch_key=batch_key, idempotency_key=key,
                    item={"event_name": "purchase", "key": key}, tag=batch_key, **extra)


def sqlite_backend(tmp_path: Path) -> Callable[[], Storage]:
    return lambda: open_storage(StorageSection(url=f"sqlite:///{tmp_path / 'outbox.db'}"))


BACKENDS = [pytest.param(sqlite_backend, id="sqlite")]


@pytest.fixture(params=BACKENDS)
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Storage]:
    return request.param(tmp_path)


@pytest.fixture
async def storage(make_storage: Callable[[], Storage]) -> AsyncIterator[Storage]:
    store = make_storage()
    await store.open()
    yield store
    await store.close()


async def keys_claimed(storage: Storage, now: datetime, batch_key: str = "hook", limit: int = 100) -> list[str]:
    return [p.idempotency_key for p in await storage.claim("http_request", batch_key, limit, now, LEASE)]


# -- the contract ---------------------------------------------------------------


async def test_enqueued_deliveries_survive_closing_and_reopening(make_storage: Callable[[], Storage]) -> None:
    first = make_storage()
    await first.open()
    assert await first.enqueue([delivery("a"), delivery("b")], T0) is True
    await first.close()

    second = make_storage()
    await second.open()
    try:
        items = await second.claim("http_request", "hook", 10, T0, LEASE)
    finally:
        await second.close()
    assert [(p.idempotency_key, p.item, p.tag, p.attempts, p.created_at) for p in items] == [
        ("a", {"event_name": "purchase", "key": "a"}, "hook", 0, T0),
        ("b", {"event_name": "purchase", "key": "b"}, "hook", 0, T0),
    ]


async def test_a_request_key_seen_before_makes_the_enqueue_a_no_op(storage: Storage) -> None:
    assert await storage.enqueue([delivery("a")], T0, request_key="shopify:wh-1") is True
    assert await storage.enqueue([delivery("b")], at(1), request_key="shopify:wh-1") is False
    assert await keys_claimed(storage, at(2)) == ["a"]


async def test_a_duplicate_idempotency_key_keeps_the_first_copy(storage: Storage) -> None:
    await storage.enqueue([delivery("a")], T0)
    duplicate = Delivery("http_request", "hook", "a", {"event_name": "second copy"}, "hook")
    assert await storage.enqueue([duplicate, delivery("b")], at(1)) is True
    items = await storage.claim("http_request", "hook", 10, at(2), LEASE)
    assert [(p.idempotency_key, p.item["event_name"]) for p in items] == [("a", "purchase"), ("b", "purchase")]


async def test_claim_takes_due_items_oldest_first_up_to_the_limit(storage: Storage) -> None:
    await storage.enqueue([delivery("later", not_before=at(300))], T0)
    await storage.enqueue([delivery("first"), delivery("other", batch_key="elsewhere")], at(1))
    await storage.enqueue([delivery("second"), delivery("third")], at(2))
    assert await keys_claimed(storage, at(10), limit=2) == ["first", "second"]
    assert await keys_claimed(storage, at(10)) == ["third"]
    assert await keys_claimed(storage, at(299)) == []
    assert await keys_claimed(storage, at(300)) == ["later"]


async def test_a_claimed_item_is_leased_until_the_lease_runs_out(storage: Storage) -> None:
    await storage.enqueue([delivery("a")], T0)
    assert await keys_claimed(storage, T0) == ["a"]
    assert await keys_claimed(storage, at(599)) == []
    assert await storage.ready_groups(at(599)) == []
    assert await keys_claimed(storage, at(600)) == ["a"]


async def test_release_makes_claimed_items_claimable_at_once(storage: Storage) -> None:
    await storage.enqueue([delivery("a"), delivery("b")], T0)
    claimed = await storage.claim("http_request", "hook", 10, T0, LEASE)
    await storage.release([p.id for p in claimed])
    assert await keys_claimed(storage, at(1)) == ["a", "b"]


async def test_ready_groups_counts_due_unleased_items_per_group(storage: Storage) -> None:
    await storage.enqueue([delivery("a"), delivery("b"), delivery("held", not_before=at(100))], T0)
    await storage.enqueue([delivery("c", batch_key="other"), delivery("d", destination="meta", batch_key="px")], at(5))
    await storage.claim("http_request", "other", 10, at(5), LEASE)
    groups = await storage.ready_groups(at(10))
    assert sorted(groups, key=lambda g: (g.destination, g.batch_key)) == [
        GroupInfo("http_request", "hook", 2, T0),
        GroupInfo("meta", "px", 1, at(5)),
    ]


async def test_a_delivered_item_is_settled_for_good_and_its_key_stays_taken(storage: Storage) -> None:
    await storage.enqueue([delivery("a"), delivery("b")], T0)
    a, b = await storage.claim("http_request", "hook", 10, T0, LEASE)
    await storage.settle(at(1), delivered=[a.id])
    await storage.release([b.id])
    assert await storage.enqueue([delivery("a")], at(2)) is True
    assert await keys_claimed(storage, at(1000)) == ["b"]
    assert await storage.pending_count() == 1


async def test_a_retry_counts_the_attempt_and_waits_for_its_time(storage: Storage) -> None:
    await storage.enqueue([delivery("a")], T0)
    (a,) = await storage.claim("http_request", "hook", 10, T0, LEASE)
    await storage.settle(at(1), retries=[Retry(a.id, at(30), "http_500", "HTTP 500")])
    assert await keys_claimed(storage, at(29)) == []
    items = await storage.claim("http_request", "hook", 10, at(30), LEASE)
    assert [(p.idempotency_key, p.attempts) for p in items] == [("a", 1)]


async def test_a_dead_item_moves_to_the_dead_letters_with_everything_needed_to_replay(storage: Storage) -> None:
    await storage.enqueue([delivery("a"), delivery("b")], T0)
    a, _ = await storage.claim("http_request", "hook", 10, T0, LEASE)
    await storage.settle(at(1), retries=[Retry(a.id, at(2), "http_500", None)])
    (a,) = await storage.claim("http_request", "hook", 1, at(2), LEASE)
    await storage.settle(at(3), dead=[(a.id, "http_400", "HTTP 400: bad field")])
    (letter,) = await storage.list_dead_letters()
    assert letter == DeadLetter(
        id=letter.id, destination="http_request", batch_key="hook", idempotency_key="a", tag="hook",
        item={"event_name": "purchase", "key": "a"}, attempts=2, code="http_400", message="HTTP 400: bad field",
        created_at=T0, failed_at=at(3),
    )
    assert await storage.pending_count() == 1


async def test_replayed_dead_letters_are_pending_again_with_their_original_key(storage: Storage) -> None:
    await storage.enqueue([delivery("a"), delivery("b")], T0)
    a, b = await storage.claim("http_request", "hook", 10, T0, LEASE)
    await storage.settle(at(1), dead=[(a.id, "http_500", None), (b.id, "http_500", None)])
    letters = await storage.list_dead_letters()
    assert [d.idempotency_key for d in letters] == ["b", "a"]  # newest first

    assert await storage.replay_dead_letters([letters[1].id], at(10)) == 1
    assert [d.idempotency_key for d in await storage.list_dead_letters()] == ["b"]
    items = await storage.claim("http_request", "hook", 10, at(10), LEASE)
    assert [(p.idempotency_key, p.attempts, p.created_at) for p in items] == [("a", 0, T0)]

    assert await storage.replay_dead_letters(None, at(20)) == 1
    assert await storage.list_dead_letters() == []
    assert await keys_claimed(storage, at(20)) == ["b"]


async def test_replay_renames_a_key_that_was_enqueued_again_meanwhile(storage: Storage) -> None:
    await storage.enqueue([delivery("a")], T0)
    (a,) = await storage.claim("http_request", "hook", 10, T0, LEASE)
    await storage.settle(at(1), dead=[(a.id, "http_500", None)])
    await storage.enqueue([delivery("a")], at(2))  # the webhook was sent again
    (letter,) = await storage.list_dead_letters()
    assert await storage.replay_dead_letters(None, at(3)) == 1
    assert await keys_claimed(storage, at(3)) == ["a", f"a#replay-{letter.id}"]


async def test_prune_deletes_delivered_items_and_request_keys_past_retention(storage: Storage) -> None:
    await storage.enqueue([delivery("old"), delivery("waiting")], T0, request_key="req-old")
    await storage.enqueue([delivery("recent")], at(3000), request_key="req-recent")
    old = (await storage.claim("http_request", "hook", 1, T0, LEASE))[0]
    await storage.settle(at(1), delivered=[old.id])
    recent = [p for p in await storage.claim("http_request", "hook", 10, at(3000), LEASE) if p.idempotency_key == "recent"]
    await storage.settle(at(3001), delivered=[recent[0].id])

    assert await storage.prune(at(3600 + 2), timedelta(hours=1)) == 2  # "old" and "req-old"
    assert await storage.enqueue([delivery("old")], at(3700), request_key="req-old") is True
    assert await storage.enqueue([delivery("recent")], at(3700), request_key="req-recent") is False
    assert sorted(await keys_claimed(storage, at(3700))) == ["old", "waiting"]


async def test_stats_and_pending_count_cover_every_pending_item(storage: Storage) -> None:
    assert await storage.stats(T0) == []
    assert await storage.pending_count() == 0
    await storage.enqueue([delivery("a"), delivery("b", not_before=at(100))], T0)
    await storage.enqueue([delivery("c", destination="meta", batch_key="px")], at(5))
    await storage.claim("http_request", "hook", 1, at(5), LEASE)
    stats = await storage.stats(at(10))
    assert sorted(stats, key=lambda s: s.destination) == [
        DestinationStats("http_request", 2, T0),
        DestinationStats("meta", 1, at(5)),
    ]
    assert await storage.pending_count() == 3


async def test_dry_run_records_are_listed_newest_first(storage: Storage) -> None:
    request = {"method": "POST", "url": "https://example.test/hook", "headers": {"Authorization": "***"}, "body": {"a": 1}}
    await storage.record_dry_run("http_request", "hook", request, 1, T0)
    await storage.record_dry_run("meta", "px", {"body": {"data": []}}, 3, at(1))
    records = await storage.list_dry_runs(10)
    assert [(r.destination, r.batch_key, r.item_count, r.request, r.recorded_at) for r in records] == [
        ("meta", "px", 3, {"body": {"data": []}}, at(1)),
        ("http_request", "hook", 1, request, T0),
    ]
    assert [r.destination for r in await storage.list_dry_runs(1)] == ["meta"]


async def test_ping_answers_while_open(storage: Storage) -> None:
    assert await storage.ping() is True


# -- SQLite only ------------------------------------------------------------------


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(str(tmp_path / "outbox.db"))
    await store.open()
    yield store
    await store.close()


async def test_concurrent_enqueues_share_transactions_and_all_commit(sqlite_storage: SQLiteStorage, tmp_path: Path) -> None:
    before = sqlite_storage.transactions
    results = await asyncio.gather(
        *(sqlite_storage.enqueue([delivery(f"k{i}-0"), delivery(f"k{i}-1")], T0, f"req-{i}") for i in range(200))
    )
    assert results == [True] * 200
    assert sqlite_storage.transactions - before < 200
    with contextlib.closing(sqlite3.connect(tmp_path / "outbox.db")) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 400
        assert conn.execute("SELECT count(*) FROM request_keys").fetchone()[0] == 200


async def test_one_failing_operation_fails_only_its_own_caller(sqlite_storage: SQLiteStorage) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO request_keys (key, created_at) VALUES ('half-done', 0)")
        raise sqlite3.OperationalError("disk I/O error")

    outcomes = await asyncio.gather(
        sqlite_storage.enqueue([delivery("a")], T0),
        sqlite_storage._write(broken),
        sqlite_storage.enqueue([delivery("b")], T0),
        return_exceptions=True,
    )
    assert outcomes[0] is True and outcomes[2] is True
    assert isinstance(outcomes[1], StorageUnavailable)
    assert await keys_claimed(sqlite_storage, T0) == ["a", "b"]
    assert await sqlite_storage.enqueue([], T0, request_key="half-done") is True  # rolled back with its op


async def test_a_read_only_database_raises_storage_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    # Tests run as root, which writes to a chmod 444 file regardless; query_only fails writes the same way.
    store = SQLiteStorage(str(tmp_path / "outbox.db"))
    await store.open()
    await store.enqueue([delivery("before")], T0)
    await store._write(lambda c: c.execute("PRAGMA query_only = 1"))
    with pytest.raises(StorageUnavailable, match="readonly"):
        await store.enqueue([delivery("a"), delivery("b")], at(1), request_key="req-1")
    with pytest.raises(StorageUnavailable, match="readonly"):
        await store.claim("http_request", "hook", 10, at(1), LEASE)
    assert await store.ping() is True  # reads still work
    await store.close()

    store = SQLiteStorage(str(tmp_path / "outbox.db"))
    await store.open()
    try:
        assert await store.enqueue([delivery("a")], at(2), request_key="req-1") is True
        assert await keys_claimed(store, at(2)) == ["before", "a"]
    finally:
        await store.close()


async def test_a_full_disk_mid_enqueue_leaves_nothing_half_written(sqlite_storage: SQLiteStorage) -> None:
    pages = await sqlite_storage._write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await sqlite_storage._write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    big = [Delivery("http_request", "hook", f"big-{i}", {"blob": "x" * 2000}, "hook") for i in range(50)]

    with pytest.raises(StorageUnavailable, match="full"):
        await sqlite_storage.enqueue(big, T0, request_key="req-big")

    await sqlite_storage._write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    assert await sqlite_storage.pending_count() == 0
    assert await sqlite_storage.enqueue(big[:1], T0, request_key="req-big") is True


async def test_the_database_runs_in_wal_mode_with_full_sync(sqlite_storage: SQLiteStorage) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
        return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]

    assert await sqlite_storage._write(pragmas) == ("wal", 2)  # 2 is FULL


async def test_dry_run_records_are_capped_to_the_most_recent(tmp_path: Path) -> None:
    store = SQLiteStorage(str(tmp_path / "capped.db"), dry_run_cap=5)
    await store.open()
    try:
        for i in range(12):
            await store.record_dry_run("http_request", "hook", {"n": i}, 1, at(i))
        rows = await store._write(lambda c: c.execute("SELECT count(*) FROM dry_runs").fetchone()[0])
        newest = [r.request["n"] for r in await store.list_dry_runs(100)]
    finally:
        await store.close()
    assert rows == 5
    assert newest == [11, 10, 9, 8, 7]


async def test_a_closed_storage_refuses_writes(tmp_path: Path) -> None:
    store = SQLiteStorage(str(tmp_path / "closed.db"))
    await store.open()
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.enqueue([delivery("a")], T0)


async def test_an_unopenable_file_raises_storage_unavailable(tmp_path: Path) -> None:
    store = SQLiteStorage(str(tmp_path / "missing-dir" / "outbox.db"))
    with pytest.raises(StorageUnavailable):
        await store.open()
    await store.close()


# -- open_storage -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///data/gw.db", "data/gw.db", id="relative"),
        pytest.param("sqlite:////{tmp}/abs/gw.db", "/{tmp}/abs/gw.db", id="absolute"),
    ],
)
def test_open_storage_reads_sqlite_paths_and_creates_their_directory(
    url: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tmp = str(tmp_path).lstrip("/")
    store = open_storage(StorageSection(url=url.format(tmp=tmp)))
    assert isinstance(store, SQLiteStorage)
    assert store.path == expected.format(tmp=tmp)
    assert Path(store.path).parent.is_dir()


@pytest.mark.parametrize(
    ("url", "errors"),
    [
        pytest.param(
            "postgresql://gw:secret@db:5432/gw",
            ["storage.url: PostgreSQL storage is not available in this version"],
            id="postgresql",
        ),
        pytest.param(
            "mysql://gw:secret@db/gw",
            ["storage.url: expected sqlite:///relative/path, sqlite:////absolute/path or postgresql://..."],
            id="unknown-scheme",
        ),
        pytest.param(
            "sqlite:///:memory:",
            ["storage.url: SQLite storage needs a file path (an in-memory database loses every event)"],
            id="in-memory",
        ),
    ],
)
def test_open_storage_rejects_urls_it_cannot_serve_without_echoing_them(url: str, errors: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(StorageSection(url=url))
    assert info.value.errors == errors

