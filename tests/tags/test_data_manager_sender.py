"""The google_ads destination on its default route, against the fake Data Manager API (and, for the
adjustments that API does not take, the fake Google Ads API) on 127.0.0.1.

Every events:ingest body the fake received is checked against the google-ads-datamanager protos in
the ``data_manager`` fixture's teardown. Expected bodies are written from the Data Manager reference:
Ref: https://developers.google.com/data-manager/api/reference/rest/v1/events/ingest
Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/upgrade/field-mappings
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from gateway.config import StorageSection
from gateway.delivery import Delivery, Result
from gateway.event import Event
from gateway.identity import sha256_hex
from gateway.sender import PendingItem, RequestStatus, SenderContext, SentRequest
from gateway.storage import Storage, open_storage
from gateway.vendor_requests import RequestFollowUp
from tags import _google_ads_sender as google_ads
from tags import google_ads_call_conversion, google_ads_click_conversion, google_ads_conversion_adjustment
from tests.fakes.data_manager import FakeDataManager
from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.google_oauth import ADS_API_SCOPE, DATA_MANAGER_SCOPE, TokenIssuer
from tests.tags.data_manager_schema import check_ingest_request

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
CUSTOMER = "1234567890"
CLICK = google_ads_click_conversion.Config.model_validate({
    "name": "gads_purchase", "type": "google_ads_click_conversion", "trigger": "purchase",
    "customer_id": CUSTOMER, "conversion_action_id": "987654321", "timezone": "Europe/Berlin",
})
CALL = google_ads_call_conversion.Config.model_validate({
    "name": "gads_calls", "type": "google_ads_call_conversion", "trigger": "call",
    "customer_id": CUSTOMER, "conversion_action_id": "555", "timezone": "Europe/Berlin",
})
ADJUST = google_ads_conversion_adjustment.Config.model_validate({
    "name": "gads_refund", "type": "google_ads_conversion_adjustment", "trigger": "refund",
    "customer_id": CUSTOMER, "conversion_action_id": "987654321", "timezone": "Europe/Berlin",
})
OAUTH_ONLY = {"client_id": "test-client-id.apps.googleusercontent.com", "client_secret": "test-client-secret",
              "refresh_token": "test-refresh-token"}


def purchase(n: int, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "event_name": "purchase", "timestamp": T0 - timedelta(hours=1), "transaction_id": f"ORD-{n}",
        "value": 10.0 + n, "currency": "EUR", "gclid": f"test-gclid-{n}", "consent": {"ad_user_data": "granted"},
    }
    return Event.from_data(values | fields)


def pending(delivery: Delivery, n: int = 1, attempts: int = 0) -> PendingItem:
    return PendingItem(n, delivery.idempotency_key, delivery.item, delivery.tag, attempts, T0)


def click(n: int, **fields: Any) -> PendingItem:
    return pending(google_ads_click_conversion.build(purchase(n, **fields), CLICK)[0], n)


def config(fake: FakeDataManager, ads: FakeGoogleAds | None = None, **overrides: Any) -> google_ads.Config:
    return google_ads.Config.model_validate({
        "data_manager_base": fake.url, "token_url": fake.token_url, "api_base": ads.url if ads else "http://127.0.0.1:9",
        "flush_interval": "50ms"} | OAUTH_ONLY | overrides)


@pytest.fixture
async def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
async def data_manager(issuer: TokenIssuer) -> AsyncIterator[FakeDataManager]:
    async with FakeDataManager(issuer=issuer) as fake:
        yield fake
        for received in fake.ingests:
            if received.status != 400:  # a 400 is the fake refusing a body; the test says why
                check_ingest_request(received.body)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    opened = open_storage(StorageSection(url=f"sqlite:///{tmp_path}/g.db"))
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def make_sender() -> AsyncIterator[Callable[..., Any]]:
    started: list[google_ads.Sender] = []

    async def make(cfg: google_ads.Config, kept: list[SentRequest] | None = None) -> google_ads.Sender:
        async def keep(request: SentRequest) -> None:
            if kept is not None:
                kept.append(request)

        async def no_dry_run(*args: Any) -> None:
            raise AssertionError("live mode must not record a dry run")

        ctx = SenderContext(record_dry_run=no_dry_run, now=lambda: T0, request_timeout=5, record_request=keep)
        sender = google_ads.Sender(cfg, [CLICK, CALL, ADJUST], ctx)
        await sender.start()
        started.append(sender)
        return sender

    yield make
    for sender in started:
        await sender.close()


async def test_an_oauth_client_and_refresh_token_are_all_it_takes(data_manager: FakeDataManager, make_sender: Any,
                                                                   issuer: TokenIssuer) -> None:
    kept: list[SentRequest] = []
    sender = await make_sender(config(data_manager), kept)
    item = click(1, user_data={"email_address": "Jane.Doe+news@gmail.com", "phone_number": "+49 170 1234567"},
                 consent={"ad_user_data": "granted", "ad_personalization": "denied"})

    assert await sender.send(f"{CUSTOMER}:click", [item]) == [Result.delivered()]

    (received,) = data_manager.ingests
    assert received.path == "/v1/events:ingest"
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert "developer-token" not in headers and headers["authorization"] == "Bearer ya29.fake-access-token-1"
    assert [r.get("scope") for r in issuer.requests] == [DATA_MANAGER_SCOPE]
    assert received.body == {
        "destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                          "productDestinationId": "987654321"}],
        "events": [{
            "transactionId": "ORD-1",
            "eventTimestamp": "2026-12-01T12:00:00+01:00",  # 11:00 UTC in Berlin winter time
            "userData": {"userIdentifiers": [
                {"emailAddress": sha256_hex("janedoe@gmail.com")},  # gmail: dots and +suffix removed
                {"phoneNumber": sha256_hex("+491701234567")},
            ]},
            "consent": {"adUserData": "CONSENT_GRANTED"},
            "adIdentifiers": {"gclid": "test-gclid-1"},
            "currency": "EUR",
            "conversionValue": 11.0,
            "eventSource": "WEB",
        }],
        "encoding": "HEX",
    }
    assert [(k.request_id, k.item_keys) for k in kept] == [("fake-dm-request-0001", (item.idempotency_key,))]


async def test_one_bad_event_of_twelve_is_failed_with_googles_reason_and_eleven_go_in_at_once(
    data_manager: FakeDataManager, make_sender: Any
) -> None:
    kept: list[SentRequest] = []
    sender = await make_sender(config(data_manager), kept)
    items = [click(n) for n in range(12)]
    data_manager.fail_event("test-gclid-7", "INVALID_FORMAT")

    results = await sender.send(f"{CUSTOMER}:click", items)

    assert results == [Result.delivered()] * 7 + [
        Result.permanent("INVALID_FORMAT", "The field has an invalid format.")] + [Result.delivered()] * 4
    assert [(r.status, len(r.body["events"])) for r in data_manager.ingests] == [(400, 12), (200, 11)]
    assert sorted(e["transactionId"] for e in data_manager.events) == sorted(f"ORD-{n}" for n in range(12) if n != 7)
    assert [len(k.item_keys) for k in kept] == [11]


async def test_an_error_without_an_event_index_is_found_by_halving(data_manager: FakeDataManager,
                                                                   make_sender: Any) -> None:
    sender = await make_sender(config(data_manager))
    data_manager.fail_unplaced("ORD-5")
    results = await sender.send(f"{CUSTOMER}:click", [click(n) for n in range(8)])
    assert [r.outcome for r in results] == ["delivered"] * 5 + ["permanent"] + ["delivered"] * 2
    assert results[5].code == "INVALID_ARGUMENT"
    assert len(data_manager.events) == 7
    assert len(data_manager.ingests) <= 2 * 8 + 4


async def test_quota_and_server_errors_are_retried_as_google_says(data_manager: FakeDataManager,
                                                                  make_sender: Any) -> None:
    sender = await make_sender(config(data_manager))
    data_manager.fail_next(429, retry_delay=42)
    data_manager.fail_next(503)
    assert await sender.send(f"{CUSTOMER}:click", [click(1)]) == [
        Result.retry("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", 42.0)]
    assert await sender.send(f"{CUSTOMER}:click", [click(1)]) == [
        Result.retry("INTERNAL_ERROR", "Internal error encountered.")]


async def test_a_call_conversion_is_a_phone_event_with_the_caller_hashed(data_manager: FakeDataManager,
                                                                          make_sender: Any) -> None:
    sender = await make_sender(config(data_manager))
    event = Event.from_data({"event_name": "call", "timestamp": T0, "consent": {"ad_user_data": "granted"},
                                  "value": 50, "currency": "EUR",
                                  "extra": {"caller_id": "+49 30 12345678", "call_start_time": "2026-12-01T11:50:00Z"}})
    item = pending(google_ads_call_conversion.build(event, CALL)[0])
    assert await sender.send(f"{CUSTOMER}:call", [item]) == [Result.delivered()]
    (received,) = data_manager.ingests
    assert received.body["destinations"][0]["productDestinationId"] == "555"
    assert received.body["events"] == [{
        "eventTimestamp": "2026-12-01T13:00:00+01:00",
        "userData": {"userIdentifiers": [{"phoneNumber": sha256_hex("+493012345678")}]},
        "consent": {"adUserData": "CONSENT_GRANTED"}, "currency": "EUR", "conversionValue": 50.0,
        "eventSource": "PHONE",
    }]


def refund(kind: str, **adjustment: Any) -> Delivery:
    event = Event.from_data({
        "event_name": "refund", "timestamp": T0 + timedelta(days=3), "consent": {"ad_user_data": "granted"},
        "adjustment": {"type": kind, "adjustment_id": f"{kind}-1", "order_id": "ORD-1", "gclid": "test-gclid-1",
                       "conversion_time": T0 - timedelta(hours=1), "adjusted_value": 4.0, "currency": "EUR"}
        | adjustment,
    })
    return google_ads_conversion_adjustment.build(event, ADJUST)[0]


async def test_a_restatement_goes_through_the_data_manager_and_a_retraction_through_the_google_ads_api(
    data_manager: FakeDataManager, make_sender: Any, issuer: TokenIssuer
) -> None:
    async with FakeGoogleAds(issuer=issuer) as ads:
        ads.add_conversion("987654321", order_id="ORD-1")
        sender = await make_sender(config(data_manager, ads))
        assert await sender.send(f"{CUSTOMER}:click", [click(1)]) == [Result.delivered()]
        restatement, retraction = refund("RESTATEMENT"), refund("RETRACTION")
        assert (restatement.batch_key, retraction.batch_key) == (f"{CUSTOMER}:restatement", f"{CUSTOMER}:adjustment")

        assert await sender.send(restatement.batch_key, [pending(restatement)]) == [Result.delivered()]
        assert await sender.send(retraction.batch_key, [pending(retraction)]) == [Result.delivered()]

        conversion = data_manager.conversions[("987654321", "ORD-1")]
        assert (conversion.value, conversion.currency, len(conversion.adjustments)) == (4.0, "EUR", 1)
        assert conversion.adjustments[0] == {
            "transactionId": "ORD-1", "eventTimestamp": "2026-12-01T12:00:00+01:00",
            "lastUpdatedTimestamp": "2026-12-04T13:00:00+01:00", "adIdentifiers": {"gclid": "test-gclid-1"},
            "currency": "EUR", "conversionValue": 4.0, "eventSource": "WEB",
        }
        assert [(u.method, u.body["conversionAdjustments"][0]["adjustmentType"]) for u in ads.uploads] == [
            ("uploadConversionAdjustments", "RETRACTION")]
        assert "dataManager" not in ads.uploads[0].body["conversionAdjustments"][0]
        assert "developer-token" not in {k.lower() for k in ads.uploads[0].headers}
    assert {r.get("scope") for r in issuer.requests} == {DATA_MANAGER_SCOPE, ADS_API_SCOPE}


async def test_a_refresh_token_without_the_adwords_scope_still_uploads_and_says_why_retractions_wait(
    data_manager: FakeDataManager, make_sender: Any, issuer: TokenIssuer
) -> None:
    issuer.granted = frozenset({DATA_MANAGER_SCOPE})
    async with FakeGoogleAds(issuer=issuer) as ads:
        sender = await make_sender(config(data_manager, ads))
        assert await sender.send(f"{CUSTOMER}:click", [click(1)]) == [Result.delivered()]
        retraction = refund("RETRACTION")
        (result,) = await sender.send(retraction.batch_key, [pending(retraction)])
    assert (result.outcome, result.code) == ("retry", "oauth_unavailable")
    assert result.message is not None and ADS_API_SCOPE in result.message


async def test_the_status_of_a_failed_request_dead_letters_its_events_and_a_success_counts(
    data_manager: FakeDataManager, make_sender: Any, storage: Storage
) -> None:
    now = [T0]
    follow_up = RequestFollowUp(storage, {}, lambda: now[0], first_check=timedelta(minutes=15))
    sender = await make_sender(config(data_manager))
    sender.ctx.record_request = follow_up.record
    follow_up.senders = {"google_ads": sender}
    good, bad = google_ads_click_conversion.build(purchase(1), CLICK)[0], google_ads_click_conversion.build(
        purchase(2), CLICK)[0]
    await storage.enqueue([good, bad], T0)
    claimed = await storage.claim("google_ads", f"{CUSTOMER}:click", 10, T0, timedelta(minutes=1))
    data_manager.fail_processing("ORD-2", "PROCESSING_ERROR_REASON_INVALID_CLICK")
    data_manager.processing_rounds = 1
    for item in claimed:  # one request each, as two batches would go
        assert await sender.send(f"{CUSTOMER}:click", [item]) == [Result.delivered()]
    await storage.settle(T0, [i.id for i in claimed])

    assert await follow_up.check_once() == 0  # not due before first_check
    now[0] = T0 + timedelta(minutes=16)
    assert await follow_up.check_once() == 2  # both still PROCESSING: asked again later
    assert {t.state for t in await storage.list_requests()} == {"processing"}
    now[0] = T0 + timedelta(hours=2)
    assert await follow_up.check_once() == 2

    by_state = {t.state: t for t in await storage.list_requests()}
    assert set(by_state) == {"success", "failed"}
    assert by_state["failed"].errors == {"PROCESSING_ERROR_REASON_INVALID_CLICK": 1}
    assert by_state["success"].next_check_at is None and by_state["failed"].records == 1
    (letter,) = await storage.list_dead_letters()
    assert (letter.idempotency_key, letter.code) == (bad.idempotency_key, "PROCESSING_ERROR_REASON_INVALID_CLICK")
    assert await sender.request_status("no-such-request") == RequestStatus("unknown", errors={"INVALID_REQUEST_ID": 0})


async def test_dry_run_records_the_ingest_request_and_calls_nothing(data_manager: FakeDataManager) -> None:
    recorded: list[Any] = []

    async def record(destination: str, batch_key: str, request: Any, count: int) -> None:
        recorded.append((destination, batch_key, request.for_record(), count))

    sender = google_ads.Sender(google_ads.Config.model_validate({"mode": "dry_run"}), [CLICK],
                               SenderContext(record_dry_run=record, now=lambda: T0))
    assert await sender.send(f"{CUSTOMER}:click", [click(1), click(2)]) == [Result.delivered("dry_run")] * 2
    ((destination, batch_key, request, count),) = recorded
    assert (destination, batch_key, count, request["url"]) == (
        "google_ads", f"{CUSTOMER}:click", 2, "https://datamanager.googleapis.com/v1/events:ingest")
    assert request["headers"] == {"Content-Type": "application/json", "Authorization": "***"}
    check_ingest_request(request["body"])
    assert data_manager.received == []
