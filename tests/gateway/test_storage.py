"""The storage contract, run against every backend, then what only SQLite does (group commit, its file).

Each backend in ``BACKENDS`` makes, for one test, a factory: called twice, it
gives two storages over the same data, which is how durability across a
restart is checked. The PostgreSQL backend runs on the server at
127.0.0.1:5432, in a database of this module's own that is emptied before
each test (``tests/postgres.py``). What only PostgreSQL shows is in
``test_postgres.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from gateway.config import StorageSection
from gateway.delivery import Delivery
from gateway.errors import ConfigError
from gateway.ledger import AppliedChange, Held, LedgerDeadLetter, LedgerState, LedgerWrite, Order, Upload
from gateway.storage import PostgresStorage, SQLiteStorage, open_storage
from gateway.storage.base import (
    DeadLetter,
    DestinationStats,
    GroupInfo,
    OrderDelivery,
    Retry,
    Storage,
    StorageUnavailable,
)
from tests.postgres import empty_database, shared_database

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def delivery(key: str, batch_key: str = "hook", destination: str = "http_request", **extra: Any) -> Delivery:
    return Delivery(destination=destination, batch_key=batch_key, idempotency_key=key,
                    item={"event_name": "purchase", "key": key}, tag=batch_key, **extra)


MakeStorage = Callable[..., Storage]  # keyword options of both backends: dry_run_cap


@contextlib.asynccontextmanager
async def sqlite_backend(request: pytest.FixtureRequest) -> AsyncIterator[MakeStorage]:
    path = str(request.getfixturevalue("tmp_path") / "outbox.db")
    yield lambda **options: SQLiteStorage(path, **options)


@contextlib.asynccontextmanager
async def postgres_backend(request: pytest.FixtureRequest) -> AsyncIterator[MakeStorage]:
    url: str = request.getfixturevalue("postgres_database")
    await empty_database(url)
    yield lambda **options: PostgresStorage(url, **options)


BACKENDS = [pytest.param(sqlite_backend, id="sqlite"), pytest.param(postgres_backend, id="postgresql")]


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """One database for this module's PostgreSQL runs, emptied before each test."""
    with shared_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def make_storage(request: pytest.FixtureRequest) -> AsyncIterator[MakeStorage]:
    async with request.param(request) as factory:
        yield factory


@pytest.fixture
async def storage(make_storage: MakeStorage) -> AsyncIterator[Storage]:
    store = make_storage()
    await store.open()
    yield store
    await store.close()


async def keys_claimed(storage: Storage, now: datetime, batch_key: str = "hook", limit: int = 100) -> list[str]:
    return [p.idempotency_key for p in await storage.claim("http_request", batch_key, limit, now, LEASE)]


# -- the contract ---------------------------------------------------------------


async def test_enqueued_deliveries_survive_closing_and_reopening(make_storage: MakeStorage) -> None:
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


async def test_a_claim_taken_over_after_its_lease_ran_out_counts_the_lost_send_as_an_attempt(storage: Storage) -> None:
    await storage.enqueue([delivery("a")], T0)
    (first,) = await storage.claim("http_request", "hook", 10, T0, LEASE)
    (again,) = await storage.claim("http_request", "hook", 10, T0 + LEASE, LEASE)
    await storage.release([again.id])
    (released,) = await storage.claim("http_request", "hook", 10, T0 + LEASE, LEASE)
    assert [(first.attempts, again.attempts, released.attempts)] == [(0, 1, 1)]


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


async def test_dry_run_records_are_capped_to_the_most_recent(make_storage: MakeStorage) -> None:
    store = make_storage(dry_run_cap=5)
    await store.open()
    try:
        for i in range(12):
            await store.record_dry_run("http_request", "hook", {"n": i}, 1, at(i))
        newest = [r.request["n"] for r in await store.list_dry_runs(100)]
    finally:
        await store.close()
    assert newest == [11, 10, 9, 8, 7]


async def test_ping_answers_while_open(storage: Storage) -> None:
    assert await storage.ping() is True


