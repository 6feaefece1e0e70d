"""The GA4 sender against the fake GA4 on 127.0.0.1: batching as gtag.js does, answers, the Measurement Protocol."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import aiohttp
import pytest
from pydantic import ValidationError

from gateway.config import format_validation_error
from gateway.delivery import Delivery, Result
from gateway.event import Event
from gateway.sender import OutgoingRequest, PendingItem, SenderContext
from tags import _ga4_sender, ga4, ga4_refund
from tests.fakes.ga4 import FakeGA4

T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=timezone.utc)
TID = "G-ABC123XYZ"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
FORWARD = ga4.Config(name="ga4_forward", type="ga4", trigger="all_events")
REFUNDS = ga4_refund.Config(name="ga4_refunds", type="ga4_refund", trigger="refunds", measurement_id=TID,
                            api_secret="test-secret")
GRANTED = {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
           "ad_personalization": "granted"}


def page_event(name: str, page: int = 1, agent: str = UA, **extra: Any) -> Delivery:
    event = Event.from_data({
        "event_name": name, "timestamp": T0, "client_id": f"{page}.1732360000", "user_agent": agent,
        "ip_override": "203.0.113.7", "page_location": f"https://shop.example/p{page}", "consent": GRANTED,
        "extra": {"measurement_id": TID, "x-ga-page_id": page, **extra},
    })
    return ga4.build(event, FORWARD)[0]


def refund(n: int, timestamp: datetime = T0) -> Delivery:
    event = Event.from_data({
        "event_name": "refund", "timestamp": timestamp, "transaction_id": f"ORD-{n}", "value": 10.0, "currency": "EUR",
        "consent": GRANTED, "source": {"client": "order_webhook", "authenticated": True},
        "adjustment": {"type": "RESTATEMENT", "adjustment_id": f"ORD-{n}/r1", "order_id": f"ORD-{n}"},
    })
    return ga4_refund.build(event, REFUNDS)[0]


def pending(deliveries: list[Delivery]) -> list[PendingItem]:
    return [PendingItem(i, d.idempotency_key, d.item, d.tag, 0, T0) for i, d in enumerate(deliveries)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGA4]:
    async with FakeGA4(api_secrets={TID: "test-secret"}, now=lambda: T0) as running:
        yield running


async def send(fake: FakeGA4, batch_key: str, deliveries: list[Delivery], **options: Any) -> list[Result]:
    config = _ga4_sender.Config.model_validate({"collect_base": fake.url, **options})
    sender = _ga4_sender.Sender(config, [FORWARD, REFUNDS], SenderContext(record_dry_run=_no_dry_run, now=lambda: T0,
                                                                          request_timeout=5))
    await sender.start()
    try:
        return await sender.send(batch_key, pending(deliveries))
    finally:
        await sender.close()


async def _no_dry_run(*args: Any) -> None:
    raise AssertionError("live mode recorded a dry run")


async def test_one_pages_events_go_in_one_post_one_line_each(fake: FakeGA4) -> None:
    deliveries = [page_event("page_view"), page_event("scroll", extra_param=1), page_event("page_view", page=2)]

    results = await send(fake, f"collect:{TID}", deliveries)

    assert results == [Result.delivered("http_204")] * 3
    assert [(hit.method, [e["en"] for e in hit.events]) for hit in fake.hits] == [
        ("POST", ["page_view", "scroll"]), ("POST", ["page_view"])]
    assert [hit.user_agent for hit in fake.hits] == [UA, UA]
    assert fake.events(TID)[0]["_uip"] == "203.0.113.7" and fake.problems() == []


async def test_another_user_agent_is_another_request_and_no_agent_sends_none_of_ours(fake: FakeGA4) -> None:
    await send(fake, f"collect:{TID}", [page_event("page_view"), page_event("page_view", agent="")])

    assert [hit.user_agent for hit in fake.hits] == [UA, None]


async def test_a_page_with_more_than_25_events_is_split(fake: FakeGA4) -> None:
    deliveries = [page_event("scroll", n=i) for i in range(30)]

    await send(fake, f"collect:{TID}", deliveries)

    assert [len(hit.events) for hit in fake.hits] == [25, 5]


@pytest.mark.parametrize(("status", "retry_after", "expected"), [
    pytest.param(503, "7", Result.retry("http_503", "HTTP 503: Service Unavailable", 7.0), id="unavailable"),
    pytest.param(429, None, Result.retry("http_429", "HTTP 429: Service Unavailable", None), id="throttled"),
    pytest.param(400, None, Result.permanent("http_400", "HTTP 400: Service Unavailable"), id="refused"),
])
async def test_an_answer_is_every_line_of_its_requests_result(fake: FakeGA4, status: int, retry_after: str | None,
                                                               expected: Result) -> None:
    fake.fail_next(status, retry_after=retry_after)

    results = await send(fake, f"collect:{TID}", [page_event("page_view"), page_event("scroll")])

    assert results == [expected, expected]


async def test_no_connection_is_a_retry() -> None:
    async with FakeGA4() as gone:
        url = gone.url
    config = _ga4_sender.Config(collect_base=url)
    sender = _ga4_sender.Sender(config, [FORWARD], SenderContext(record_dry_run=_no_dry_run, request_timeout=5))
    await sender.start()
    try:
        [result] = await sender.send(f"collect:{TID}", pending([page_event("page_view")]))
    finally:
        await sender.close()

    assert (result.outcome, result.code) == ("retry", "connection_error")


async def test_refunds_go_to_the_measurement_protocol_with_the_streams_secret(fake: FakeGA4) -> None:
    results = await send(fake, f"mp:{TID}", [refund(1), refund(2)])

    assert results == [Result.delivered("http_204")] * 2
    assert [(e["name"], e["params"]["transaction_id"]) for e in fake.mp_events(TID)] == [("refund", "ORD-1"),
                                                                                        ("refund", "ORD-2")]


async def test_a_refund_older_than_72_hours_goes_without_its_timestamp(fake: FakeGA4) -> None:
    await send(fake, f"mp:{TID}", [refund(1, timestamp=T0 - timedelta(days=4))])

    [event] = fake.mp_events(TID)
    assert "timestamp_micros" not in event


async def test_validate_only_asks_the_validation_server_and_fails_what_it_refuses(fake: FakeGA4) -> None:
    bad = refund(2)
    bad = Delivery(bad.destination, bad.batch_key, bad.idempotency_key,
                   {**bad.item, "body": {**bad.item["body"], "events": [{"name": "_refund", "params": {}}]}}, bad.tag)

    results = await send(fake, f"mp:{TID}", [refund(1), bad], validate_only=True)

    assert results[0] == Result.delivered("validated")
    assert (results[1].outcome, results[1].code) == ("permanent", "NAME_INVALID")
    assert "events[0].name" in (results[1].message or "")
    assert fake.mp_events(TID) == [] and all(r.debug for r in fake.mp_requests)


async def test_a_refund_of_a_tag_no_longer_configured_fails_for_good(fake: FakeGA4) -> None:
    item = refund(1)
    orphan = Delivery(item.destination, item.batch_key, item.idempotency_key, item.item, "removed_tag")

    [result] = await send(fake, f"mp:{TID}", [orphan])

    assert (result.outcome, result.code) == ("permanent", "unknown_tag")


async def test_dry_run_records_each_request_with_the_secret_masked_and_sends_nothing(fake: FakeGA4) -> None:
    recorded: list[tuple[str, str, OutgoingRequest, int]] = []

    async def record(destination: str, batch_key: str, request: OutgoingRequest, count: int) -> None:
        recorded.append((destination, batch_key, request, count))

    config = _ga4_sender.Config(mode="dry_run", collect_base=fake.url)
    sender = _ga4_sender.Sender(config, [FORWARD, REFUNDS], SenderContext(record_dry_run=record, now=lambda: T0))
    await sender.start()
    try:
        mp = await sender.send(f"mp:{TID}", pending([refund(1)]))
        hits = await sender.send(f"collect:{TID}", pending([page_event("page_view"), page_event("scroll")]))
    finally:
        await sender.close()

    assert mp + hits == [Result.delivered("dry_run")] * 3
    assert [(d, key, r.url.split("?")[0], count) for d, key, r, count in recorded] == [
        ("ga4", f"mp:{TID}", f"{fake.url}/mp/collect", 1), ("ga4", f"collect:{TID}", f"{fake.url}/g/collect", 2)]
    assert recorded[0][2].url.endswith("api_secret=***") and "test-secret" not in str(recorded)
    assert fake.hits == [] and fake.mp_requests == []


def test_a_bad_destination_section_is_reported_by_key() -> None:
    with pytest.raises(ValidationError) as caught:
        _ga4_sender.Config.model_validate({"collect_base": "ftp://x", "mode": "sometimes", "unknown": 1})

    assert sorted(line.split(":")[0] for line in format_validation_error("destinations.ga4", caught.value)) == [
        "destinations.ga4.collect_base", "destinations.ga4.mode", "destinations.ga4.unknown"]


def _mp_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_id": "1.2", "events": [
        {"name": "refund", "params": {"transaction_id": "ORD-1", "value": 10.0, "currency": "EUR"}}]}
    return body | changes


@pytest.mark.parametrize(("body", "codes"), [
    pytest.param(_mp_body(), [], id="valid"),
    pytest.param(_mp_body(client_id=None), ["VALUE_REQUIRED"], id="no-client-id"),
    pytest.param(_mp_body(events=[{"name": "session_start"}]), ["NAME_RESERVED"], id="reserved-name"),
    pytest.param(_mp_body(events=[{"name": "2refund"}]), ["NAME_INVALID"], id="name-not-starting-with-a-letter"),
    pytest.param(_mp_body(events=[{"name": "x"}] * 26), ["EXCEEDED_MAX_ENTITIES"], id="26-events"),
    pytest.param(_mp_body(events=[{"name": "x", "params": {"p": "v" * 101}}]), ["VALUE_OUT_OF_BOUNDS"], id="long-value"),
    pytest.param(_mp_body(events=[{"name": "refund", "params": {"transaction_id": "O", "value": 1}}]),
                 ["VALUE_REQUIRED"], id="value-without-currency"),
    pytest.param(_mp_body(timestamp_micros=int((T0 - timedelta(hours=73)).timestamp() * 1e6)), ["VALUE_OUT_OF_BOUNDS"],
                 id="backdated-past-72-hours"),
])
async def test_the_fake_validation_server_refuses_what_google_documents_as_refused(fake: FakeGA4, body: dict[str, Any],
                                                                                   codes: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.url}/debug/mp/collect?measurement_id={TID}&api_secret=x", json=body) as response:
            answer = await response.json()

    assert (response.status, [m["validationCode"] for m in answer["validationMessages"]]) == (200, codes)


@pytest.mark.parametrize(("query", "problem"), [
    pytest.param(f"v=2&tid={TID}&cid=1.2&en=page_view", None, id="valid"),
    pytest.param(f"v=1&tid={TID}&cid=1.2&en=page_view", "v must be 2", id="protocol-1"),
    pytest.param(f"v=2&tid={TID}&en=page_view", "cid is required", id="no-client-id"),
    pytest.param(f"v=2&tid={TID}&cid=1.2&en=page-view", "en must start", id="bad-event-name"),
    pytest.param(f"v=2&tid={TID}&cid=1.2&en=x&ep.note={'v' * 101}", "longer than 100", id="long-value"),
    pytest.param(f"v=2&tid={TID}&cid=1.2&en=x&epn.count=three", "not a number", id="epn-text"),
])
async def test_the_fake_collect_endpoint_answers_204_and_notes_what_ga4_would_drop(fake: FakeGA4, query: str,
                                                                                   problem: str | None) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/g/collect?{query}") as response:
            status = response.status

    assert status == 204
    assert (fake.problems() == []) if problem is None else any(problem in p for p in fake.problems())


async def test_requests_unfinished_at_the_batchs_deadline_are_retried_and_only_they() -> None:
    slow_page = page_event("page_view", page=2)

    class SlowOnPage2(FakeGA4):
        async def _collect(self, request: Any) -> Any:
            if "p2" in request.query_string:
                await asyncio.sleep(30)  # cancelled long before
            return await super()._collect(request)

    async with SlowOnPage2() as slow:
        config = _ga4_sender.Config(collect_base=slow.url)
        sender = _ga4_sender.Sender(config, [FORWARD], SenderContext(record_dry_run=_no_dry_run, request_timeout=2))
        await sender.start()
        try:
            results = await sender.send(f"collect:{TID}", pending([page_event("page_view"), slow_page]))
        finally:
            await sender.close()

    assert results[0] == Result.delivered("http_204")
    assert (results[1].outcome, results[1].code) == ("retry", "unfinished")
