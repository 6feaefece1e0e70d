"""The dispatcher over a real SQLite outbox, the real http_request sender and a fake endpoint.

Time is a clock the test moves, so retries and leases are checked without
sleeping; only the start/stop tests run the background loop in real time.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY

from gateway.config import DeliverySection
from gateway.delivery import Delivery, Result
from gateway import dispatcher as dispatcher_module
from gateway.dispatcher import Dispatcher, dry_run_recorder
from gateway.event import Event
from gateway.sender import PendingItem, Sender, SenderContext
from gateway.storage.sqlite import SQLiteStorage
from tags import _http_sender, http_request
from tests.fakes.http_sink import HttpSink, Reply

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedSender(Sender):
    """A destination whose answers the test decides; records each batch it was given."""

    destination = "scripted"

    def __init__(self, answer: Callable[[list[PendingItem]], Any] | None = None, *, max_batch_size: int = 1,
                 flush_interval: float = 0.0) -> None:
        super().__init__(None, [], SenderContext(record_dry_run=_no_recording))
        self.answer = answer or (lambda items: [Result.delivered()] * len(items))
        self.max_batch_size = max_batch_size
        self.flush_interval = flush_interval
        self.batches: list[list[str]] = []
        self.is_paused = False
        self.closed = False

    def paused(self, batch_key: str) -> bool:
        return self.is_paused

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        self.batches.append([item.idempotency_key for item in items])
        answer = self.answer(items)
        return await answer if asyncio.iscoroutine(answer) else answer

    async def close(self) -> None:
        self.closed = True


async def _no_recording(*args: Any) -> None:
    raise AssertionError("not a dry-run sender")


def settings(**overrides: Any) -> DeliverySection:
    values = {"max_attempts": 10, "backoff_initial": "1s", "backoff_max": "60s", "poll_interval": "10ms",
              "request_timeout": "2s", "lease": "60s"}
    return DeliverySection.model_validate(values | overrides)


def hook_tag(url: str, **overrides: Any) -> http_request.Config:
    return http_request.Config.model_validate({"name": "hook", "type": "http_request", "trigger": "all", "url": url} | overrides)


def scripted(key: str) -> Delivery:
    return Delivery("scripted", "key", key, {"n": key}, "scripted_tag")


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(str(tmp_path / "outbox.db"))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as running:
        yield running


@pytest.fixture
async def make_http_dispatcher(storage: SQLiteStorage, sink: HttpSink, clock: Clock) -> Any:
    made: list[Dispatcher] = []

    async def make(delivery: DeliverySection | None = None, **tag_overrides: Any) -> Dispatcher:
        ctx = SenderContext(record_dry_run=dry_run_recorder(storage, clock), now=clock, request_timeout=2.0)
        sender = _http_sender.Sender(None, [hook_tag(f"{sink.url}/events", **tag_overrides)], ctx)
        await sender.start()
        dispatcher = Dispatcher(storage, {"http_request": sender}, delivery or settings(), now=clock, rng=random.Random(7))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        for sender in dispatcher.senders.values():
            await sender.close()


async def enqueue_purchase(storage: SQLiteStorage, clock: Clock, url: str = "http://unused.test/") -> dict[str, Any]:
    event = Event(event_name="purchase", event_id="ev-1", timestamp=T0, value=42.0, currency="EUR")
    (delivery,) = http_request.build(event, hook_tag(url))
    await storage.enqueue([delivery], clock())
    return delivery.item


async def test_an_item_is_retried_through_server_errors_and_a_429_then_delivered(
    storage: SQLiteStorage, sink: HttpSink, clock: Clock, make_http_dispatcher: Any
) -> None:
    dispatcher = await make_http_dispatcher()
    item = await enqueue_purchase(storage, clock)
    sink.script(500, 503, Reply(429, headers={"Retry-After": "120"}), 200)
    retries_before = counter("gateway_delivery_retries_total", destination="http_request")

    assert await dispatcher.run_once() == 1  # 500: retry within 1s
    clock.advance(1)
    assert await dispatcher.run_once() == 1  # 503: retry within 2s
    clock.advance(2)
    assert await dispatcher.run_once() == 1  # 429: retry after 120s, not the 2-4s backoff
    clock.advance(119)
    assert await dispatcher.run_once() == 0
    clock.advance(1)
    assert await dispatcher.run_once() == 1

    assert [(r.status, r.method, r.path, r.json()) for r in sink.requests] == [
        (500, "POST", "/events", item), (503, "POST", "/events", item),
        (429, "POST", "/events", item), (200, "POST", "/events", item),
    ]
    assert await storage.pending_count() == 0
    assert await storage.list_dead_letters() == []
    assert counter("gateway_delivery_retries_total", destination="http_request") - retries_before == 3


async def test_an_item_is_dead_lettered_after_max_attempts_and_delivered_once_replayed(
    storage: SQLiteStorage, sink: HttpSink, clock: Clock, make_http_dispatcher: Any
) -> None:
    dispatcher = await make_http_dispatcher(settings(max_attempts=3))
    await enqueue_purchase(storage, clock)
    sink.script(500, 500, 502)
    for _ in range(3):
        assert await dispatcher.run_once() == 1
        clock.advance(60)

    (letter,) = await storage.list_dead_letters()
    assert (letter.idempotency_key, letter.attempts, letter.code) == ("http_request:hook:ev-1", 3, "http_502")
    assert await storage.pending_count() == 0

    assert await storage.replay_dead_letters(None, clock()) == 1
    assert await dispatcher.run_once() == 1
    assert [r.status for r in sink.requests] == [500, 500, 502, 200]
    assert await storage.list_dead_letters() == []
    assert await storage.pending_count() == 0


async def test_a_refused_item_is_dead_lettered_at_once_with_a_short_message(
    storage: SQLiteStorage, sink: HttpSink, clock: Clock, make_http_dispatcher: Any
) -> None:
    dispatcher = await make_http_dispatcher()
    await enqueue_purchase(storage, clock)
    sink.script(Reply(422, body=b'{"error": "' + b"x" * 1000 + b'"}'))
    assert await dispatcher.run_once() == 1
    (letter,) = await storage.list_dead_letters()
    assert (letter.attempts, letter.code) == (1, "http_422")
    assert letter.message is not None and letter.message.startswith('HTTP 422: {"error": "xxx')
    assert len(letter.message) <= 220


async def test_retry_waits_grow_exponentially_with_jitter_up_to_the_cap(storage: SQLiteStorage) -> None:
    dispatcher = Dispatcher(storage, {}, settings(backoff_initial="1s", backoff_max="60s"), rng=random.Random(1))
    for attempts in range(12):
        base = min(60.0, 2.0**attempts)
        delays = [dispatcher.backoff_delay(attempts) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered, not synchronised


async def test_a_failing_sender_makes_its_batch_a_retry_with_code_exception(storage: SQLiteStorage, clock: Clock) -> None:
    def boom(items: list[PendingItem]) -> list[Result]:
        raise RuntimeError("vendor SDK bug")

    dispatcher = Dispatcher(storage, {"scripted": ScriptedSender(boom)}, settings(max_attempts=1), now=clock)
    await storage.enqueue([scripted("a")], clock())
    assert await dispatcher.run_once() == 1
    assert [(d.idempotency_key, d.code, d.message) for d in await storage.list_dead_letters()] == [
        ("a", "exception", "RuntimeError")
    ]


async def test_a_sender_answering_the_wrong_number_of_results_retries_the_whole_batch(
    storage: SQLiteStorage, clock: Clock
) -> None:
    sender = ScriptedSender(lambda items: [Result.delivered()], max_batch_size=2)
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(), now=clock, rng=random.Random(3))
    await storage.enqueue([scripted("a"), scripted("b")], clock())
    assert await dispatcher.run_once() == 2
    assert await storage.pending_count() == 2
    assert await dispatcher.run_once() == 0  # both wait for their retry
    clock.advance(1)
    sender.answer = lambda items: [Result.delivered()] * len(items)
    assert await dispatcher.run_once() == 2
    assert sender.batches == [["a", "b"], ["a", "b"]]
    assert await storage.pending_count() == 0


async def test_a_send_that_outlives_the_request_timeout_is_retried(storage: SQLiteStorage, clock: Clock) -> None:
    async def hang() -> list[Result]:
        await asyncio.sleep(10)
        return []

    dispatcher = Dispatcher(storage, {"scripted": ScriptedSender(lambda items: hang())},
                            settings(max_attempts=1, request_timeout="50ms"), now=clock)
    await storage.enqueue([scripted("a")], clock())
    assert await dispatcher.run_once() == 1
    assert [d.code for d in await storage.list_dead_letters()] == ["timeout"]


async def test_a_backlog_goes_out_in_full_batches_and_the_rest_waits_to_fill(storage: SQLiteStorage, clock: Clock) -> None:
    sender = ScriptedSender(max_batch_size=3, flush_interval=30)
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(), now=clock)
    await storage.enqueue([scripted(f"k{i}") for i in range(7)], clock())
    assert await dispatcher.run_once() == 6
    assert sender.batches == [["k0", "k1", "k2"], ["k3", "k4", "k5"]]
    clock.advance(29)
    assert await dispatcher.run_once() == 0
    clock.advance(1)
    assert await dispatcher.run_once() == 1
    assert sender.batches[2:] == [["k6"]]


async def test_a_paused_key_keeps_its_items_pending(storage: SQLiteStorage, clock: Clock) -> None:
    sender = ScriptedSender()
    sender.is_paused = True
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(), now=clock)
    await storage.enqueue([scripted("a")], clock())
    assert await dispatcher.run_once() == 0
    assert await storage.pending_count() == 1
    sender.is_paused = False
    assert await dispatcher.run_once() == 1
    assert sender.batches == [["a"]]


async def test_items_of_a_destination_without_sender_stay_pending(storage: SQLiteStorage, clock: Clock) -> None:
    dispatcher = Dispatcher(storage, {}, settings(), now=clock)
    await storage.enqueue([scripted("a")], clock())
    assert await dispatcher.run_once() == 0
    assert await storage.pending_count() == 1


async def test_outbox_gauges_follow_the_pending_items(storage: SQLiteStorage, clock: Clock) -> None:
    dispatcher = Dispatcher(storage, {"scripted": ScriptedSender()}, settings(), now=clock)
    await storage.enqueue([scripted("a"), scripted("b")], clock())
    clock.advance(90)
    await dispatcher.update_outbox_metrics()
    assert counter("gateway_outbox_depth", destination="scripted") == 2
    assert counter("gateway_outbox_oldest_age_seconds", destination="scripted") == 90
    await dispatcher.run_once()
    await dispatcher.update_outbox_metrics()
    assert counter("gateway_outbox_depth", destination="scripted") == 0


async def test_the_running_loop_delivers_after_a_wake_and_stops_cleanly(
    storage: SQLiteStorage, sink: HttpSink, clock: Clock, make_http_dispatcher: Any
) -> None:
    dispatcher = await make_http_dispatcher(settings(poll_interval="5s"))
    sender = dispatcher.senders["http_request"]
    await dispatcher.start()
    assert dispatcher.alive
    await enqueue_purchase(storage, clock)
    dispatcher.wake()
    async with asyncio.timeout(2):
        while await storage.pending_count():
            await asyncio.sleep(0.01)
    await dispatcher.stop(timeout=1)
    assert not dispatcher.alive
    assert [r.status for r in sink.requests] == [200]
    assert sender._session is None  # closed by stop()


async def test_stop_releases_the_lease_of_a_batch_still_in_flight(storage: SQLiteStorage, clock: Clock) -> None:
    started = asyncio.Event()

    async def never_answers() -> list[Result]:
        started.set()
        await asyncio.Event().wait()
        return []

    sender = ScriptedSender(lambda items: never_answers())
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(poll_interval="5ms"), now=clock)
    await storage.enqueue([scripted("a")], clock())
    await dispatcher.start()
    async with asyncio.timeout(2):
        await started.wait()
    await dispatcher.stop(timeout=0.05)
    assert sender.closed
    claimed = await storage.claim("scripted", "key", 10, clock(), timedelta(seconds=60))
    assert [p.idempotency_key for p in claimed] == ["a"]


# -- claiming and settling many items per storage call -------------------------------------------------------


class CountingStorage:
    """The real storage, recording the size of every claim and settle the dispatcher asks of it."""

    def __init__(self, inner: SQLiteStorage, settle_delay: float = 0.0) -> None:
        self.inner = inner
        self.settle_delay = settle_delay
        self.claims: list[tuple[int, int]] = []  # (limit asked, items got)
        self.settles: list[int] = []  # items per settle call

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def claim(self, destination: str, batch_key: str, limit: int, now: datetime, lease: timedelta) -> list[PendingItem]:
        items = await self.inner.claim(destination, batch_key, limit, now, lease)
        self.claims.append((limit, len(items)))
        return items

    async def settle(self, now: datetime, delivered: Any = (), retries: Any = (), dead: Any = ()) -> None:
        if self.settle_delay:
            await asyncio.sleep(self.settle_delay)
        await self.inner.settle(now, delivered, retries, dead)
        self.settles.append(len(delivered) + len(retries) + len(dead))


class SlowSender(ScriptedSender):
    """Every send takes ``delay`` seconds; records how many sends were in flight at most."""

    def __init__(self, delay: float = 0.01, *, max_batch_size: int = 1, flush_interval: float = 0.0) -> None:
        super().__init__(self._answer, max_batch_size=max_batch_size, flush_interval=flush_interval)
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0
        self.keys: list[str] = []  # batch key of each send, in the order they started

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        self.keys.append(batch_key)
        return await super().send(batch_key, items)

    async def _answer(self, items: list[PendingItem]) -> list[Result]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return [Result.delivered()] * len(items)


class TogetherSender(SlowSender):
    """Sends that finish together: each waits until ``width`` sends are in flight, then all of them answer at once.

    What "finishing together" means made exact: with plain sleeps, a busy machine spreads the ends of eight
    10 ms sends over several turns of the event loop (33 claims where 25 was the design, on a CI run that
    shared its cores). ``delay`` bounds the wait, for the last round that has fewer than ``width`` items.
    """

    def __init__(self, width: int, delay: float = 1.0) -> None:
        super().__init__(delay)
        self.width = width
        self.gate = asyncio.Event()

    async def _answer(self, items: list[PendingItem]) -> list[Result]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        gate = self.gate
        if self.in_flight >= self.width:
            gate.set()  # wakes every waiting send in one turn of the loop
            self.gate = asyncio.Event()
        try:
            await asyncio.wait_for(gate.wait(), self.delay)
        except asyncio.TimeoutError:
            pass
        finally:
            self.in_flight -= 1
        return [Result.delivered()] * len(items)


def keyed(key: str, batch_key: str = "key", destination: str = "scripted") -> Delivery:
    return Delivery(destination, batch_key, key, {"n": key}, "scripted_tag")


async def test_200_http_request_items_are_claimed_and_settled_in_far_fewer_storage_calls(
    storage: SQLiteStorage, sink: HttpSink, clock: Clock
) -> None:
    counting = CountingStorage(storage)
    ctx = SenderContext(record_dry_run=dry_run_recorder(storage, clock), now=clock, request_timeout=2.0)
    sender = _http_sender.Sender(None, [hook_tag(f"{sink.url}/events")], ctx)
    await sender.start()
    try:
        dispatcher = Dispatcher(counting, {"http_request": sender}, settings(concurrency=8), now=clock)  # type: ignore[arg-type]
        deliveries = [d for n in range(200) for d in http_request.build(
            Event(event_name="purchase", event_id=f"ev-{n}", timestamp=T0), hook_tag(f"{sink.url}/events"))]
        await storage.enqueue(deliveries, clock())
        assert await dispatcher.run_once() == 200
    finally:
        await sender.close()
    assert len(sink.requests) == 200 and await storage.pending_count() == 0
    assert counting.claims[0] == (8, 8)  # every free slot at once
    assert sum(got for _, got in counting.claims) == 200
    assert len(counting.claims) <= 100 and len(counting.settles) <= 100
    assert sum(counting.settles) == 200


async def test_batches_finishing_together_share_one_claim_and_one_settle(storage: SQLiteStorage, clock: Clock) -> None:
    counting = CountingStorage(storage)
    sender = TogetherSender(width=8, delay=0.2)
    dispatcher = Dispatcher(counting, {"scripted": sender}, settings(concurrency=8), now=clock)  # type: ignore[arg-type]
    await storage.enqueue([keyed(f"k{n:03}") for n in range(200)], clock())
    assert await dispatcher.run_once() == 200
    assert await storage.pending_count() == 0
    assert sender.batches == [[f"k{n:03}"] for n in range(200)]  # oldest first, one per send
    assert len(counting.claims) <= 30 and sum(got for _, got in counting.claims) == 200
    assert len(counting.settles) <= 30 and sum(counting.settles) == 200


async def test_at_most_concurrency_batches_are_in_flight_and_every_slot_comes_back(
    storage: SQLiteStorage, clock: Clock
) -> None:
    sender = SlowSender(0.005, max_batch_size=2, flush_interval=0)
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(concurrency=3), now=clock)
    await storage.enqueue([keyed(f"k{n:02}") for n in range(41)], clock())
    assert await dispatcher.run_once() == 41
    assert sender.most_in_flight == 3
    assert [len(batch) for batch in sender.batches] == [2] * 20 + [1]
    assert dispatcher._slots.free == 3 and not dispatcher._inflight


async def test_the_running_loop_keeps_to_the_concurrency_and_settles_everything(
    storage: SQLiteStorage, clock: Clock
) -> None:
    counting = CountingStorage(storage)
    sender = SlowSender(0.002)
    dispatcher = Dispatcher(counting, {"scripted": sender}, settings(concurrency=4, poll_interval="5ms"), now=clock)  # type: ignore[arg-type]
    await dispatcher.start()
    for start in range(0, 300, 50):
        await storage.enqueue([keyed(f"k{n:03}") for n in range(start, start + 50)], clock())
        dispatcher.wake()
        await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        while await storage.pending_count():
            await asyncio.sleep(0.01)
    await dispatcher.stop(timeout=1)
    assert sender.most_in_flight == 4
    assert sorted(key for batch in sender.batches for key in batch) == [f"k{n:03}" for n in range(300)]
    assert sum(counting.settles) == 300 and len(counting.settles) < 300
    assert dispatcher._slots.free == 4


async def test_groups_share_the_free_slots_round_robin(storage: SQLiteStorage, clock: Clock) -> None:
    sender = SlowSender(0.01)
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(concurrency=4), now=clock)
    await storage.enqueue([keyed(f"a{n:02}", "a") for n in range(20)], clock())
    clock.advance(1)
    await storage.enqueue([keyed(f"b{n:02}", "b") for n in range(20)], clock())
    assert await dispatcher.run_once() == 40
    assert sorted(sender.keys[:4]) == ["a", "a", "b", "b"]  # the older backlog does not take every slot
    assert sender.most_in_flight == 4


async def test_a_claim_that_gets_fewer_items_gives_the_unused_slots_back(storage: SQLiteStorage, clock: Clock) -> None:
    class RacedStorage(CountingStorage):
        """Another instance claims half of the group between this one's look and its claim."""

        async def ready_groups(self, now: datetime) -> Any:
            groups = await self.inner.ready_groups(now)
            await self.inner.claim("scripted", "key", 5, now, timedelta(seconds=60))
            return groups

    raced = RacedStorage(storage)
    sender = SlowSender(0.001)
    dispatcher = Dispatcher(raced, {"scripted": sender}, settings(concurrency=8), now=clock)  # type: ignore[arg-type]
    await storage.enqueue([keyed(f"k{n}") for n in range(10)], clock())
    assert await dispatcher.run_once() == 5
    assert raced.claims == [(8, 5)]  # and no second claim for a group found empty
    assert dispatcher._slots.free == 8 and not dispatcher._inflight


