"""The http_request tag (config, build) and its sender against a fake endpoint on 127.0.0.1."""

from __future__ import annotations

import copy
import hashlib
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
import pytest
from pydantic import ValidationError

from gateway.config import DeliverySection, format_validation_error
from gateway.delivery import Delivery, Result
from gateway.dispatcher import Dispatcher, dry_run_recorder
from gateway.event import Event
from gateway.sender import PendingItem, SenderContext
from gateway.storage.sqlite import SQLiteStorage
from tags import _http_sender, http_request
from tests.fakes.http_sink import HttpSink, Reply

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
EXAMPLE = {
    "name": "forward_everything",
    "type": "http_request",
    "trigger": "all_events",
    "url": "https://collector.example.test/events",
    "headers": {"Authorization": "Bearer test-token"},
}


def config(**overrides: Any) -> http_request.Config:
    return http_request.Config.model_validate(EXAMPLE | overrides)


def purchase(**fields: Any) -> Event:
    values: dict[str, Any] = {"event_name": "purchase", "event_id": "ev-1", "timestamp": T0, "value": 42.5,
                              "currency": "EUR", "transaction_id": "ORD-1", "consent": {"ad_user_data": "granted"}}
    return Event.from_data(values | fields)


def pending(item: dict[str, Any], key: str = "k1") -> PendingItem:
    return PendingItem(id=1, idempotency_key=key, item=item, tag="forward_everything", attempts=0, created_at=T0)


async def _unused_recorder(*args: Any) -> None:
    raise AssertionError("live mode must not record")


async def send_one(tag: http_request.Config, item: dict[str, Any], timeout: float = 2.0) -> Result:
    ctx = SenderContext(record_dry_run=_unused_recorder, now=lambda: T0, request_timeout=timeout)
    sender = _http_sender.Sender(None, [tag], ctx)
    await sender.start()
    try:
        (result,) = await sender.send(tag.name, [pending(item)])
    finally:
        await sender.close()
    return result


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    async with HttpSink() as running:
        yield running


# -- config ---------------------------------------------------------------------------


