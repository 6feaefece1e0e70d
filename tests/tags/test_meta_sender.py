"""The Meta sender, driven by the real dispatcher over real SQLite storage, against the fake Graph API on 127.0.0.1."""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from gateway import metrics
from gateway.config import DeliverySection, StorageSection, format_validation_error
from gateway.delivery import Delivery, Result
from gateway.dispatcher import Dispatcher, dry_run_recorder
from gateway.event import Event
from gateway.sender import PendingItem, SenderContext
from gateway.storage import Storage, open_storage
from tags import _meta, _meta_sender, meta_capi
from tests.fakes.meta_graph import MetaGraph

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
PIXEL = "1234567890123456"
TOKEN = "EAAB-test-token-do-not-log"
UA = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/135.0"
TAG = meta_capi.Config.model_validate({"name": "meta_purchase", "type": "meta_capi", "trigger": "purchase", "pixel_id": PIXEL})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def purchase(n: int, *, pixel: str = PIXEL, timestamp: datetime = T0, tag: meta_capi.Config = TAG, **fields: Any) -> Delivery:
    """A delivery the real tag builds from a browser purchase (an order-system one with the webhook's stamp)."""
    event = Event.from_data({
        "event_name": "purchase", "timestamp": timestamp, "transaction_id": f"ORD-{n}", "value": 10.0 + n,
        "currency": "EUR", "user_agent": UA, "page_location": "https://shop.example/thanks", "ip_override": "203.0.113.9",
        "user_data": {"email_address": f"customer{n}@example.com"},
        "consent": {"ad_storage": "granted", "ad_user_data": "granted"}, **fields,
    })
    return meta_capi.build(event, tag if pixel == PIXEL else tag.model_copy(update={"pixel_id": pixel}))[0]


def bad_item(n: int) -> Delivery:
    """An event Meta refuses: its email is not hashed."""
    good = purchase(n)
    item = {**good.item, "user_data": {**good.item["user_data"], "em": [f"customer{n}@example.com"]}}
    return Delivery(good.destination, good.batch_key, good.idempotency_key, item, good.tag)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def graph(clock: Clock) -> AsyncIterator[MetaGraph]:
    async with MetaGraph(token=TOKEN, now=clock) as running:
        yield running


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened = open_storage(StorageSection(url=f"sqlite:///{tmp_path}/m.db"))
    await opened.open()
    yield opened
    await opened.close()


class Rig:
    """The sender under the real dispatcher, with a clock the test moves."""

    def __init__(self, storage: Storage, clock: Clock, config: _meta_sender.Config) -> None:
        self.storage, self.clock = storage, clock
        ctx = SenderContext(record_dry_run=dry_run_recorder(storage, clock), now=clock, request_timeout=5.0)
        self.sender = _meta_sender.Sender(config, [TAG], ctx)
        delivery = DeliverySection(max_attempts=5, request_timeout=timedelta(seconds=5))
        self.dispatcher = Dispatcher(storage, {"meta": self.sender}, delivery, now=clock, rng=random.Random(7))

    async def enqueue(self, deliveries: list[Delivery]) -> None:
        await self.storage.enqueue(deliveries, self.clock())

    async def run(self) -> int:
        return await self.dispatcher.run_once()


@pytest.fixture
async def rig(storage: Storage, clock: Clock, graph: MetaGraph) -> AsyncIterator[Rig]:
    made: list[Rig] = []

    async def make(**overrides: Any) -> Rig:
        values = {"api_base": graph.url, "access_token": TOKEN, "flush_interval": "1s"} | overrides
        built = Rig(storage, clock, _meta_sender.Config.model_validate(values))
        await built.sender.start()
        made.append(built)
        return built

    yield make  # type: ignore[misc]
    for built in made:
        await built.sender.close()


def dead_letters(rows: list[Any]) -> list[tuple[str, str | None]]:
    return [(row.idempotency_key, row.code) for row in rows]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- batching -------------------------------------------------------------------------------


