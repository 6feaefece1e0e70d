"""A new advertiser in December 2026: an OAuth client and a refresh token, no developer token, no manager account.

The real app runs under uvicorn on the test's loop with the container's outside URLs taken from the
environment (``GOOGLE_DATA_MANAGER_API_BASE``, ``GOOGLE_ADS_API_BASE``, ``GOOGLE_OAUTH_TOKEN_URL``), beside
a fake Data Manager API and a fake Google Ads API that share one fake OAuth endpoint. Purchases from the
JSON beacon and from the order webhook go to ``events:ingest``; the order ledger's refunds restate through
the Data Manager API and retract through the Google Ads API, as docs/google-ads.md says. Every body the
fakes accepted is held to Google's protos.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson

from gateway.identity import sha256_hex
from tests.conftest import container_from
from tests.fakes.data_manager import FakeDataManager
from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.google_oauth import TokenIssuer
from tests.running import serve_in_loop, wait_until
from tests.tags.data_manager_schema import check_ingest_request
from tests.tags.google_ads_schema import check_request

SECRET = b"fixture-secret-0123456789"
USER_AGENT = "Mozilla/5.0 (test browser)"
CONTAINER = """
delivery:
  backoff_initial: 10ms
  backoff_max: 50ms
  poll_interval: 20ms
orders:
  sweep_interval: 50ms
clients:
  - type: json_beacon
  - type: order_webhook
    secret: fixture-secret-0123456789
destinations:
  google_ads:
    data_manager_base: ${GOOGLE_DATA_MANAGER_API_BASE}
    api_base: ${GOOGLE_ADS_API_BASE}
    token_url: ${GOOGLE_OAUTH_TOKEN_URL}
    client_id: ${GOOGLE_ADS_CLIENT_ID}
    client_secret: ${GOOGLE_ADS_CLIENT_SECRET}
    refresh_token: ${GOOGLE_ADS_REFRESH_TOKEN}
    flush_interval: 10ms
triggers:
  purchase:
    all: [{field: event_name, op: equals, value: purchase}]
  refund_or_cancel:
    any: [{field: event_name, op: in, value: [refund, order_cancelled]}]
tags:
  - name: gads_purchase
    type: google_ads_click_conversion
    trigger: purchase
    customer_id: "123-456-7890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
  - name: gads_refund
    type: google_ads_conversion_adjustment
    trigger: refund_or_cancel
    customer_id: "1234567890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
    delay_after_conversion: 0s