def test_the_example_config_validates_with_its_defaults() -> None:
    assert config().model_dump() == EXAMPLE | {"method": "POST", "mode": "live", "batch_size": 1, "secret_headers": []}


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        pytest.param({"url": "ftp://example.test/x"}, ["url: Value error, must be an http:// or https:// URL"], id="ftp-url"),
        pytest.param({"url": "https:///no-host"}, ["url: Value error, must be an http:// or https:// URL"], id="no-host"),
        pytest.param({"url": "http://example.test:port/"}, ["url: Value error, must be an http:// or https:// URL"],
                     id="bad-port"),
        pytest.param({"method": "GET"}, ["method: Input should be 'POST' or 'PUT'"], id="get"),
        pytest.param({"mode": "test"}, ["mode: Input should be 'live' or 'dry_run'"], id="unknown-mode"),
        pytest.param({"headers": {"X-Token": "a\r\nInjected: 1"}},
                     ["headers: Value error, the value of header X-Token contains a line break"], id="header-injection"),
        pytest.param({"headers": {"Bad Name": "1"}},
                     ["headers: Value error, header names may hold letters, digits and !#$%&'*+-.^_`|~ only"],
                     id="header-name"),
        pytest.param({"headers": {"Content-Length": "1"}},
                     ["headers: Value error, header Content-Length is set by the gateway and cannot be configured"],
                     id="reserved-header"),
        pytest.param({"body": "{}"}, ["body: Extra inputs are not permitted"], id="unknown-key"),
        pytest.param({"url": "https://user:s3cret@hooks.example/in", "headers": {"authorization": "Bearer t"}},
                     ["headers: Value error, an Authorization header cannot go with credentials in the url "
                      "(user:password@); keep one of them"], id="userinfo-and-authorization"),
    ],
)
def test_a_bad_config_is_reported_by_key_without_its_value(overrides: dict[str, Any], errors: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        config(**overrides)
    assert format_validation_error("", info.value) == errors


# -- build ------------------------------------------------------------------------------


def test_build_forwards_the_whole_event_keyed_by_tag_and_event_id() -> None:
    event = purchase()
    assert http_request.build(event, config()) == [
        Delivery(
            destination="http_request",
            batch_key="forward_everything",
            idempotency_key="http_request:forward_everything:ev-1",
            item={"event_name": "purchase", "event_id": "ev-1", "timestamp": "2026-03-01T12:00:00Z", "value": 42.5,
                  "currency": "EUR", "transaction_id": "ORD-1", "consent": {"ad_user_data": "granted"}, "extra": {}},
            tag="forward_everything",
        )
    ]


def test_build_is_deterministic() -> None:
    event = purchase(user_data={"email_address": "someone@example.test"})
    assert http_request.build(event, config()) == http_request.build(copy.deepcopy(event), config())


def test_without_event_id_the_key_is_a_hash_of_the_sorted_body() -> None:
    event = purchase(event_id=None, extra={"b": 1, "a": 2})
    (delivery,) = http_request.build(event, config())
    assert orjson.loads(delivery.raw) == delivery.item and b'"extra":{"a":2,"b":1}' in delivery.raw  # the stored body
    digest = hashlib.sha256(delivery.raw).hexdigest()
    assert delivery.idempotency_key == f"http_request:forward_everything:{digest}"
    reordered = purchase(event_id=None, extra={"a": 2, "b": 1})
    assert http_request.build(reordered, config())[0].idempotency_key == delivery.idempotency_key


def test_idempotency_keys_differ_between_tags_and_between_events() -> None:
    keys = {
        http_request.build(purchase(), config())[0].idempotency_key,
        http_request.build(purchase(), config(name="other_tag"))[0].idempotency_key,
        http_request.build(purchase(event_id="ev-2"), config())[0].idempotency_key,
        http_request.build(purchase(event_id=None), config())[0].idempotency_key,
        http_request.build(purchase(event_id=None, value=1.0), config())[0].idempotency_key,
    }
    assert len(keys) == 5


# -- sending -----------------------------------------------------------------------------


async def test_the_sender_sends_the_item_as_json_with_the_configured_method_and_headers(sink: HttpSink) -> None:
    tag = config(url=f"{sink.url}/in?source=gw", method="PUT", headers={"Authorization": "Bearer test-token"})
    item = {"event_name": "purchase", "value": 42.5, "items": [{"item_id": "SKU-1"}]}
    assert await send_one(tag, item) == Result.delivered("http_200")
    (received,) = sink.requests
    assert (received.method, received.path, received.query, received.body) == ("PUT", "/in", "source=gw", orjson.dumps(item))
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Authorization"] == "Bearer test-token"


async def test_a_configured_content_type_replaces_the_default(sink: HttpSink) -> None:
    tag = config(url=sink.url, headers={"content-type": "application/json; charset=utf-8"})
    await send_one(tag, {"a": 1})
    assert sink.requests[0].headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(Reply(201), Result.delivered("http_201"), id="201"),
        pytest.param(Reply(204, body=b""), Result.delivered("http_204"), id="204"),
        pytest.param(Reply(408, body=b""), Result.retry("http_408", "HTTP 408"), id="408"),
        pytest.param(Reply(425, body=b"too early"), Result.retry("http_425", "HTTP 425: too early"), id="425"),
        pytest.param(Reply(429, {"Retry-After": "30"}, b"slow down"), Result.retry("http_429", "HTTP 429: slow down", 30.0),
                     id="429-seconds"),
        pytest.param(Reply(503, {"Retry-After": "Sun, 01 Mar 2026 12:02:00 GMT"}, b"maintenance\n  window"),
                     Result.retry("http_503", "HTTP 503: maintenance window", 120.0), id="503-http-date"),
        pytest.param(Reply(500, {"Retry-After": "soon"}, b""), Result.retry("http_500", "HTTP 500"), id="500-bad-retry-after"),
        pytest.param(Reply(400, body=b'{"error":"bad field"}'), Result.permanent("http_400", 'HTTP 400: {"error":"bad field"}'),
                     id="400"),
        pytest.param(Reply(401, body=b""), Result.permanent("http_401", "HTTP 401"), id="401"),
        pytest.param(Reply(404, body=b"not here"), Result.permanent("http_404", "HTTP 404: not here"), id="404"),
        pytest.param(Reply(301, {"Location": "https://elsewhere.test/"}, b""), Result.permanent("http_301", "HTTP 301"),
                     id="redirect-not-followed"),
    ],
)
async def test_the_answer_decides_delivered_retry_or_permanent(sink: HttpSink, reply: Reply, expected: Result) -> None:
    sink.script(reply)
    assert await send_one(config(url=sink.url), {"a": 1}) == expected
    assert len(sink.requests) == 1