async def test_2500_events_of_one_pixel_go_in_three_requests_of_at_most_1000(rig: Any, graph: MetaGraph, clock: Clock) -> None:
    meta = await rig()
    await meta.enqueue([purchase(n) for n in range(2500)])

    full_batches = await meta.run()
    held_back = await meta.run()  # the last 500 wait for flush_interval
    clock.advance(1)
    rest = await meta.run()

    assert (full_batches, held_back, rest) == (2000, 0, 500)
    assert [len(r.events) for r in graph.requests] == [1000, 1000, 500]
    assert [r.status for r in graph.requests] == [200, 200, 200]
    assert len(graph.received_events(PIXEL)) == 2500 and graph.duplicates(PIXEL) == 0
    assert await meta.storage.pending_count() == 0


async def test_each_pixel_gets_its_own_requests(rig: Any, graph: MetaGraph) -> None:
    meta = await rig(flush_interval="0s")
    await meta.enqueue([purchase(1), purchase(2, pixel="999999999"), purchase(3)])
    assert await meta.run() == 3
    assert sorted((r.pixel_id, len(r.events)) for r in graph.requests) == [(PIXEL, 2), ("999999999", 1)]


async def test_the_token_and_the_test_event_code_travel_in_the_json_body(rig: Any, graph: MetaGraph) -> None:
    meta = await rig(flush_interval="0s", test_event_code="TEST4711", api_version="v24.0")
    await meta.enqueue([purchase(1)])
    await meta.run()
    (request,) = graph.requests
    assert (request.version, request.token_in, request.body["access_token"], request.body["test_event_code"]) == (
        "v24.0", "body", TOKEN, "TEST4711")
    assert graph.pixels[PIXEL].test_event_codes == ["TEST4711"]


async def test_meta_keeps_the_first_of_two_events_with_the_same_name_and_event_id(graph: MetaGraph, clock: Clock) -> None:
    config = _meta_sender.Config(api_base=graph.url, access_token=TOKEN)
    sender = _meta_sender.Sender(config, [TAG], SenderContext(record_dry_run=_no_dry_run, now=clock))
    await sender.start()
    try:
        first = PendingItem(1, "k1", purchase(1).item, "meta_purchase", 0, T0)
        results = [await sender.send(PIXEL, [first]), await sender.send(PIXEL, [first])]
    finally:
        await sender.close()
    assert results == [[Result.delivered("http_200")]] * 2
    assert (len(graph.received_events(PIXEL)), graph.duplicates(PIXEL)) == (1, 1)


async def _no_dry_run(*args: Any) -> None:
    raise AssertionError("live mode must not record")


# -- events Meta would refuse --------------------------------------------------------------------


async def test_a_stale_event_is_dead_lettered_with_its_reason_and_the_rest_are_delivered(
    rig: Any, graph: MetaGraph, storage: Storage
) -> None:
    meta = await rig(flush_interval="0s")
    dead_before = sample("gateway_dead_letters_total", destination="meta", code="event_time_out_of_range")
    order_system = {"source": {"client": "shopify", "authenticated": True}}
    in_store = TAG.model_copy(update={"order_action_source": "physical_store"})
    await meta.enqueue([
        purchase(1),
        purchase(2, timestamp=T0 - timedelta(days=7, seconds=1)),
        purchase(3, timestamp=T0 + timedelta(minutes=2)),
        purchase(4, timestamp=T0 - timedelta(days=30), **order_system),  # system_generated: 7 days
        purchase(5, timestamp=T0 - timedelta(days=30), tag=in_store, **order_system),  # physical_store: 62 days
    ])

    assert await meta.run() == 5

    assert sorted(e["event_id"] for e in graph.received_events(PIXEL)) == ["ORD-1", "ORD-5"]
    assert len(graph.requests) == 1
    assert sorted(dead_letters(await storage.list_dead_letters())) == [
        (f"meta:{PIXEL}:Purchase:ORD-2", "event_time_out_of_range"),
        (f"meta:{PIXEL}:Purchase:ORD-3", "event_time_out_of_range"),
        (f"meta:{PIXEL}:Purchase:ORD-4", "event_time_out_of_range"),
    ]
    messages = sorted(row.message or "" for row in await storage.list_dead_letters())
    assert messages == ["event_time is more than 7 days old; Meta refuses such events"] * 2 + [
        "event_time is more than a minute in the future; Meta refuses such events"]
    assert sample("gateway_dead_letters_total", destination="meta", code="event_time_out_of_range") == dead_before + 3