async def test_a_sender_paused_by_a_send_of_this_pass_gets_nothing_more_claimed(storage: SQLiteStorage, clock: Clock) -> None:
    sender = ScriptedSender()

    def revoke(items: list[PendingItem]) -> list[Result]:
        sender.is_paused = True
        return [Result.retry("invalid_grant", "paused")] * len(items)

    sender.answer = revoke
    dispatcher = Dispatcher(storage, {"scripted": sender}, settings(concurrency=1), now=clock)
    await storage.enqueue([scripted(f"k{n}") for n in range(5)], clock())
    assert await dispatcher.run_once() == 1
    assert sender.batches == [["k0"]]
    assert await storage.pending_count() == 5
    claimed = await storage.claim("scripted", "key", 10, clock(), timedelta(seconds=60))
    assert (claimed[0].idempotency_key, claimed[0].attempts) == ("k0", 0)  # released, no attempt lost


async def test_stop_writes_the_results_still_waiting_for_the_storage(storage: SQLiteStorage, clock: Clock) -> None:
    counting = CountingStorage(storage, settle_delay=0.3)
    sender = ScriptedSender()
    dispatcher = Dispatcher(counting, {"scripted": sender}, settings(poll_interval="5ms"), now=clock)  # type: ignore[arg-type]
    await storage.enqueue([scripted("a"), scripted("b")], clock())
    await dispatcher.start()
    async with asyncio.timeout(2):
        while len(sender.batches) < 2:
            await asyncio.sleep(0.005)
    await dispatcher.stop(timeout=0.01)  # the sends are done, their settle is still under way
    assert sum(counting.settles) == 2
    assert await storage.pending_count() == 0