async def test_a_long_error_body_is_cut_to_200_characters(sink: HttpSink) -> None:
    sink.script(Reply(400, body=b"e" * 5000))
    result = await send_one(config(url=sink.url), {"a": 1})
    assert result == Result.permanent("http_400", "HTTP 400: " + "e" * 200)


async def test_a_refused_connection_is_retried() -> None:
    async with HttpSink() as closed_soon:
        url = closed_soon.url
    result = await send_one(config(url=url), {"a": 1})
    assert (result.outcome, result.code) == ("retry", "connection_error")


async def test_an_endpoint_that_does_not_answer_in_time_is_retried(sink: HttpSink) -> None:
    sink.script(Reply(200, delay=1.0))
    assert await send_one(config(url=sink.url), {"a": 1}, timeout=0.1) == Result.retry(
        "timeout", "no answer within delivery.request_timeout"
    )


async def test_an_item_of_a_tag_no_longer_configured_is_refused() -> None:
    ctx = SenderContext(record_dry_run=_unused_recorder)
    sender = _http_sender.Sender(None, [config()], ctx)
    results = await sender.send("removed_tag", [pending({"a": 1})])
    assert results == [Result.permanent("unknown_tag", "no http_request tag with this name in the config")]


async def test_dry_run_records_the_exact_request_with_credentials_masked_and_sends_nothing(
    sink: HttpSink, tmp_path: Path
) -> None:
    tag = config(url=f"{sink.url}/events?access_token=test-secret&v=2", mode="dry_run",
                 headers={"Authorization": "Bearer test-token", "X-Team": "growth"})
    storage = SQLiteStorage(str(tmp_path / "outbox.db"))
    await storage.open()
    try:
        ctx = SenderContext(record_dry_run=dry_run_recorder(storage, lambda: T0), now=lambda: T0)
        sender = _http_sender.Sender(None, [tag], ctx)
        dispatcher = Dispatcher(storage, {"http_request": sender}, DeliverySection(), now=lambda: T0, rng=random.Random(1))
        (delivery,) = http_request.build(purchase(), tag)
        await storage.enqueue([delivery], T0)

        assert await dispatcher.run_once() == 1
        records = await storage.list_dry_runs(10)
        pending_after = await storage.pending_count()
    finally:
        await storage.close()

    assert [(r.destination, r.batch_key, r.item_count, r.request, r.recorded_at) for r in records] == [
        ("http_request", "forward_everything", 1, {
            "method": "POST",
            "url": f"{sink.url}/events?access_token=***&v=2",
            "headers": {"Content-Type": "application/json", "Authorization": "***", "X-Team": "growth"},
            "body": delivery.item,
        }, T0)
    ]
    assert pending_after == 0
    assert sink.requests == []



# -- batches ----------------------------------------------------------------------------

async def run_dispatcher(tag: http_request.Config, events: list[Event], tmp_path: Path,
                         recorder: Any = _unused_recorder) -> tuple[int, SQLiteStorage]:
    storage = SQLiteStorage(str(tmp_path / "outbox.db"))
    await storage.open()
    ctx = SenderContext(record_dry_run=recorder or dry_run_recorder(storage, lambda: T0), now=lambda: T0)
    sender = _http_sender.Sender(None, [tag], ctx)
    await sender.start()
    try:
        dispatcher = Dispatcher(storage, {"http_request": sender}, DeliverySection(), now=lambda: T0,
                                rng=random.Random(1))
        await storage.enqueue([d for e in events for d in http_request.build(e, tag)], T0)
        batches = 0
        while await storage.pending_count():
            started = await dispatcher.run_once()
            if not started:
                break
            batches += 1
    finally:
        await sender.close()
    return batches, storage