async def test_a_batch_refused_for_one_bad_event_is_split_and_the_others_are_delivered(
    rig: Any, graph: MetaGraph, storage: Storage
) -> None:
    meta = await rig(flush_interval="0s")
    deliveries = [purchase(n) for n in range(100)]
    deliveries[37] = bad_item(37)
    await meta.enqueue(deliveries)

    assert await meta.run() == 100

    assert len(graph.received_events(PIXEL)) == 99
    assert dead_letters(await storage.list_dead_letters()) == [(f"meta:{PIXEL}:Purchase:ORD-37", "100")]
    (dead,) = await storage.list_dead_letters()
    assert dead.message is not None and dead.message.startswith(
        "Invalid parameter - user_data.em must be hashed with SHA-256")
    assert TOKEN not in (dead.message or "")
    # One request for the batch, then two per halving on the bad event's path (100, 50, 25, 13, 6, 3, 1):
    # 13, within the 1 + 2 * ceil(log2(100)) = 15 that one bad event can cost.
    assert len(graph.requests) == 13
    assert await storage.pending_count() == 0


async def test_a_batch_of_only_bad_events_costs_a_bounded_number_of_requests_and_the_rest_wait(
    rig: Any, graph: MetaGraph, storage: Storage
) -> None:
    meta = await rig(flush_interval="0s")
    await meta.enqueue([bad_item(n) for n in range(64)])

    assert await meta.run() == 64

    assert len(graph.requests) == 1 + 4 * 6
    assert graph.received_events(PIXEL) == []
    isolated = await storage.list_dead_letters()
    assert 0 < len(isolated) < 64 and {row.code for row in isolated} == {"100"}
    assert await storage.pending_count() == 64 - len(isolated)  # retried later, and split again


async def test_splitting_stops_in_time_for_the_dispatcher_and_leaves_the_rest_for_later(graph: MetaGraph, clock: Clock) -> None:
    graph.delay = 0.25
    config = _meta_sender.Config(api_base=graph.url, access_token=TOKEN)
    sender = _meta_sender.Sender(config, [TAG], SenderContext(record_dry_run=_no_dry_run, now=clock, request_timeout=1.0))
    items = [PendingItem(n, f"k{n}", (bad_item(n) if n == 0 else purchase(n)).item, "meta_purchase", 0, T0) for n in range(64)]
    await sender.start()
    try:
        started = time.monotonic()
        results = await sender.send(PIXEL, items)
        elapsed = time.monotonic() - started
    finally:
        await sender.close()
    assert elapsed < 1.0  # within request_timeout, the dispatcher's limit for the whole batch
    delivered = [r for r in results if r.outcome == "delivered"]
    assert len(delivered) >= 32 and results[0].outcome == "retry"
    assert {r.code for r in results if r.outcome != "delivered"} <= {"timeout", "split_unfinished"}


async def test_a_pixel_the_token_cannot_see_fails_the_batch_at_once_without_splitting(
    rig: Any, graph: MetaGraph, storage: Storage
) -> None:
    meta = await rig(flush_interval="0s")
    await meta.enqueue([purchase(n, pixel="no-such-pixel") for n in range(10)])
    assert await meta.run() == 10
    assert len(graph.requests) == 1
    assert {row.code for row in await storage.list_dead_letters()} == {"100/33"}


# -- answers that are not Meta's "no" -----------------------------------------------------------


