"""``Storage.prune`` drops the vendor requests it no longer asks about once ``delivery.retention`` has passed.

A request a vendor processes later (the Data Manager API's ``requestId``)
is kept in ``vendor_requests`` while its status is asked for, then stays
settled so ``gateway deliveries requests`` and the debugger can show it.
Like a delivered item, it is kept for ``delivery.retention`` counted from
when it settled, then deleted: without that the table grows by one row per
batch sent, forever. A request still being asked about is never deleted,
however old. Both backends: SQLite files in the test's folder, PostgreSQL
on 127.0.0.1:5432 in a database of this module's own (``tests/postgres.py``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Callable, Iterator

import pytest

from gateway.sender import RequestStatus, SentRequest
from gateway.storage import PostgresStorage, SQLiteStorage
from gateway.storage import postgres as postgres_module
from gateway.storage import sqlite as sqlite_module
from gateway.storage.base import Storage
from tests.postgres import empty_database, shared_database

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
RETENTION = timedelta(days=7)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


@contextlib.asynccontextmanager
async def sqlite_backend(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Storage]]:
    path = str(request.getfixturevalue("tmp_path") / "outbox.db")
    yield lambda: SQLiteStorage(path)


@contextlib.asynccontextmanager
async def postgres_backend(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Storage]]:
    url: str = request.getfixturevalue("postgres_database")
    await empty_database(url)
    yield lambda: PostgresStorage(url)


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """One database for this module's PostgreSQL runs, emptied before each test."""
    with shared_database() as url:
        yield url


@pytest.fixture(params=[pytest.param(sqlite_backend, id="sqlite"), pytest.param(postgres_backend, id="postgresql")])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[Storage]:
    async with request.param(request) as make:
        store = make()
        await store.open()
        yield store
        await store.close()


async def track(storage: Storage, request_id: str, sent_at: datetime) -> int:
    """Keep a request sent at ``sent_at``; returns its row id."""
    sent = SentRequest("google_ads_data_manager", "conversions", request_id, (f"{request_id}-item",), sent_at)
    await storage.track_request(sent, sent_at + timedelta(minutes=15))
    return next(r.id for r in await storage.list_requests(1000) if r.request_id == request_id)


async def kept(storage: Storage) -> list[str]:
    return sorted(r.request_id for r in await storage.list_requests(1000))


async def test_prune_deletes_requests_settled_before_the_retention_and_keeps_the_others(storage: Storage) -> None:
    settled_old = await track(storage, "settled-old", T0)
    await storage.update_request(settled_old, RequestStatus("success", 3), at(1), None)
    failed_old = await track(storage, "failed-old", T0)
    await storage.update_request(failed_old, RequestStatus("failed", 2, {"INVALID_FORMAT": 2}), at(2), None)
    settled_recent = await track(storage, "settled-recent", at(8))
    await storage.update_request(settled_recent, RequestStatus("partial_success", 4, {"X": 1}), at(9), None)
    # Sent long ago and given up on only lately: kept for the retention from then, to be seen.
    given_up = await track(storage, "given-up-lately", T0)
    await storage.update_request(given_up, RequestStatus("unknown"), at(7.5), None)
    # Still asked about: never deleted, however old.
    asking = await track(storage, "still-processing", T0)
    await storage.update_request(asking, RequestStatus("processing"), at(1), at(1.25))
    await track(storage, "never-asked", T0)

    deleted = await storage.prune(at(10), RETENTION)

    assert deleted == 2
    assert await kept(storage) == ["given-up-lately", "never-asked", "settled-recent", "still-processing"]
    assert await storage.prune(at(10), RETENTION) == 0
    assert await storage.prune(at(14.6), RETENTION) == 1  # given up at day 7.5
    assert await kept(storage) == ["never-asked", "settled-recent", "still-processing"]


async def test_prune_counts_requests_with_delivered_items_and_request_keys(storage: Storage) -> None:
    request = await track(storage, "settled", T0)
    await storage.update_request(request, RequestStatus("success", 1), at(1), None)
    assert await storage.enqueue([], T0, request_key="webhook-1") is True

    assert await storage.prune(at(9), RETENTION) == 2  # the request key and the vendor request
    assert await kept(storage) == []
    assert await storage.enqueue([], at(9), request_key="webhook-1") is True


async def test_prune_deletes_every_old_request_when_there_are_more_than_a_chunk(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "PRUNE_CHUNK", 2)
    monkeypatch.setattr(postgres_module, "PRUNE_CHUNK", 2)
    for n in range(5):
        id_ = await track(storage, f"r{n}", T0)
        await storage.update_request(id_, RequestStatus("success", 1), at(1), None)
    await track(storage, "kept", T0)

    assert await storage.prune(at(9), RETENTION) == 5
    assert await kept(storage) == ["kept"]