async def test_a_closed_storage_refuses_writes_and_fails_its_ping(make_storage: MakeStorage) -> None:
    store = make_storage()
    await store.open()
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.enqueue([delivery("a")], T0)
    assert await store.ping() is False


# -- the order ledger (contract) ---------------------------------------------------

ORDER = Order(order_id="ORD-1", conversion_time=datetime(2026, 2, 27, 9, 30, 15, 123456, tzinfo=timezone.utc),
              recorded_at=T0, value=Decimal("129.95"), currency="EUR", gclid="gclid-1",
              consent=(("ad_storage", "granted"), ("ad_user_data", "denied")), uploaded_with_order_id=False,
              source="order_webhook")


def refund_of(order: Order, change_id: str, amount: str, now: datetime) -> tuple[Order, AppliedChange]:
    refunded = order.refunded + Decimal(amount)
    updated = replace(order, refunded=refunded, last_adjusted_at=now, change_ids=order.change_ids | {change_id})
    return updated, AppliedChange("ORD-1", change_id, "refund", now, now, "RESTATEMENT", "partial_refund",
                                  Decimal(amount), "EUR", order.value - refunded if order.value else None)


def held(change_id: str, held_at: datetime, hours: float, order_id: str = "ORD-1") -> Held:
    return Held(order_id, change_id, {"event_name": "refund", "transaction_id": order_id, "value": 5.0,
                                      "timestamp": held_at.isoformat(), "extra": {"refund_id": change_id}},
                held_at, held_at + timedelta(hours=hours))


def opening(order: Order = ORDER, *keys: str) -> Callable[[LedgerState], LedgerWrite]:
    def step(state: LedgerState) -> LedgerWrite:
        write = LedgerWrite(orders={order.order_id: order})
        for key in keys:
            write.deliveries.append(delivery(key))
            write.order_deliveries.append((order.order_id, key))
        return write
    return step


async def test_record_orders_gives_the_step_what_earlier_steps_stored(storage: Storage) -> None:
    seen: list[LedgerState] = []

    def refund_step(state: LedgerState) -> LedgerWrite:
        seen.append(state)
        order, change = refund_of(state.orders["ORD-1"], "r1", "30.00", at(5))
        return LedgerWrite(orders={"ORD-1": order}, changes=[change])

    def look(state: LedgerState) -> LedgerWrite:
        seen.append(state)
        return LedgerWrite()

    await storage.record_orders(["ORD-1"], opening(ORDER, "click-1"), T0)
    await storage.record_orders(["ORD-1", "ORD-2"], refund_step, at(5))
    await storage.record_orders(["ORD-1"], look, at(6))

    assert seen[0] == LedgerState(orders={"ORD-1": ORDER}, held=[])
    assert seen[1].orders == {"ORD-1": replace(ORDER, refunded=Decimal("30.00"), last_adjusted_at=at(5),
                                               change_ids=frozenset({"r1"}))}
    assert await keys_claimed(storage, at(6)) == ["click-1"]


async def test_record_orders_with_a_request_key_seen_before_neither_calls_the_step_nor_writes(storage: Storage) -> None:
    calls: list[LedgerState] = []

    def step(state: LedgerState) -> LedgerWrite:
        calls.append(state)
        return opening(ORDER, "click-1")(state)

    assert await storage.record_orders(["ORD-1"], step, T0, request_key="shopify:wh-1") is not None
    assert await storage.record_orders(["ORD-1"], step, at(1), request_key="shopify:wh-1") is None
    assert await storage.enqueue([delivery("x")], at(2), request_key="shopify:wh-1") is False
    assert len(calls) == 1


async def test_a_failing_step_leaves_nothing_behind(storage: Storage) -> None:
    def broken(state: LedgerState) -> LedgerWrite:
        raise ValueError("a bug in a tag")

    with pytest.raises(ValueError):
        await storage.record_orders(["ORD-1"], broken, T0, request_key="req-1")

    assert await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(), at(1), request_key="req-1") is not None
    assert (await storage.order_history("ORD-1")).order is None