async def test_an_invalid_token_pauses_the_pixel_and_its_events_stay_pending(
    rig: Any, graph: MetaGraph, storage: Storage, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics.DESTINATION_PAUSED.labels("meta", "invalid_token").set(0)
    meta = await rig(flush_interval="0s", access_token="EAAB-expired-token")
    await meta.enqueue([purchase(n) for n in range(5)])

    with caplog.at_level(logging.INFO, logger="gateway.meta"):
        assert await meta.run() == 5
        clock.advance(3600)
        assert await meta.run() == 0  # paused: nothing is claimed, nothing is sent

    assert meta.sender.paused(PIXEL) and not meta.sender.paused("999999999")
    assert await storage.pending_count() == 5 and await storage.list_dead_letters() == []
    assert len(graph.requests) == 1 and graph.requests[0].answer["error"]["code"] == 190
    assert sample("gateway_destination_paused", destination="meta", reason="invalid_token") == 1
    (line,) = [r for r in caplog.records if r.name == "gateway.meta"]
    assert line.levelno == logging.ERROR and "paused" in line.getMessage() and PIXEL in line.getMessage()
    assert "EAAB-expired-token" not in caplog.text


async def test_a_token_error_pauses_only_the_pixel_it_came_from(rig: Any, graph: MetaGraph) -> None:
    meta = await rig(flush_interval="0s")
    graph.fail_next("token")
    await meta.enqueue([purchase(1)])
    await meta.run()
    await meta.enqueue([purchase(2, pixel="999999999")])
    assert await meta.run() == 1
    assert (meta.sender.paused(PIXEL), meta.sender.paused("999999999")) == (True, False)
    assert [e["event_id"] for e in graph.received_events("999999999")] == ["ORD-2"]


async def test_a_rate_limit_is_retried_after_the_time_meta_names(
    rig: Any, graph: MetaGraph, storage: Storage, clock: Clock
) -> None:
    meta = await rig(flush_interval="0s")
    graph.fail_next("rate_limit", code=80004, retry_minutes=5)
    await meta.enqueue([purchase(1), purchase(2)])

    assert await meta.run() == 2
    clock.advance(299)
    assert await meta.run() == 0
    clock.advance(2)
    assert await meta.run() == 2

    assert [r.status for r in graph.requests] == [400, 200]
    assert len(graph.received_events(PIXEL)) == 2 and await storage.pending_count() == 0


async def test_a_rate_limit_without_a_usage_header_is_retried_after_a_minute(rig: Any, graph: MetaGraph, clock: Clock) -> None:
    meta = await rig(flush_interval="0s")
    graph.fail_next("rate_limit")
    await meta.enqueue([purchase(1)])
    await meta.run()
    clock.advance(59)
    assert await meta.run() == 0
    clock.advance(2)
    assert await meta.run() == 1
    assert len(graph.received_events(PIXEL)) == 1


async def test_a_server_error_is_retried_with_the_dispatcher_backoff(
    rig: Any, graph: MetaGraph, storage: Storage, clock: Clock
) -> None:
    meta = await rig(flush_interval="0s")
    graph.fail_next("server", times=2)
    await meta.enqueue([purchase(1)])
    for _ in range(3):
        await meta.run()
        clock.advance(5)
    assert [r.status for r in graph.requests] == [500, 500, 200]
    assert await storage.pending_count() == 0


async def test_no_answer_is_retried(rig: Any, graph: MetaGraph, storage: Storage) -> None:
    await graph.close()  # nothing listens on the port any more
    meta = await rig(flush_interval="0s")
    await meta.enqueue([purchase(1)])
    assert await meta.run() == 1
    assert await storage.pending_count() == 1 and await storage.list_dead_letters() == []


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        pytest.param(400, {"error": {"code": 190, "error_subcode": 463, "message": "Session has expired"}}, {},
                     ("token", "190/463"), id="expired-token"),
        pytest.param(400, {"error": {"code": 4, "message": "Application request limit reached"}}, {},
                     ("rate_limit", "4"), id="app-rate-limit"),
        pytest.param(400, {"error": {"code": 613, "message": "Calls within one hour exceeded"}}, {"Retry-After": "120"},
                     ("rate_limit", "613"), id="custom-rate-limit"),
        pytest.param(500, {"error": {"code": 1, "message": "An unknown error occurred"}}, {}, ("transient", "1"), id="unknown"),
        pytest.param(400, {"error": {"code": 100, "message": "Invalid parameter", "is_transient": True}}, {},
                     ("transient", "100"), id="flagged-transient"),
        pytest.param(502, b"<html>bad gateway</html>", {}, ("transient", "http_502"), id="html-5xx"),
        pytest.param(429, b"", {}, ("rate_limit", "http_429"), id="http-429"),
        pytest.param(403, {"error": {"code": 200, "message": "Permissions error"}}, {}, ("pixel", "200"), id="permission"),
        pytest.param(400, {"error": {"code": 100, "error_subcode": 2804003, "message": "Invalid parameter"}}, {},
                     ("data", "100/2804003"), id="data"),
        pytest.param(400, {"error": {"code": 2500, "message": "Unknown path components"}}, {}, ("other", "2500"), id="other"),
    ],
)
def test_meta_errors_are_classified_by_code_before_status(status: int, body: Any, headers: dict[str, str],
                                                          expected: tuple[str, str]) -> None:
    error = _meta.parse_error(status, body if isinstance(body, bytes) else orjson.dumps(body))
    assert (error.kind, error.result_code) == expected


