"""The SQLite writer's group commit: what one group of operations may and may not do to each other.

Enqueues at the head of a group run without savepoints and merged into a
few statements; these tests pin down that this changes nothing a caller can
see. Each test holds the writer busy while it queues its operations, so
that they are committed as one group (``one_group``), and checks the number
of transactions to be sure they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from gateway.delivery import Delivery
from gateway.ledger import LedgerState, LedgerWrite
from gateway.storage import SQLiteStorage
from gateway.storage.base import Retry, StorageUnavailable
from gateway.storage.sqlite import ROWS_PER_INSERT

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=600)


def delivery(key: str, tag: Any = "hook", **item: Any) -> Delivery:
    return Delivery("http_request", "hook", key, {"key": key, **item}, tag)


def unbindable(key: str) -> Delivery:
    """A delivery SQLite cannot store: its tag is not a type a column can hold."""
    return delivery(key, tag=object())


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
async def store(db_file: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(str(db_file))
    await storage.open()
    yield storage
    await storage.close()


@contextlib.contextmanager
def reading(db_file: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(db_file)) as conn:
        yield conn


def outbox(db_file: Path) -> list[tuple[str, str]]:
    """(idempotency key, item as JSON text) of every outbox row, in the order they were inserted."""
    with reading(db_file) as conn:
        rows = conn.execute("SELECT idempotency_key, item FROM outbox ORDER BY id")
        return [(key, item.decode()) for key, item in rows]


def request_keys(db_file: Path) -> set[str]:
    with reading(db_file) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM request_keys")}


async def one_group(
    store: SQLiteStorage, calls: list[Callable[[], Awaitable[Any]]], commits: bool = True
) -> list[Any]:
    """Run ``calls`` so that their writes go to the writer as one group; their results or exceptions, in order.

    ``commits`` says whether that group's transaction is expected to commit.
    """
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    held = store._write(hold)
    await asyncio.to_thread(started.wait, 10)
    before = store.transactions
    tasks = [asyncio.ensure_future(call()) for call in calls]
    for _ in range(100):  # until every call has queued its write
        await asyncio.sleep(0)
        if store._queue.qsize() >= len(calls):
            break
    assert store._queue.qsize() == len(calls)
    release.set()
    await held
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert store.transactions - before == 1 + commits  # the holding operation's, then the group's
    return results


async def test_a_failing_enqueue_fails_alone_and_leaves_nothing_of_itself(store: SQLiteStorage, db_file: Path) -> None:
    results = await one_group(store, [
        lambda: store.enqueue([delivery("a")], T0, request_key="req-a"),
        lambda: store.enqueue([delivery("bad-0"), unbindable("bad-1")], T0, request_key="req-bad"),
        lambda: store.enqueue([delivery("b"), delivery("c")], T0),
    ])

    assert results[0] is True and results[2] is True
    assert isinstance(results[1], sqlite3.ProgrammingError)
    assert [key for key, _ in outbox(db_file)] == ["a", "b", "c"]
    assert request_keys(db_file) == {"req-a"}  # the bad request's key went with its rows
    assert await store.enqueue([delivery("bad-0")], T0, request_key="req-bad") is True


async def test_an_operation_that_raises_at_the_head_of_a_group_fails_alone(store: SQLiteStorage, db_file: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO request_keys (key, created_at) VALUES ('half-done', 0)")
        raise sqlite3.OperationalError("disk I/O error")

    results = await one_group(store, [
        lambda: store.enqueue([delivery("a")], T0),
        lambda: store._write(broken, replayable=True),
        lambda: store.enqueue([delivery("b")], T0),
    ])

    assert results[0] is True and results[2] is True
    assert isinstance(results[1], StorageUnavailable)
    assert [key for key, _ in outbox(db_file)] == ["a", "b"]
    assert request_keys(db_file) == set()


@pytest.mark.parametrize("bad_first", [True, False], ids=["failure-before-it", "failure-after-it"])
async def test_an_operation_that_may_not_run_twice_runs_once_when_an_enqueue_beside_it_fails(
    store: SQLiteStorage, db_file: Path, bad_first: bool
) -> None:
    steps: list[LedgerState] = []

    def step(state: LedgerState) -> LedgerWrite:
        steps.append(state)
        return LedgerWrite(deliveries=[delivery("from-the-ledger")])

    bad = lambda: store.enqueue([unbindable("bad")], T0)  # noqa: E731
    ledger = lambda: store.record_orders(["order-1"], step, T0, request_key="hook:1")  # noqa: E731
    results = await one_group(store, [
        lambda: store.enqueue([delivery("a")], T0),
        *([bad, ledger] if bad_first else [ledger, bad]),
        lambda: store.enqueue([delivery("b")], T0),
    ])

    assert results[0] is True and results[3] is True
    assert isinstance(results[1 if bad_first else 2], sqlite3.ProgrammingError)
    assert isinstance(results[2 if bad_first else 1], LedgerWrite)
    assert len(steps) == 1
    assert [key for key, _ in outbox(db_file)] == ["a", "from-the-ledger", "b"]


async def test_the_first_of_two_requests_with_one_request_key_wins(store: SQLiteStorage, db_file: Path) -> None:
    results = await one_group(store, [
        lambda: store.enqueue([delivery("first")], T0, request_key="shopify:wh-1"),
        lambda: store.enqueue([delivery("second")], T0, request_key="shopify:wh-1"),
        lambda: store.enqueue([delivery("other")], T0, request_key="shopify:wh-2"),
    ])

    assert results == [True, False, True]
    assert [key for key, _ in outbox(db_file)] == ["first", "other"]


async def test_the_first_of_two_deliveries_with_one_idempotency_key_is_kept(
    store: SQLiteStorage, db_file: Path
) -> None:
    results = await one_group(store, [
        lambda: store.enqueue([delivery("a", n=1), delivery("a", n=2)], T0),
        lambda: store.enqueue([delivery("a", n=3), delivery("b", n=4)], T0),
    ])

    assert results == [True, True]
    assert outbox(db_file) == [("a", '{"key":"a","n":1}'), ("b", '{"key":"b","n":4}')]


async def test_a_large_group_stores_every_row_once_in_queue_order(store: SQLiteStorage, db_file: Path) -> None:
    sizes = [1, 3, ROWS_PER_INSERT, 2, 37, 1, ROWS_PER_INSERT + 5]  # whole and partial statements
    requests = [[delivery(f"r{r}-{i}") for i in range(size)] for r, size in enumerate(sizes)]
    results = await one_group(store, [lambda ds=ds: store.enqueue(ds, T0) for ds in requests])

    assert results == [True] * len(sizes)
    assert [key for key, _ in outbox(db_file)] == [d.idempotency_key for ds in requests for d in ds]


async def test_a_group_survives_closing_and_reopening(store: SQLiteStorage, db_file: Path) -> None:
    results = await one_group(store, [
        lambda i=i: store.enqueue([delivery(f"k{i}")], T0, request_key=f"req-{i}") for i in range(20)
    ])
    assert results == [True] * 20
    await store.close()

    reopened = SQLiteStorage(str(db_file))
    await reopened.open()
    try:
        claimed = await reopened.claim("http_request", "hook", 100, T0, LEASE)
        assert [p.idempotency_key for p in claimed] == [f"k{i}" for i in range(20)]
        assert await reopened.enqueue([delivery("again")], T0, request_key="req-7") is False
    finally:
        await reopened.close()


async def test_a_group_that_fills_the_disk_fails_every_enqueue_and_writes_nothing(
    store: SQLiteStorage, db_file: Path
) -> None:
    pages = await store._write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await store._write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    results = await one_group(store, [
        lambda i=i: store.enqueue([delivery(f"k{i}", blob="x" * 20_000)], T0, request_key=f"req-{i}") for i in range(3)
    ], commits=False)

    # SQLite gives up the whole transaction when the disk is full: the first caller hears why, the others that
    # their transaction was lost.
    assert all(isinstance(r, StorageUnavailable) for r in results)
    assert "full" in str(results[0])
    await store._write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    assert outbox(db_file) == []
    assert request_keys(db_file) == set()


async def test_only_operations_that_merely_read_and_write_the_database_are_replayable(
    store: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags: list[bool] = []
    write = store._write

    def spy(op: Any, replayable: bool = False) -> Any:
        flags.append(replayable)
        return write(op, replayable)

    monkeypatch.setattr(store, "_write", spy)

    def marked(replayable: bool) -> None:
        assert flags == [replayable]
        flags.clear()

    await store.enqueue([delivery("a"), delivery("b")], T0, request_key="req-1")
    marked(True)
    items = await store.claim("http_request", "hook", 10, T0, LEASE)
    marked(True)
    await store.settle(T0, delivered=[items[0].id], retries=[Retry(items[1].id, T0, "500", None)])
    marked(True)
    await store.release([items[1].id])
    marked(True)
    # A ledger step is called at most once per call: it may change the events it was built over.
    await store.record_orders(["order-1"], lambda state: LedgerWrite(), T0)
    marked(False)
    await store.sweep_held(T0, lambda state: LedgerWrite())
    marked(False)


async def test_a_commit_waits_for_another_processs_write_lock_and_gives_up_after_busy_timeout(db_file):
    """The writer takes the write lock in its own short steps (``_begin``): it waits while another
    connection holds the lock, commits once it is released, and fails after ``busy_timeout``."""
    from tests.running import SQLiteWriteLock

    storage = SQLiteStorage(str(db_file), busy_timeout=1.0)
    await storage.open()
    try:
        lock = SQLiteWriteLock(db_file).__enter__()
        waiting = asyncio.ensure_future(storage.enqueue([delivery("waited")], T0))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # still waiting for the lock, not failed at once
        lock.release()
        assert await asyncio.wait_for(waiting, 5) is True
        assert [key for key, _ in outbox(db_file)] == ["waited"]

        with SQLiteWriteLock(db_file):
            started = asyncio.get_running_loop().time()
            with pytest.raises(StorageUnavailable, match="locked"):
                await storage.enqueue([delivery("refused")], T0)
            assert asyncio.get_running_loop().time() - started >= 0.9
        assert [key for key, _ in outbox(db_file)] == ["waited"]
    finally:
        await storage.close()


def wal_frames(db_file: Path) -> int:
    """Frames in the write-ahead log since its last restart (a passive checkpoint copies, never waits)."""
    with reading(db_file) as conn:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return frames


@pytest.mark.parametrize("pages,bounded", [(32, True), (100_000, False)])
async def test_the_wal_is_checkpointed_every_checkpoint_pages(db_file: Path, pages: int, bounded: bool) -> None:
    """``storage.checkpoint_pages`` is what the writer's commits checkpoint at: with 32, the log never holds much
    more than 32 pages and a group's own; with 100,000 (far past what these writes make) it holds every frame."""
    storage = SQLiteStorage(str(db_file), checkpoint_pages=pages)
    await storage.open()
    try:
        for n in range(60):  # 60 groups of 20 rows of about 1 KB: several hundred pages in all
            assert await storage.enqueue([delivery(f"k{n}-{i}", pad="x" * 1000) for i in range(20)], T0)
        frames = wal_frames(db_file)
    finally:
        await storage.close()
    assert storage.transactions >= 60
    assert (frames < 32 + 40) is bounded, frames


def test_storage_checkpoint_pages_reaches_the_sqlite_writer_and_is_refused_below_one(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from gateway.config import StorageSection
    from gateway.storage import open_storage

    chosen = open_storage(StorageSection(url=f"sqlite:///{tmp_path}/g.db", checkpoint_pages=64))
    default = open_storage(StorageSection(url=f"sqlite:///{tmp_path}/h.db"))
    assert isinstance(chosen, SQLiteStorage) and isinstance(default, SQLiteStorage)
    assert (chosen.checkpoint_pages, default.checkpoint_pages) == (64, 250)
    with pytest.raises(ValidationError) as refused:
        StorageSection(checkpoint_pages=0)
    assert [e["loc"] for e in refused.value.errors()] == [("checkpoint_pages",)]