async def test_concurrent_refunds_of_one_order_are_decided_one_after_the_other(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], opening(), T0)
    retained_seen: list[Decimal] = []

    def refund_step(n: int) -> Callable[[LedgerState], LedgerWrite]:
        def step(state: LedgerState) -> LedgerWrite:
            order, change = refund_of(state.orders["ORD-1"], f"r{n}", "1.00", at(n))
            retained_seen.append(order.retained)  # type: ignore[arg-type]
            return LedgerWrite(orders={"ORD-1": order}, changes=[change])
        return step

    await asyncio.gather(*(storage.record_orders(["ORD-1"], refund_step(n), at(n)) for n in range(1, 41)))

    history = await storage.order_history("ORD-1")
    assert history.order is not None and history.order.refunded == Decimal("40.00")
    assert sorted(retained_seen, reverse=True) == [Decimal("129.95") - n for n in range(1, 41)]
    assert len(history.changes) == 40


async def test_held_changes_are_released_to_the_step_once_their_order_exists(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(hold=[held("r1", T0, 72)]), T0)
    assert [h.change_id for h in (await storage.order_history("ORD-1")).held] == ["r1"]

    def arrive(state: LedgerState) -> LedgerWrite:
        (waiting,) = state.held
        return LedgerWrite(orders={"ORD-1": ORDER}, release=[waiting.id])  # type: ignore[list-item]

    await storage.record_orders(["ORD-1"], arrive, at(10))

    assert (await storage.order_history("ORD-1")).held == []


async def test_an_expired_hold_becomes_an_order_not_found_dead_letter_and_replay_holds_it_again(storage: Storage) -> None:
    await storage.record_orders(["ORD-9"], lambda s: LedgerWrite(hold=[held("r1", T0, 1, "ORD-9")]), T0)
    nothing = lambda s: LedgerWrite()  # noqa: E731

    assert (await storage.sweep_held(at(3599), nothing)).expired == {}
    assert (await storage.sweep_held(at(3600), nothing)).expired == {"order_not_found": 1}

    (letter,) = await storage.list_dead_letters()
    assert (letter.destination, letter.batch_key, letter.code, letter.attempts) == ("order_ledger", "ORD-9", "order_not_found", 0)
    assert letter.item["event"]["extra"] == {"refund_id": "r1"}
    assert [(d.status, d.code) for d in (await storage.order_history("ORD-9")).deliveries] == [("dead", "order_not_found")]

    assert await storage.replay_dead_letters(None, at(7200)) == 1
    (again,) = (await storage.order_history("ORD-9")).held
    assert (again.held_at, again.expires_at, await storage.pending_count()) == (at(7200), at(10800), 0)