def test_the_wait_comes_from_the_usage_header_then_retry_after() -> None:
    usage = '{"123": [{"type": "ads_management", "estimated_time_to_regain_access": 2}, {"estimated_time_to_regain_access": 7}]}'
    assert [_meta.rate_limit_wait({"X-Business-Use-Case-Usage": usage}), _meta.rate_limit_wait({"Retry-After": "30"}),
            _meta.rate_limit_wait({"X-Business-Use-Case-Usage": "garbage"}), _meta.rate_limit_wait({})] == [420.0, 30.0, None, None]


def test_an_error_message_never_carries_the_token() -> None:
    error = _meta.GraphError(400, 190, message=f"Malformed access token {TOKEN}", fbtrace_id="Abc")
    assert error.describe(TOKEN) == "Malformed access token *** (fbtrace_id Abc)"


# -- dry run ------------------------------------------------------------------------------------


async def test_dry_run_records_the_exact_request_with_the_token_masked_and_sends_nothing(
    rig: Any, graph: MetaGraph, storage: Storage
) -> None:
    meta = await rig(mode="dry_run", flush_interval="0s", test_event_code="TEST1")
    deliveries = [purchase(1), purchase(2), purchase(3, timestamp=T0 - timedelta(days=8))]
    await meta.enqueue(deliveries)

    assert await meta.run() == 3

    (record,) = await storage.list_dry_runs(10)
    assert (record.destination, record.batch_key, record.item_count) == ("meta", PIXEL, 2)
    assert record.request == {
        "method": "POST", "url": f"{graph.url}/v27.0/{PIXEL}/events", "headers": {"Content-Type": "application/json"},
        "body": {"data": [deliveries[0].item, deliveries[1].item], "access_token": "***", "test_event_code": "TEST1"},
    }
    assert TOKEN not in str(record.request)
    assert graph.requests == [] and await storage.pending_count() == 0
    assert dead_letters(await storage.list_dead_letters()) == [(f"meta:{PIXEL}:Purchase:ORD-3", "event_time_out_of_range")]


# -- the fake refuses what Meta refuses ------------------------------------------------------


