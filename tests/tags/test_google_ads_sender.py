"""The google_ads destination against the fake Google Ads API and OAuth server on 127.0.0.1.

Items are built by the real tags; batches go through the real sender, and
where batching, settling or pausing matters, through the real dispatcher over
a real SQLite outbox. Every body the fake accepted is also checked against
the google-ads package's request messages (the ``fake`` fixture's teardown).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from gateway.config import DeliverySection, StorageSection, format_validation_error
from gateway.delivery import Delivery, Result
from gateway.dispatcher import Dispatcher, dry_run_recorder
from gateway.event import Event
from gateway.sender import PendingItem, SenderContext
from gateway.storage import Storage, open_storage
from tags import _google_ads_sender as google_ads
from tags import google_ads_call_conversion, google_ads_click_conversion, google_ads_conversion_adjustment
from tests.fakes.google_ads import FakeGoogleAds
from tests.tags.google_ads_schema import SchemaError, check_request

T0 = datetime(2026, 7, 15, 12, 0, tzinfo=timezone.utc)
CUSTOMER = "1234567890"
ACTION = f"customers/{CUSTOMER}/conversionActions/987654321"
KIND_OF = {"uploadClickConversions": "click", "uploadCallConversions": "call", "uploadConversionAdjustments": "adjustment"}

CLICK = google_ads_click_conversion.Config.model_validate({
    "name": "gads_purchase", "type": "google_ads_click_conversion", "trigger": "purchase",
    "customer_id": CUSTOMER, "conversion_action_id": "987654321", "timezone": "Europe/Berlin",
})
CLICK_NO_ORDER = CLICK.model_copy(update={"name": "gads_purchase_by_click", "send_order_id": False})
CALL = google_ads_call_conversion.Config.model_validate({
    "name": "gads_calls", "type": "google_ads_call_conversion", "trigger": "qualified_call",
    "customer_id": CUSTOMER, "conversion_action_id": "987654321", "timezone": "Europe/Berlin",
})
ADJUST = google_ads_conversion_adjustment.Config.model_validate({
    "name": "gads_refund", "type": "google_ads_conversion_adjustment", "trigger": "refund_or_cancel",
    "customer_id": CUSTOMER, "conversion_action_id": "987654321", "timezone": "Europe/Berlin",
})
ADJUST_SHORT = ADJUST.model_copy(update={"name": "gads_refund_short", "retry_horizon": timedelta(hours=2)})
TAGS = [CLICK, CLICK_NO_ORDER, CALL, ADJUST, ADJUST_SHORT]


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def purchase(n: int, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "event_name": "purchase", "timestamp": T0 - timedelta(hours=1), "transaction_id": f"ORD-{n}",
        "value": 10.0 + n, "currency": "EUR", "gclid": f"test-gclid-{n}", "consent": {"ad_user_data": "granted"},
    }
    return Event.from_data(values | fields)


def click(n: int, tag: google_ads_click_conversion.Config = CLICK, **fields: Any) -> Delivery:
    return google_ads_click_conversion.build(purchase(n, **fields), tag)[0]


def adjustment(kind: str, tag: google_ads_conversion_adjustment.Config = ADJUST, **fields: Any) -> Delivery:
    event = Event.from_data({
        "event_name": "refund", "timestamp": T0, "consent": {"ad_user_data": "granted"},
        "user_data": {"email_address": "test@gmail.com"}, "user_agent": "Mozilla/5.0 (test)",
        "adjustment": {"type": kind, "adjustment_id": f"{kind}-1", "order_id": "ORD-1", "gclid": "test-gclid-1",
                       "conversion_time": T0 - timedelta(hours=1), "adjusted_value": 4.0, "currency": "EUR"} | fields,
    })
    return google_ads_conversion_adjustment.build(event, tag)[0]


def pending(delivery: Delivery, n: int = 1, attempts: int = 0, created_at: datetime = T0) -> PendingItem:
    return PendingItem(id=n, idempotency_key=delivery.idempotency_key, item=delivery.item, tag=delivery.tag,
                       attempts=attempts, created_at=created_at)


async def _no_dry_run(*args: Any) -> None:
    raise AssertionError("live mode must not record a dry run")


def destination(fake: FakeGoogleAds, **overrides: Any) -> google_ads.Config:
    return google_ads.Config.model_validate(
        {"api": "google_ads_api", "api_base": fake.url, "token_url": fake.token_url,
         "login_customer_id": "111-222-3333", "flush_interval": "50ms"} | fake.credentials | overrides
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogleAds]:
    async with FakeGoogleAds() as running:
        yield running
        for upload in running.uploads:
            if upload.status != 400:  # a 400 is the fake refusing a body; the test says why
                check_request(KIND_OF[upload.method], upload.body)


@pytest.fixture
async def make_sender() -> AsyncIterator[Callable[..., Any]]:
    started: list[google_ads.Sender] = []

    async def make(config: google_ads.Config, now: Callable[[], datetime] = Clock(),
                   record: Any = _no_dry_run) -> google_ads.Sender:
        sender = google_ads.Sender(config, TAGS, SenderContext(record_dry_run=record, now=now, request_timeout=5))
        await sender.start()
        started.append(sender)
        return sender

    yield make
    for sender in started:
        await sender.close()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened = open_storage(StorageSection(url=f"sqlite:///{tmp_path}/g.db"))
    await opened.open()
    yield opened
    await opened.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- config ---------------------------------------------------------------------------------------


def test_the_container_example_validates_with_its_defaults() -> None:
    config = google_ads.Config.model_validate({
        "mode": "live", "api_base": "https://googleads.googleapis.com", "api_version": "v26",
        "token_url": "https://oauth2.googleapis.com/token", "developer_token": "test-dev", "client_id": "test-id",
        "client_secret": "test-secret", "refresh_token": "test-refresh", "login_customer_id": "",
    })
    assert config.model_dump() == {
        "mode": "live", "api": "data_manager", "data_manager_base": "https://datamanager.googleapis.com",
        "api_base": "https://googleads.googleapis.com", "api_version": "v26",
        "token_url": "https://oauth2.googleapis.com/token", "developer_token": "test-dev", "client_id": "test-id",
        "client_secret": "test-secret", "refresh_token": "test-refresh", "login_customer_id": "", "validate_only": False,
        "debug_enabled": False, "job_id": None, "flush_interval": timedelta(seconds=10), "max_batch_size": 2000,
    }
    assert "test-secret" not in repr(config) and "test-refresh" not in repr(config) and "test-dev" not in repr(config)


@pytest.mark.parametrize(
    ("spec", "errors"),
    [
        pytest.param({}, [
            "destinations.google_ads.client_id: Value error, must be set in live mode (it may be empty only with mode: dry_run)",
            "destinations.google_ads.client_secret: Value error, must be set in live mode (it may be empty only with mode: dry_run)",
            "destinations.google_ads.refresh_token: Value error, must be set in live mode (it may be empty only with mode: dry_run)",
        ], id="live-without-credentials"),
        pytest.param({"mode": "dry_run", "login_customer_id": "123"}, [
            "destinations.google_ads.login_customer_id: Value error, must be a Google Ads customer id: 10 digits, dashes allowed",
        ], id="bad-login-customer-id"),
        pytest.param({"mode": "dry_run", "debug_enabled": True}, [
            "destinations.google_ads.debug_enabled: Value error, debugEnabled was removed from the API in v21; v26 has no such field",
        ], id="debug-enabled-in-v26"),
        pytest.param({"mode": "dry_run", "max_batch_size": 2001, "api_version": "26", "api_base": "ftp://x"}, [
            "destinations.google_ads.api_base: Value error, must be an http:// or https:// URL",
            "destinations.google_ads.api_version: Value error, must look like v26",
            "destinations.google_ads.max_batch_size: Input should be less than or equal to 2000",
        ], id="limits"),
        pytest.param({"mode": "dry_run", "job_id": 0, "endpoint": "x"}, [
            "destinations.google_ads.job_id: Input should be greater than or equal to 1",
            "destinations.google_ads.endpoint: Extra inputs are not permitted",
        ], id="job-id-and-unknown-key"),
    ],
)
def test_a_bad_section_is_reported_by_key_without_its_values(spec: dict[str, Any], errors: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        google_ads.Config.model_validate(spec)
    assert format_validation_error("destinations.google_ads", info.value) == errors


def test_dry_run_needs_no_credentials_and_the_login_customer_id_loses_its_dashes() -> None:
    config = google_ads.Config.model_validate({"mode": "dry_run", "login_customer_id": "111-222-3333"})
    assert (config.developer_token, config.login_customer_id) == ("", "1112223333")


def test_debug_enabled_is_accepted_for_versions_that_have_it() -> None:
    assert google_ads.Config.model_validate({"mode": "dry_run", "api_version": "v20", "debug_enabled": True}).debug_enabled


def test_the_sender_takes_batch_size_and_flush_interval_from_the_section() -> None:
    config = google_ads.Config.model_validate({"mode": "dry_run", "max_batch_size": 500, "flush_interval": "2s"})
    sender = google_ads.Sender(config, TAGS, SenderContext(record_dry_run=_no_dry_run))
    assert (sender.destination, sender.max_batch_size, sender.flush_interval) == ("google_ads", 500, 2.0)


# -- one request ------------------------------------------------------------------------------------


async def test_a_batch_is_one_request_with_google_headers_and_body(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake, job_id=42))
    items = [pending(click(n), n) for n in range(3)]
    assert await sender.send(f"{CUSTOMER}:click", items) == [Result.delivered()] * 3

    (upload,) = fake.uploads
    assert (upload.method, upload.version, upload.customer_id, upload.status) == ("uploadClickConversions", "v26", CUSTOMER, 200)
    assert {k.lower(): v for k, v in upload.headers.items() if k.lower() in (
        "developer-token", "login-customer-id", "authorization", "content-type")} == {
        "developer-token": "test-developer-token", "login-customer-id": "1112223333",
        "authorization": "Bearer ya29.fake-access-token-1", "content-type": "application/json",
    }
    assert upload.body == {"conversions": [i.item for i in items], "partialFailure": True, "jobId": 42}
    assert fake.accepted["click"] == [i.item for i in items]


async def test_call_conversions_go_to_upload_call_conversions_without_job_id(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake, job_id=42))
    events = [Event.from_data({"event_name": "qualified_call", "timestamp": T0, "consent": {"ad_user_data": "denied"},
                                    "extra": {"caller_id": f"+49 30 1234567{n}", "call_start_time": "2026-07-15T11:50:00Z"}})
              for n in range(2)]
    items = [pending(google_ads_call_conversion.build(e, CALL)[0], n) for n, e in enumerate(events)]
    assert await sender.send(f"{CUSTOMER}:call", items) == [Result.delivered()] * 2
    (upload,) = fake.uploads
    assert (upload.method, upload.body) == ("uploadCallConversions", {"conversions": [i.item for i in items], "partialFailure": True})


async def test_validate_only_is_sent_and_google_records_nothing(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake, validate_only=True))
    assert await sender.send(f"{CUSTOMER}:click", [pending(click(1))]) == [Result.delivered("validate_only")]
    assert fake.uploads[0].body["validateOnly"] is True
    assert fake.accepted["click"] == []


async def test_duplicates_in_a_batch_are_sent_once_and_share_the_result(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    same_order = click(1)
    same_click = click(2, CLICK_NO_ORDER)
    items = [pending(same_order, 1), pending(same_click, 2), pending(click(3), 3), pending(same_order, 4),
             pending(same_click, 5)]
    fake.fail_value("test-gclid-2", "EXPIRED_EVENT")
    results = await sender.send(f"{CUSTOMER}:click", items)
    expired = Result.permanent("EXPIRED_EVENT", "The imported event can't be recorded because its click occurred before "
                                                "this conversion's click-through window.")
    assert results == [Result.delivered(), expired, Result.delivered(), Result.delivered(), expired]
    assert fake.uploads[0].rows == 3


async def test_partial_failure_gives_each_row_its_own_outcome(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    fake.fail_rows({2: "UNPARSEABLE_GCLID", 7: "CONCURRENT_MODIFICATION"})
    results = await sender.send(f"{CUSTOMER}:click", [pending(click(n), n) for n in range(10)])
    assert results == [Result.delivered()] * 2 + [
        Result.permanent("UNPARSEABLE_GCLID", "The imported gclid could not be decoded."),
    ] + [Result.delivered()] * 4 + [
        Result.retry("CONCURRENT_MODIFICATION", "Multiple requests were attempting to modify the same resource at once. "
                                                "Retry the request."),
    ] + [Result.delivered()] * 2
    assert len(fake.accepted["click"]) == 8


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param(0, Result.permanent("ORDER_ID_ALREADY_IN_USE", "The imported event includes an order ID that was "
                                         "previously recorded, so the event was not processed."), id="first-attempt"),
        pytest.param(2, Result.delivered("ORDER_ID_ALREADY_IN_USE"), id="our-retry"),
    ],
)
async def test_an_order_id_already_in_use_is_ours_only_on_a_retry(
    fake: FakeGoogleAds, make_sender: Any, attempts: int, expected: Result
) -> None:
    sender = await make_sender(destination(fake))
    await sender.send(f"{CUSTOMER}:click", [pending(click(1))])
    again = click(1, timestamp=T0 - timedelta(minutes=30), gclid="test-gclid-other")  # same order, another click
    assert await sender.send(f"{CUSTOMER}:click", [pending(again, attempts=attempts)]) == [expected]


async def test_a_click_conversion_already_there_counts_as_delivered(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    item = pending(click(1, CLICK_NO_ORDER))
    assert await sender.send(f"{CUSTOMER}:click", [item]) == [Result.delivered()]
    assert await sender.send(f"{CUSTOMER}:click", [item]) == [Result.delivered("CLICK_CONVERSION_ALREADY_EXISTS")]


async def test_resource_exhausted_is_retried_after_googles_retry_delay(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    fake.fail_next(429, retry_delay=42)
    results = await sender.send(f"{CUSTOMER}:click", [pending(click(1), 1), pending(click(2), 2)])
    assert results == [Result.retry("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", 42.0)] * 2


@pytest.mark.parametrize(
    ("status", "code"), [(500, "INTERNAL_ERROR"), (503, "TRANSIENT_ERROR")],
)
async def test_server_errors_are_retried(fake: FakeGoogleAds, make_sender: Any, status: int, code: str) -> None:
    sender = await make_sender(destination(fake))
    fake.fail_next(status)
    assert await sender.send(f"{CUSTOMER}:click", [pending(click(1))]) == [Result.retry(code, "Internal error encountered.")]


async def test_a_whole_request_error_applies_to_every_item(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    bad = pending(click(1))
    bad = PendingItem(bad.id, bad.idempotency_key, bad.item | {"conversionTime": "yesterday"}, bad.tag, 0, T0)
    results = await sender.send(f"{CUSTOMER}:click", [bad, pending(click(2), 2)])
    assert [(r.outcome, r.code) for r in results] == [("permanent", "INVALID_ARGUMENT")] * 2
    assert results[0].message is not None and results[0].message.startswith("Invalid JSON payload received.")
    with pytest.raises(SchemaError):  # the schema check refuses what Google refuses
        check_request("click", fake.uploads[0].body)


async def test_a_permission_error_is_permanent_with_googles_code(make_sender: Any) -> None:
    async with FakeGoogleAds(login_customer_id="9998887777") as fake:
        sender = await make_sender(destination(fake))
        (result,) = await sender.send(f"{CUSTOMER}:click", [pending(click(1))])
    assert (result.outcome, result.code) == ("permanent", "USER_PERMISSION_DENIED")


async def test_an_unknown_batch_key_is_refused_without_a_request(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    assert await sender.send("gads_purchase", [pending(click(1))]) == [
        Result.permanent("bad_batch_key", "expected {customer_id}:{click|call|adjustment|restatement}")]
    assert fake.uploads == [] and fake.token_requests == 0


async def test_results_are_counted_by_kind_outcome_and_code(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    before = sample("gateway_google_ads_rows_total", kind="click", api="google_ads_api", outcome="permanent", code="CLICK_NOT_FOUND")
    fake.fail_rows({0: "CLICK_NOT_FOUND"})
    await sender.send(f"{CUSTOMER}:click", [pending(click(1))])
    assert sample("gateway_google_ads_rows_total", kind="click", api="google_ads_api", outcome="permanent", code="CLICK_NOT_FOUND") == before + 1


# -- adjustments ---------------------------------------------------------------------------------------


async def test_retraction_restatement_and_enhancement_find_their_conversions(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    await sender.send(f"{CUSTOMER}:click", [pending(click(1)), pending(click(2, CLICK_NO_ORDER), 2)])
    items = [
        pending(adjustment("RESTATEMENT"), 1),
        pending(adjustment("RETRACTION", adjustment_id="by-click", uploaded_with_order_id=False, order_id=None,
                           gclid="test-gclid-2"), 2),
        pending(adjustment("ENHANCEMENT"), 3),
    ]
    assert await sender.send(f"{CUSTOMER}:adjustment", items) == [Result.delivered()] * 3
    assert [row["adjustmentType"] for row in fake.accepted["adjustment"]] == ["RESTATEMENT", "RETRACTION", "ENHANCEMENT"]
    assert fake.accepted["adjustment"][1]["gclidDateTimePair"] == {
        "gclid": "test-gclid-2", "conversionDateTime": fake.accepted["click"][1]["conversionDateTime"]}

    again = await sender.send(f"{CUSTOMER}:adjustment", [pending(adjustment("RESTATEMENT"), 4),
                                                         pending(adjustment("ENHANCEMENT"), 5)])
    assert again == [Result.delivered("RESTATEMENT_ALREADY_EXISTS"), Result.delivered("CONVERSION_ALREADY_ENHANCED")]
    retract = await sender.send(f"{CUSTOMER}:adjustment", [pending(adjustment("RETRACTION"), 6)])
    assert retract == [Result.delivered()]
    assert await sender.send(f"{CUSTOMER}:adjustment", [pending(adjustment("RETRACTION"), 7)]) == [
        Result.delivered("CONVERSION_ALREADY_RETRACTED")]


async def test_an_enhancement_of_a_tag_uploaded_conversion_is_accepted(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    fake.add_conversion(ACTION, order_id="ORD-WEB-1")
    item = pending(adjustment("ENHANCEMENT", order_id="ORD-WEB-1", conversion_time=None))
    assert await sender.send(f"{CUSTOMER}:adjustment", [item]) == [Result.delivered()]
    assert fake.accepted["adjustment"][0]["userIdentifiers"][0]["hashedEmail"] == (
        "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674")


@pytest.mark.parametrize(
    ("tag", "attempts", "now", "expected"),
    [
        pytest.param(ADJUST, 0, T0 + timedelta(hours=1), ("retry", 1800.0), id="first-retry-waits-30m"),
        pytest.param(ADJUST, 3, T0 + timedelta(hours=1), ("retry", 14400.0), id="waits-double"),
        pytest.param(ADJUST, 6, T0 + timedelta(hours=70), ("retry", 7200.0), id="never-past-the-horizon"),
        pytest.param(ADJUST, 9, T0 + timedelta(hours=72), ("permanent", None), id="after-the-horizon"),
        pytest.param(ADJUST_SHORT, 2, T0 + timedelta(hours=1), ("retry", 3600.0), id="tag-horizon-2h"),
        pytest.param(ADJUST_SHORT, 2, T0 + timedelta(hours=3), ("permanent", None), id="after-tag-horizon"),
    ],
)
async def test_conversion_not_found_is_retried_within_the_tags_retry_horizon(
    fake: FakeGoogleAds, make_sender: Any, tag: Any, attempts: int, now: datetime, expected: tuple[str, float | None]
) -> None:
    sender = await make_sender(destination(fake), now=Clock(now))
    item = pending(adjustment("RETRACTION", tag=tag), attempts=attempts, created_at=T0)
    (result,) = await sender.send(f"{CUSTOMER}:adjustment", [item])
    assert (result.outcome, result.code, result.retry_after) == (expected[0], "CONVERSION_NOT_FOUND", expected[1])


async def test_too_recent_conversion_is_retried_like_not_found(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake), now=Clock(T0 + timedelta(minutes=5)))
    fake.fail_rows({0: "TOO_RECENT_CONVERSION"})
    (result,) = await sender.send(f"{CUSTOMER}:adjustment", [pending(adjustment("RETRACTION"))])
    assert (result.outcome, result.code, result.retry_after) == ("retry", "TOO_RECENT_CONVERSION", 1800.0)


# -- OAuth --------------------------------------------------------------------------------------------------


async def test_the_access_token_is_cached_between_batches(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    for n in range(3):
        await sender.send(f"{CUSTOMER}:click", [pending(click(n), n)])
    assert (fake.token_requests, len(fake.uploads)) == (1, 3)


async def test_batches_in_flight_share_one_refresh(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    results = await asyncio.gather(*(sender.send(f"{CUSTOMER}:click", [pending(click(n), n)]) for n in range(5)))
    assert results == [[Result.delivered()]] * 5
    assert fake.token_requests == 1


async def test_the_token_is_refreshed_shortly_before_it_expires(make_sender: Any) -> None:
    clock = Clock()
    async with FakeGoogleAds(expires_in=600) as fake:
        sender = await make_sender(destination(fake), now=clock)
        await sender.send(f"{CUSTOMER}:click", [pending(click(1), 1)])
        clock.now += timedelta(seconds=539)  # 600s minus a 60s margin: still fresh
        await sender.send(f"{CUSTOMER}:click", [pending(click(2), 2)])
        clock.now += timedelta(seconds=2)
        await sender.send(f"{CUSTOMER}:click", [pending(click(3), 3)])
        assert (fake.token_requests, [u.status for u in fake.uploads]) == (2, [200, 200, 200])


async def test_a_token_expired_mid_run_is_refreshed_and_the_batch_sent(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake))
    assert await sender.send(f"{CUSTOMER}:click", [pending(click(1), 1)]) == [Result.delivered()]
    fake.expire_tokens()
    before = sample("gateway_token_refreshes_total", destination="google_ads", outcome="ok")
    assert await sender.send(f"{CUSTOMER}:click", [pending(click(2), 2)]) == [Result.delivered()]
    assert [(u.status, u.headers["Authorization"]) for u in fake.uploads] == [
        (200, "Bearer ya29.fake-access-token-1"), (401, "Bearer ya29.fake-access-token-1"),
        (200, "Bearer ya29.fake-access-token-2")]
    assert sample("gateway_token_refreshes_total", destination="google_ads", outcome="ok") == before + 1


async def test_a_token_refused_twice_is_retried_later(make_sender: Any) -> None:
    async with FakeGoogleAds(expires_in=0) as fake:  # every token it issues is already expired
        sender = await make_sender(destination(fake))
        (result,) = await sender.send(f"{CUSTOMER}:click", [pending(click(1))])
        assert (result.outcome, result.code, fake.token_requests, len(fake.uploads)) == ("retry", "UNAUTHENTICATED", 2, 2)


async def test_an_unreachable_token_endpoint_is_retried(fake: FakeGoogleAds, make_sender: Any) -> None:
    async with FakeGoogleAds() as closed_soon:
        token_url = closed_soon.token_url
    sender = await make_sender(destination(fake, token_url=token_url))
    (result,) = await sender.send(f"{CUSTOMER}:click", [pending(click(1))])
    assert (result.outcome, result.code, sender.paused(f"{CUSTOMER}:click")) == ("retry", "oauth_unavailable", False)


async def test_invalid_grant_pauses_the_destination_and_items_stay_pending(
    fake: FakeGoogleAds, make_sender: Any, storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    fake.revoke()
    sender = await make_sender(destination(fake), now=Clock(T0 + timedelta(minutes=1)))
    dispatcher = Dispatcher(storage, {"google_ads": sender}, DeliverySection(), now=lambda: T0 + timedelta(minutes=1),
                            rng=random.Random(1))
    await storage.enqueue([click(n) for n in range(5)] + [adjustment("RETRACTION", conversion_time=T0 - timedelta(hours=25))], T0)

    with caplog.at_level(logging.ERROR, logger="gateway.google_ads"):
        assert await dispatcher.run_once() == 6
        assert await dispatcher.run_once() == 0  # paused: nothing more is claimed

    assert sender.paused(f"{CUSTOMER}:click") and sender.paused(f"{CUSTOMER}:adjustment")
    assert await storage.pending_count() == 6 and await storage.list_dead_letters() == []
    assert (fake.token_requests, fake.uploads) == (1, [])
    assert sample("gateway_destination_paused", destination="google_ads", reason="invalid_grant") == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "invalid_grant" in line and "paused" in line and "restart" in line
    assert not any(secret in line for secret in fake.credentials.values())


async def test_a_wrong_client_secret_pauses_the_destination_too(fake: FakeGoogleAds, make_sender: Any) -> None:
    sender = await make_sender(destination(fake, client_secret="not-the-secret"))
    assert await sender.send(f"{CUSTOMER}:click", [pending(click(1))]) == [
        Result.retry("invalid_client", "sending paused: OAuth invalid_client; fix the credentials and restart")]
    assert sender.paused(f"{CUSTOMER}:click")


# -- dry run ------------------------------------------------------------------------------------------------


async def test_dry_run_records_the_exact_request_masked_and_calls_nothing(
    fake: FakeGoogleAds, make_sender: Any, storage: Storage
) -> None:
    config = google_ads.Config.model_validate({"mode": "dry_run", "api": "google_ads_api", "api_base": fake.url, "token_url": fake.token_url,
                                               "developer_token": "test-developer-token", "job_id": 7})
    sender = await make_sender(config, record=dry_run_recorder(storage, lambda: T0))
    items = [pending(click(n), n) for n in range(2)] + [pending(click(0), 9)]
    assert await sender.send(f"{CUSTOMER}:click", items) == [Result.delivered("dry_run")] * 3

    (record,) = await storage.list_dry_runs(10)
    assert (record.destination, record.batch_key, record.item_count, record.recorded_at) == (
        "google_ads", f"{CUSTOMER}:click", 2, T0)
    assert record.request == {
        "method": "POST",
        "url": f"{fake.url}/v26/customers/{CUSTOMER}:uploadClickConversions",
        "headers": {"developer-token": "***", "Content-Type": "application/json", "Authorization": "***"},
        "body": {"conversions": [items[0].item, items[1].item], "partialFailure": True, "jobId": 7},
    }
    check_request("click", record.request["body"])
    assert (fake.token_requests, fake.uploads) == (0, [])


# -- through the dispatcher and the SQLite outbox --------------------------------------------------------------


async def test_4500_conversions_go_out_in_3_requests(fake: FakeGoogleAds, make_sender: Any, storage: Storage) -> None:
    sender = await make_sender(destination(fake))
    dispatcher = Dispatcher(storage, {"google_ads": sender}, DeliverySection(), now=lambda: T0 + timedelta(minutes=1),
                            rng=random.Random(1))
    await storage.enqueue([click(n) for n in range(4500)], T0)

    assert await dispatcher.run_once() == 4500
    assert sorted(u.rows for u in fake.uploads) == [500, 2000, 2000]
    assert (await storage.pending_count(), len(fake.accepted["click"]), fake.token_requests) == (0, 4500, 1)


async def test_rows_2_and_7_of_10_fail_on_their_own_and_8_are_delivered(
    fake: FakeGoogleAds, make_sender: Any, storage: Storage
) -> None:
    sender = await make_sender(destination(fake))
    dispatcher = Dispatcher(storage, {"google_ads": sender}, DeliverySection(), now=lambda: T0 + timedelta(minutes=1),
                            rng=random.Random(1))
    deliveries = [click(n) for n in range(10)]
    await storage.enqueue(deliveries, T0)
    fake.fail_rows({2: "UNPARSEABLE_GCLID", 7: "CONCURRENT_MODIFICATION"})

    assert await dispatcher.run_once() == 10
    dead = await storage.list_dead_letters()
    assert [(d.idempotency_key, d.code, d.message) for d in dead] == [
        (deliveries[2].idempotency_key, "UNPARSEABLE_GCLID", "The imported gclid could not be decoded.")]
    assert await storage.pending_count() == 1  # row 7, retried later
    assert [row["orderId"] for row in fake.accepted["click"]] == [f"ORD-{n}" for n in (0, 1, 3, 4, 5, 6, 8, 9)]


async def test_ten_thousand_conversions_take_five_requests_and_are_delivered_within_a_flush(
    fake: FakeGoogleAds, make_sender: Any, storage: Storage
) -> None:
    """The figures in the report: requests per 10,000 conversions, and enqueue-to-delivered time."""
    sender = await make_sender(destination(fake))  # flush_interval 50ms
    delivery = DeliverySection(poll_interval=timedelta(milliseconds=10))
    dispatcher = Dispatcher(storage, {"google_ads": sender}, delivery, rng=random.Random(1))
    await dispatcher.start()
    try:
        started = time.monotonic()
        await storage.enqueue([click(n) for n in range(10_000)], datetime.now(timezone.utc))
        dispatcher.wake()
        while await storage.pending_count():
            await asyncio.sleep(0.005)
        bulk = time.monotonic() - started

        single = []
        for n in range(10_000, 10_005):
            started = time.monotonic()
            await storage.enqueue([click(n)], datetime.now(timezone.utc))
            dispatcher.wake()
            while await storage.pending_count():
                await asyncio.sleep(0.002)
            single.append(time.monotonic() - started)
    finally:
        await dispatcher.stop()
    print(f"\n10,000 conversions: {len(fake.uploads) - 5} requests, enqueue to all delivered {bulk:.2f}s; "
          f"one conversion: enqueue to delivered {min(single) * 1000:.0f}-{max(single) * 1000:.0f}ms "
          f"(flush_interval 50ms, poll_interval 10ms)")
    assert sorted(u.rows for u in fake.uploads[:5]) == [2000] * 5
    assert len(fake.uploads) == 10
    assert max(single) < 1.0


# -- the fake answers like Google ------------------------------------------------------------------------------


async def _post(fake: FakeGoogleAds, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.token_url, data={"grant_type": "refresh_token", **{
                k: fake.credentials[k] for k in ("client_id", "client_secret", "refresh_token")}}) as response:
            token = (await response.json())["access_token"]
        sent = {"Authorization": f"Bearer {token}", "developer-token": "test-developer-token",
                "Content-Type": "application/json"} | headers
        async with session.post(fake.url + path, json=body, headers=sent) as response:
            return response.status, await response.json()


async def test_the_fake_reports_duplicates_in_googles_partial_failure_shape(fake: FakeGoogleAds) -> None:
    row = {"gclid": "g-1", "conversionAction": ACTION, "conversionDateTime": "2026-07-15 14:00:00+02:00"}
    status, answer = await _post(fake, f"/v26/customers/{CUSTOMER}:uploadClickConversions",
                                 {"conversions": [row, row], "partialFailure": True, "jobId": 5})
    assert (status, answer) == (200, {
        "partialFailureError": {
            "code": 3,
            "message": "Duplicate click conversion in request, at conversions[1]",
            "details": [{
                "@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                "errors": [{
                    "errorCode": {"conversionUploadError": "DUPLICATE_CLICK_CONVERSION_IN_REQUEST"},
                    "message": "Duplicate click conversion in request.",
                    "location": {"fieldPathElements": [{"fieldName": "conversions", "index": 1}, {"fieldName": "gclid"}]},
                }],
                "requestId": "fake-request-1",
            }],
        },
        "results": [row, {}],
        "jobId": "5",
    })


async def test_the_fake_refuses_a_malformed_login_customer_id(fake: FakeGoogleAds) -> None:
    status, answer = await _post(fake, f"/v26/customers/{CUSTOMER}:uploadClickConversions",
                                 {"conversions": [], "partialFailure": True}, **{"login-customer-id": "111-222-3333"})
    assert status == 400
    (failure,) = answer["error"]["details"]
    assert (answer["error"]["status"], failure["errors"][0]["errorCode"]) == (
        "INVALID_ARGUMENT", {"headerError": "INVALID_LOGIN_CUSTOMER_ID"})


async def test_the_fake_refuses_order_id_and_gclid_pair_together(fake: FakeGoogleAds) -> None:
    fake.add_conversion(ACTION, order_id="ORD-1")
    row = {"conversionAction": ACTION, "adjustmentType": "RETRACTION", "adjustmentDateTime": "2026-07-15 14:00:00+02:00",
           "orderId": "ORD-1", "gclidDateTimePair": {"gclid": "g", "conversionDateTime": "2026-07-15 13:00:00+02:00"}}
    status, answer = await _post(fake, f"/v26/customers/{CUSTOMER}:uploadConversionAdjustments",
                                 {"conversionAdjustments": [row], "partialFailure": True})
    (error,) = answer["partialFailureError"]["details"][0]["errors"]
    assert (status, error["errorCode"], error["location"]["fieldPathElements"][0]) == (
        200, {"conversionAdjustmentUploadError": "GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET"},
        {"fieldName": "conversion_adjustments", "index": 0})