async def test_a_sweep_applies_held_changes_whose_order_is_known(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": ORDER}, hold=[held("r1", T0, 1)]), T0)

    def release(state: LedgerState) -> LedgerWrite:
        return LedgerWrite(deliveries=[delivery("adj-1")], order_deliveries=[("ORD-1", "adj-1")],
                           release=[h.id for h in state.held if h.id is not None])

    sweep = await storage.sweep_held(at(10), release)

    assert ([d.idempotency_key for d in sweep.released.deliveries], sweep.expired) == (["adj-1"], {})
    assert (await storage.order_history("ORD-1")).held == []
    assert await keys_claimed(storage, at(10)) == ["adj-1"]


async def test_the_order_systems_total_kept_identifiers_and_the_value_each_change_used_round_trip(
    storage: Storage,
) -> None:
    order = replace(ORDER, value=Decimal("100"), total=Decimal("124.00"),
                    identifiers=(("fbp", "fb.1.1700000000000.42"), ("sha256_email_address", "ab" * 32)))
    change = AppliedChange("ORD-1", "r1", "refund", at(5), at(5), "RESTATEMENT", "partial_refund", Decimal("62.00"),
                           "EUR", Decimal("62.00"), "share_of_order_total", Decimal("50.00"))
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": order}, changes=[change]), T0)

    history = await storage.order_history("ORD-1")
    seen: list[Order] = []
    await storage.record_orders(["ORD-1"], lambda s: seen.append(s.orders["ORD-1"]) or LedgerWrite(), at(6))

    assert (history.order, history.changes) == (replace(order, change_ids=frozenset({"r1"})), [change])
    assert seen == [replace(order, change_ids=frozenset({"r1"}))]


async def test_an_upload_is_followed_from_the_outbox_to_its_outcome(storage: Storage) -> None:
    action = "customers/1234567890/conversionActions/987654321"
    order = replace(ORDER, uploads=(Upload(action, "click-1"), Upload(action, "click-2")))
    await storage.record_orders(["ORD-1"], opening(order, "click-1", "click-2"), T0)

    async def statuses() -> list[str]:
        loaded: list[Order] = []
        await storage.record_orders(["ORD-1"], lambda s: loaded.append(s.orders["ORD-1"]) or LedgerWrite(), at(9))
        return [u.status for u in loaded[0].uploads or ()]

    pending = await statuses()
    first, second = await storage.claim("http_request", "hook", 10, at(1), LEASE)
    await storage.settle(at(2), delivered=[first.id], dead=[(second.id, "INVALID_GCLID", "bad click id")])
    settled = await statuses()
    await storage.prune(at(86400 * 30), timedelta(days=7))

    assert (pending, settled, await statuses()) == (["pending", "pending"], ["uploaded", "failed"], ["uploaded", "failed"])
    assert [u.status for u in (await storage.order_history("ORD-1")).order.uploads or ()] == ["uploaded", "failed"]


async def test_an_order_recorded_before_uploads_were_followed_keeps_none(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], opening(replace(ORDER, uploads=None)), T0)

    assert (await storage.order_history("ORD-1")).order.uploads is None


async def test_a_pending_refund_waits_through_sweeps_and_expires_as_still_pending(storage: Storage) -> None:
    pending = replace(held("r1", T0, 24 * 30), reason="pending")
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": ORDER}, hold=[pending]), T0)
    given: list[LedgerState] = []

    def step(state: LedgerState) -> LedgerWrite:
        given.append(state)
        return LedgerWrite()

    early = await storage.sweep_held(at(3600), step)
    late = await storage.sweep_held(at(3600 * 24 * 30), step)

    assert (given, early.expired, late.expired) == ([], {}, {"refund_still_pending": 1})
    (letter,) = await storage.list_dead_letters()
    assert (letter.code, letter.item["reason"]) == ("refund_still_pending", "pending")
    assert await storage.replay_dead_letters(None, at(3600 * 24 * 31)) == 1
    assert [h.reason for h in (await storage.order_history("ORD-1")).held] == ["pending"]


async def test_a_change_waiting_for_the_total_is_released_once_the_total_is_known_or_its_wait_is_over(
    storage: Storage,
) -> None:
    waiting = replace(held("r1", T0, 1), reason="total")
    browser_order = replace(ORDER, total=None)
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": browser_order}, hold=[waiting]), T0)
    released: list[list[str]] = []

    def step(state: LedgerState) -> LedgerWrite:
        released.append([h.change_id for h in state.held])
        return LedgerWrite()

    await storage.sweep_held(at(60), step)
    await storage.sweep_held(at(3600), step)

    assert released == [["r1"]]