"""


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[str, FakeDataManager, FakeGoogleAds, aiohttp.ClientSession]]:
    issuer = TokenIssuer()
    async with FakeDataManager(issuer=issuer) as dm, FakeGoogleAds(issuer=issuer) as ads:
        env = {"GOOGLE_DATA_MANAGER_API_BASE": dm.url, "GOOGLE_ADS_API_BASE": ads.url,
               "GOOGLE_OAUTH_TOKEN_URL": dm.token_url} | {f"GOOGLE_ADS_{k.upper()}": v
                                                          for k, v in issuer.credentials.items()}
        container = container_from(CONTAINER, tmp_path / "g.db", env)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            yield base, dm, ads, session
        for received in dm.ingests:
            check_ingest_request(received.body)
        for upload in ads.uploads:
            check_request("adjustment", upload.body)


async def beacon(session: aiohttp.ClientSession, base: str, event: dict[str, Any]) -> int:
    async with session.post(base + "/collect", json=event, headers={"User-Agent": USER_AGENT}) as response:
        return response.status


async def order_update(session: aiohttp.ClientSession, base: str, payload: dict[str, Any]) -> int:
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    async with session.post(base + "/webhooks/order-update", data=body, headers={"X-Signature": signature}) as response:
        return response.status


DESTINATION = {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
               "productDestinationId": "987654321"}


async def test_a_beacon_purchase_reaches_the_data_manager_with_destination_time_value_identifiers_and_consent(tmp_path):
    purchase = {"event_name": "purchase", "timestamp": "2026-12-01T10:15:00Z", "transaction_id": "ORD-1",
                "value": 129.95, "currency": "EUR", "gclid": "Cj0-test-gclid",
                "consent": {"ad_storage": "granted", "ad_user_data": "granted", "ad_personalization": "granted"},
                "user_data": {"email_address": " Jane.Doe@Example.com ", "phone_number": "+49 170 1234567"}}
    async with running(tmp_path) as (base, dm, ads, session):
        assert await beacon(session, base, purchase) == 204
        await wait_until(lambda: len(dm.events) == 1)

    (received,) = dm.ingests
    assert received.body == {"destinations": [DESTINATION], "events": [{
        "transactionId": "ORD-1",
        "eventTimestamp": "2026-12-01T11:15:00+01:00",
        "userData": {"userIdentifiers": [{"emailAddress": sha256_hex("jane.doe@example.com")},
                                         {"phoneNumber": sha256_hex("+491701234567")}]},
        "consent": {"adUserData": "CONSENT_GRANTED"},
        "adIdentifiers": {"gclid": "Cj0-test-gclid"},
        "currency": "EUR",
        "conversionValue": 129.95,
        "eventSource": "WEB",
        "eventDeviceInfo": {"userAgent": USER_AGENT, "ipAddress": "127.0.0.1"},
    }], "encoding": "HEX"}
    assert {k.lower() for k in received.headers} & {"developer-token", "login-customer-id"} == set()
    assert ads.uploads == []


async def test_with_consent_denied_only_the_click_id_and_consent_denied_travel(tmp_path):
    purchase = {"event_name": "purchase", "timestamp": "2026-12-01T10:15:00Z", "transaction_id": "ORD-2",
                "value": 20, "currency": "EUR", "gclid": "Cj0-test-gclid-2",
                "consent": {"ad_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"},
                "user_data": {"email_address": "jane@example.com"}}
    async with running(tmp_path) as (base, dm, ads, session):
        assert await beacon(session, base, purchase) == 204
        await wait_until(lambda: len(dm.events) == 1)

    assert dm.events == [{
        "transactionId": "ORD-2", "eventTimestamp": "2026-12-01T11:15:00+01:00",
        "consent": {"adUserData": "CONSENT_DENIED"}, "adIdentifiers": {"gclid": "Cj0-test-gclid-2"},
        "currency": "EUR", "conversionValue": 20.0, "eventSource": "WEB",
    }]


async def test_ledger_refunds_restate_through_the_data_manager_and_retract_through_the_google_ads_api(tmp_path):
    created = {"order_id": "ORD-10492", "event": "order_created", "order_value": 129.95, "currency": "EUR",
               "gclid": "Cj0-order-gclid", "updated_at": "2026-12-01T10:00:00Z",
               "consent": {"ad_user_data": "granted"}}
    partial = {"order_id": "ORD-10492", "event": "partial_refund", "refund_id": "r-1", "refund_amount": 30.0,
               "currency": "EUR", "updated_at": "2026-12-02T12:00:00Z"}
    rest = {"order_id": "ORD-10492", "event": "partial_refund", "refund_id": "r-2", "refund_amount": 99.95,
            "currency": "EUR", "updated_at": "2026-12-03T12:00:00Z"}
    async with running(tmp_path) as (base, dm, ads, session):
        ads.add_conversion("987654321", order_id="ORD-10492")
        assert await order_update(session, base, created) == 200
        await wait_until(lambda: ("987654321", "ORD-10492") in dm.conversions)
        assert await order_update(session, base, partial) == 200
        await wait_until(lambda: len(dm.conversions[("987654321", "ORD-10492")].adjustments) == 1)
        assert await order_update(session, base, rest) == 200
        await wait_until(lambda: len(ads.accepted["adjustment"]) == 1)

    conversion = dm.conversions[("987654321", "ORD-10492")]
    assert (conversion.value, conversion.currency) == (99.95, "EUR")  # restated: 129.95 - 30.00
    assert conversion.adjustments == [{
        "transactionId": "ORD-10492", "eventTimestamp": "2026-12-01T11:00:00+01:00",
        "lastUpdatedTimestamp": "2026-12-02T13:00:00+01:00", "adIdentifiers": {"gclid": "Cj0-order-gclid"},
        "currency": "EUR", "conversionValue": 99.95, "eventSource": "WEB",
    }]
    assert ads.accepted["adjustment"] == [{
        "conversionAction": "customers/1234567890/conversionActions/987654321", "adjustmentType": "RETRACTION",
        "adjustmentDateTime": "2026-12-03 13:00:00+01:00", "orderId": "ORD-10492",
    }]