async def test_a_slow_storage_slows_the_sending_instead_of_piling_up_results(storage: SQLiteStorage, clock: Clock) -> None:
    counting = CountingStorage(storage, settle_delay=0.02)
    unsettled: list[int] = []
    sender = ScriptedSender()

    def deliver(items: list[PendingItem]) -> list[Result]:
        unsettled.append(len(sender.batches) - sum(counting.settles))
        return [Result.delivered()] * len(items)

    sender.answer = deliver
    dispatcher = Dispatcher(counting, {"scripted": sender}, settings(concurrency=1), now=clock)  # type: ignore[arg-type]
    await storage.enqueue([scripted(f"k{n:02}") for n in range(30)], clock())
    assert await dispatcher.run_once() == 30
    assert max(unsettled) <= dispatcher_module.SETTLE_BACKLOG_PER_SLOT * 1 + 1
    assert await storage.pending_count() == 0


async def test_vendor_codes_past_the_label_cap_still_count_as_other(storage: SQLiteStorage, clock: Clock) -> None:
    sender = ScriptedSender(lambda items: [Result.permanent(f"CODE_{items[0].idempotency_key}")])
    sender.destination = "code_flood_test"  # type: ignore[misc]
    dispatcher = Dispatcher(storage, {"code_flood_test": sender}, settings(concurrency=16), now=clock)
    await storage.enqueue([keyed(f"{n:03}", destination="code_flood_test") for n in range(150)], clock())
    assert await dispatcher.run_once() == 150
    labels = {"destination": "code_flood_test", "outcome": "permanent"}
    assert counter("gateway_deliveries_total", **labels, code="(other)") == 50
    assert counter("gateway_deliveries_total", **labels, code="CODE_000") == 1
    assert counter("gateway_dead_letters_total", destination="code_flood_test", code="(other)") == 50
    assert len(await storage.list_dead_letters(1000)) == 150