async def test_a_change_released_and_held_again_in_one_write_stays_held(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": ORDER}, hold=[held("r1", T0, 1)]), T0)

    def hold_again(state: LedgerState) -> LedgerWrite:
        (old,) = state.held
        return LedgerWrite(release=[old.id or 0], hold=[replace(old, id=None, reason="total", expires_at=at(7200))])

    await storage.record_orders(["ORD-1"], hold_again, at(5))

    assert [(h.change_id, h.reason, h.expires_at) for h in (await storage.order_history("ORD-1")).held] == [
        ("r1", "total", at(7200))]


async def test_a_change_the_ledger_cannot_apply_is_filed_as_a_dead_letter_under_its_order(storage: Storage) -> None:
    letter = LedgerDeadLetter(held("r-usd", at(5), 0), "refund_currency_mismatch", "refund in USD of an order in EUR")

    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": ORDER}, dead_letters=[letter]), at(5))

    (dead,) = await storage.list_dead_letters()
    assert (dead.destination, dead.batch_key, dead.code, dead.message) == (
        "order_ledger", "ORD-1", "refund_currency_mismatch", "refund in USD of an order in EUR")
    assert [(d.status, d.code) for d in (await storage.order_history("ORD-1")).deliveries] == [
        ("dead", "refund_currency_mismatch")]


async def test_a_sweep_drops_orders_past_retention(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], opening(), T0)
    await storage.record_orders(["ORD-2"], opening(replace(ORDER, order_id="ORD-2", recorded_at=at(86400))), at(86400))

    sweep = await storage.sweep_held(at(86400 * 2), lambda s: LedgerWrite(), retention=timedelta(days=1, hours=1))

    assert sweep.pruned == 1
    assert (await storage.order_history("ORD-1")).order is None
    assert (await storage.order_history("ORD-2")).order is not None


async def test_order_history_shows_the_order_its_changes_and_every_delivery_with_its_outcome(storage: Storage) -> None:
    await storage.record_orders(["ORD-1"], opening(ORDER, "click-1", "meta-1", "hook-1"), T0)
    order, change = refund_of(ORDER, "r1", "30.00", at(5))
    await storage.record_orders(["ORD-1"], lambda s: LedgerWrite(orders={"ORD-1": order}, changes=[change]), at(5))
    click, meta, hook = await storage.claim("http_request", "hook", 10, at(6), LEASE)
    await storage.settle(at(7), delivered=[click.id], retries=[Retry(hook.id, at(60), "http_500", "HTTP 500")],
                         dead=[(meta.id, "http_400", "HTTP 400")])

    history = await storage.order_history("ORD-1")

    assert history.order == order
    assert history.changes == [change]
    assert sorted(history.deliveries, key=lambda d: d.idempotency_key) == [
        OrderDelivery("http_request", "hook", "click-1", "delivered", 0, None, None, T0, at(7), None),
        OrderDelivery("http_request", "hook", "hook-1", "pending", 1, "http_500", "HTTP 500", T0, None, at(60)),
        OrderDelivery("http_request", "hook", "meta-1", "dead", 1, "http_400", "HTTP 400", T0, at(7), None),
    ]


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


async def test_dry_run_records_past_the_cap_are_deleted_from_the_file(tmp_path: Path) -> None:
    store = SQLiteStorage(str(tmp_path / "capped.db"), dry_run_cap=5)
    await store.open()
    try:
        for i in range(12):
            await store.record_dry_run("http_request", "hook", {"n": i}, 1, at(i))
        rows = await store._write(lambda c: c.execute("SELECT count(*) FROM dry_runs").fetchone()[0])
    finally:
        await store.close()
    assert rows == 5


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


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_open_storage_gives_postgresql_urls_a_pool_sized_by_the_config(scheme: str) -> None:
    section = StorageSection(url=f"{scheme}://gw:secret@db.internal:5432/gw", pool_size=3, command_timeout="2500ms")
    store = open_storage(section)
    assert isinstance(store, PostgresStorage)
    assert (store.pool_size, store.command_timeout) == (3, 2.5)
    assert "secret" not in repr(store)


@pytest.mark.parametrize(
    ("url", "errors"),
    [
        pytest.param(
            "postgresql://gw:secret@db:54x32/gw",
            ["storage.url: not a valid postgresql:// URL (check the host and port)"],
            id="postgresql-bad-port",
        ),
        pytest.param(
            "postgresql://gw:se#cret@db:5432/gw",
            ["storage.url: a postgresql:// URL has no #fragment (is a '#' in the password unescaped? write it as %23)"],
            id="postgresql-unescaped-hash",
        ),
        pytest.param(
            "postgresql+asyncpg://gw:secret@db:5432/gw",
            ["storage.url: expected postgresql://user:password@host:port/database, without a driver name"],
            id="postgresql-driver-name",
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
    assert "secret" not in str(info.value)