def _with(**changes: Any) -> list[dict[str, Any]]:
    item = dict(purchase(1).item)
    for key, value in changes.items():
        if key.startswith("user_data__"):
            item["user_data"] = {**item["user_data"], key.removeprefix("user_data__"): value}
        elif value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return [{k: v for k, v in item.items() if v is not None}]


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        pytest.param({"data": _with(), "access_token": TOKEN}, (200, None, None), id="valid"),
        pytest.param({"data": _with()}, (400, 190, None), id="no-token"),
        pytest.param({"data": _with() * 1001, "access_token": TOKEN}, (400, 100, None), id="1001-events"),
        pytest.param({"data": _with(user_data__client_user_agent=None), "access_token": TOKEN}, (400, 100, None),
                     id="website-without-user-agent"),
        pytest.param({"data": _with(event_source_url=None), "access_token": TOKEN}, (400, 100, None), id="website-without-url"),
        pytest.param({"data": _with(user_data__em=["jane@example.com"]), "access_token": TOKEN}, (400, 100, None),
                     id="unhashed-email"),
        pytest.param({"data": _with(user_data__client_ip_address="a" * 64), "access_token": TOKEN}, (400, 100, None),
                     id="hashed-ip"),
        pytest.param({"data": _with(event_time=int((T0 - timedelta(days=8)).timestamp())), "access_token": TOKEN},
                     (400, 100, 2804003), id="eight-days-old"),
        pytest.param({"data": _with(action_source="system_generated", event_source_url=None,
                                    user_data={"fn": ["a" * 64], "ge": ["b" * 64]}), "access_token": TOKEN},
                     (400, 100, 2804050), id="first-name-and-gender-only"),
        pytest.param({"data": _with(custom_data={"value": 1.0}), "access_token": TOKEN}, (400, 100, None),
                     id="purchase-without-currency"),
    ],
)
async def test_the_fake_refuses_what_meta_documents_as_refused(graph: MetaGraph, body: dict[str, Any],
                                                               answer: tuple[int, int | None, int | None]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{graph.url}/v25.0/{PIXEL}/events", json=body) as response:
            status, payload = response.status, await response.json()
    error = payload.get("error", {})
    assert (status, error.get("code"), error.get("error_subcode")) == answer
    assert (payload["events_received"] == 1) if status == 200 else ("fbtrace_id" in error and "type" in error)


# -- config -------------------------------------------------------------------------------------


def test_the_container_example_validates_with_its_defaults() -> None:
    config = _meta_sender.Config.model_validate(
        {"mode": "live", "api_base": "https://graph.facebook.com/", "api_version": "v27.0", "access_token": "test-token"})
    assert config.model_dump() == {
        "mode": "live", "api_base": "https://graph.facebook.com", "api_version": "v27.0", "access_token": "test-token",
        "test_event_code": None, "flush_interval": timedelta(seconds=1), "max_batch_size": 1000,
    }


def test_dry_run_needs_no_token() -> None:
    assert _meta_sender.Config(mode="dry_run").access_token == ""


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        pytest.param({}, [": Value error, access_token is required in live mode"], id="live-without-token"),
        pytest.param({"access_token": "  "}, [": Value error, access_token is required in live mode"], id="blank-token"),
        pytest.param({"access_token": "t", "max_batch_size": 1001}, ["max_batch_size: Input should be less than or equal to 1000"],
                     id="batch-over-1000"),
        pytest.param({"access_token": "t", "api_version": "25"}, ["api_version: String should match pattern '^v\\d+\\.\\d+$'"],
                     id="version"),
        pytest.param({"access_token": "t", "api_base": "graph.facebook.com"},
                     ["api_base: Value error, must be an http:// or https:// URL"], id="base-url"),
        pytest.param({"access_token": "t", "pixel_id": "1"}, ["pixel_id: Extra inputs are not permitted"], id="unknown-key"),
    ],
)
def test_a_bad_destination_section_is_reported_by_key(values: dict[str, Any], errors: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        _meta_sender.Config.model_validate(values)
    assert format_validation_error("", info.value) == errors


def test_the_sender_takes_its_batch_size_and_flush_interval_from_the_config() -> None:
    config = _meta_sender.Config(access_token="t", max_batch_size=250, flush_interval="5s")
    sender = _meta_sender.Sender(config, [TAG], SenderContext(record_dry_run=_no_dry_run))
    assert (sender.destination, sender.max_batch_size, sender.flush_interval) == ("meta", 250, 5.0)


def test_the_default_graph_api_version_is_metas_newest() -> None:
    # Ref - https://developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions
    # v27.0 was released on 2026-11-04; the Marketing API retires v25.0 on 2027-02-23.
    assert _meta_sender.Config(mode="dry_run").api_version == "v27.0"