async def test_with_a_batch_size_the_events_go_as_json_arrays_of_at_most_that_many(sink: HttpSink, tmp_path: Path) -> None:
    tag = config(url=f"{sink.url}/events", batch_size=4)
    events = [purchase(event_id=f"ev-{i}", transaction_id=f"ORD-{i}") for i in range(10)]

    _, storage = await run_dispatcher(tag, events, tmp_path)
    pending_after = await storage.pending_count()
    await storage.close()

    bodies = [request.json() for request in sink.requests]
    assert [len(body) for body in bodies] == [4, 4, 2]
    assert [item["event_id"] for body in bodies for item in body] == [f"ev-{i}" for i in range(10)]
    assert all(request.headers["Content-Type"] == "application/json" for request in sink.requests)
    assert pending_after == 0


async def test_a_batch_shares_its_answer_a_retry_for_every_event_of_it(sink: HttpSink, tmp_path: Path) -> None:
    sink.script(Reply(503, body=b"busy"))
    tag = config(url=f"{sink.url}/events", batch_size=10)
    events = [purchase(event_id=f"ev-{i}", transaction_id=f"ORD-{i}") for i in range(3)]
    ctx = SenderContext(record_dry_run=_unused_recorder, now=lambda: T0)
    sender = _http_sender.Sender(None, [tag], ctx)
    await sender.start()
    try:
        items = [pending(d.item, d.idempotency_key) for e in events for d in http_request.build(e, tag)]
        results = await sender.send(tag.name, items)
    finally:
        await sender.close()

    assert len(sink.requests) == 1 and len(sink.requests[0].json()) == 3
    assert [r.outcome for r in results] == ["retry"] * 3
    assert {r.code for r in results} == {"http_503"}


async def test_a_batched_dry_run_records_one_request_with_its_item_count(tmp_path: Path) -> None:
    tag = config(mode="dry_run", batch_size=50)
    events = [purchase(event_id=f"ev-{i}", transaction_id=f"ORD-{i}") for i in range(7)]

    _, storage = await run_dispatcher(tag, events, tmp_path, recorder=None)
    records = await storage.list_dry_runs(10)
    await storage.close()

    assert [(r.item_count, len(r.request["body"])) for r in records] == [(7, 7)]


def test_batch_size_is_bounded() -> None:
    with pytest.raises(ValidationError):
        config(batch_size=0)
    with pytest.raises(ValidationError):
        config(batch_size=1001)


def _stored_items(path: Path) -> list[bytes]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:  # delivered rows are kept until pruned
        return [bytes(row[0]) for row in conn.execute("SELECT item FROM outbox ORDER BY id")]


@pytest.mark.parametrize("batch_size", [1, 4])
async def test_the_request_body_is_the_outboxs_stored_json_byte_for_byte(sink: HttpSink, tmp_path: Path,
                                                                         batch_size: int) -> None:
    """The items travel as the outbox stored them, an array of them joined as JSON writes one: never parsed and
    encoded again (about 50k instructions per GA4 event), and nothing the round trip could change."""
    tag = config(url=f"{sink.url}/events", batch_size=batch_size)
    events = [purchase(event_id=f"ev-{i}", transaction_id=f"ORD-{i}", value=0.1 + i, currency="EUR",
                       page_title="Caf\u00e9 \u2603 \"quoted\"") for i in range(6)]
    db = tmp_path / "outbox.db"

    _, storage = await run_dispatcher(tag, events, tmp_path)
    await storage.close()

    stored = _stored_items(db)
    bodies = [request.body for request in sink.requests]
    if batch_size == 1:
        assert bodies == stored
    else:
        assert bodies == [b"[" + b",".join(stored[i:i + 4]) + b"]" for i in range(0, 6, 4)]
    assert [orjson.loads(body) for body in bodies] == (
        [orjson.loads(s) for s in stored] if batch_size == 1 else
        [[orjson.loads(s) for s in stored[i:i + 4]] for i in range(0, 6, 4)])


def test_a_pending_item_reads_its_item_from_the_stored_json_once_and_only_when_asked() -> None:
    raw = orjson.dumps({"event_name": "purchase", "value": 49.9})
    item = PendingItem(1, "k1", None, "forward_everything", 0, T0, raw=raw)
    assert item.raw is raw
    assert item._item is None  # a sender that takes raw never pays for the parse
    assert item.item == {"event_name": "purchase", "value": 49.9}
    assert item.item is item.item
    built = PendingItem(2, "k2", {"a": 1}, "forward_everything", 0, T0)
    assert built.raw == b'{"a":1}'
    with pytest.raises(ValueError):
        PendingItem(3, "k3", None, "forward_everything", 0, T0)
