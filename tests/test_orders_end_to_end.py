"""Orders over real HTTP: purchase hits and order webhooks in, click conversions and adjustments out at the fake Google Ads API.

The flow of tests/fixtures/webhooks/README.md: ORD-10492 is bought for
129.95 EUR with a gclid, a partial refund of 30.00 restates it to 99.95, a
second one of 99.95 retracts it; ORD-20001 is fully refunded, ORD-20002
cancelled, both retracted. The gateway runs under uvicorn on the test's own
loop, beside the fake, so the test watches what Google would receive.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from gateway.app import create_app
from tests.conftest import FIXTURES, container_from, load_fixture
from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.http_sink import HttpSink
from tests.running import ROOT, serve_in_loop, wait_until

WEBHOOKS = FIXTURES / "webhooks"
SECRET = b"orders-e2e-secret-0123456789"  # the fixtures' own secret is too short for a container; re-signed below
_SIGNATURES = {
    "X-Signature": lambda body: "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest(),
    "X-Shopify-Hmac-Sha256": lambda body: base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode(),
    "X-WC-Webhook-Signature": lambda body: base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode(),
}


def _signed_with_secret(name: str, headers: dict[str, str]) -> dict[str, str]:
    body = (WEBHOOKS / name).read_bytes()
    return {key: _SIGNATURES[key](body) if key in _SIGNATURES else value for key, value in headers.items()}


HEADERS = {name: _signed_with_secret(name, headers) for name, headers in
           (load_fixture("webhooks", "headers.json") | load_fixture("webhooks", "woocommerce_headers.json")).items()}
ACTION = "customers/1234567890/conversionActions/987654321"


def container_yaml(fake: FakeGoogleAds, db_path: Path, *, send_order_id: bool = True, sink_url: str | None = None,
                   delay_after_conversion: str = "0s") -> str:
    creds = fake.credentials
    forward = "" if sink_url is None else f"""
  - name: forward_order_changes
    type: http_request
    trigger: refund_or_cancel
    url: {sink_url}/orders
"""
    return f"""
storage:
  url: sqlite:///{db_path}
delivery:
  backoff_initial: 10ms
  backoff_max: 50ms
  poll_interval: 20ms
orders:
  hold_unknown_refunds: 72h
  sweep_interval: 50ms
clients:
  - type: json_beacon
  - type: order_webhook
    secret: orders-e2e-secret-0123456789
  - type: shopify
    secret: orders-e2e-secret-0123456789
  - type: woocommerce
    secret: orders-e2e-secret-0123456789
destinations:
  google_ads:
    api: google_ads_api           # this file follows the Google Ads API route; the Data Manager route has its own
    api_base: {fake.url}
    token_url: {fake.token_url}
    developer_token: {creds["developer_token"]}
    client_id: {creds["client_id"]}
    client_secret: {creds["client_secret"]}
    refresh_token: {creds["refresh_token"]}
    flush_interval: 10ms
triggers:
  purchase:
    all: [{{field: event_name, op: equals, value: purchase}}]
  refund_or_cancel:
    any: [{{field: event_name, op: in, value: [refund, order_cancelled]}}]
tags:
  - name: gads_purchase
    type: google_ads_click_conversion
    trigger: purchase
    customer_id: "1234567890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
    send_order_id: {str(send_order_id).lower()}
  - name: gads_refund
    type: google_ads_conversion_adjustment
    trigger: refund_or_cancel
    customer_id: "1234567890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
    delay_after_conversion: {delay_after_conversion}
    click_through_window: 90d
{forward}"""


@contextlib.asynccontextmanager
async def gateway_with_fake(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[str, FakeGoogleAds, aiohttp.ClientSession]]:
    db_path = tmp_path / "g.db"
    async with FakeGoogleAds() as fake:
        container = container_from(container_yaml(fake, db_path, **options), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            yield base, fake, session


PATHS = {"shopify": "/webhooks/shopify", "woocommerce": "/webhooks/woocommerce"}


async def post_fixture(session: aiohttp.ClientSession, base: str, name: str, **headers: str) -> int:
    path = PATHS.get(name.split("_", 1)[0], "/webhooks/order-update")
    async with session.post(base + path, data=(WEBHOOKS / name).read_bytes(), headers={**HEADERS[name], **headers}) as response:
        return response.status


async def post_signed(session: aiohttp.ClientSession, base: str, payload: dict[str, Any], **headers: str) -> int:
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    async with session.post(base + "/webhooks/order-update", data=body, headers={"X-Signature": signature, **headers}) as response:
        return response.status


async def post_shopify(session: aiohttp.ClientSession, base: str, payload: dict[str, Any], topic: str, webhook_id: str) -> int:
    body = orjson.dumps(payload)
    digest = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id}
    async with session.post(base + "/webhooks/shopify", data=body, headers=headers) as response:
        return response.status


async def beacon(session: aiohttp.ClientSession, base: str, event: dict[str, Any]) -> int:
    async with session.post(base + "/collect", json=event) as response:
        return response.status


def browser_purchase(order_id: str = "ORD-10492", **fields: Any) -> dict[str, Any]:
    return {"event_name": "purchase", "transaction_id": order_id, "value": 129.95, "currency": "EUR",
            "gclid": "EAIaIQobChMI8fK2x4-test-gclid", "timestamp": "2026-04-23T14:31:09+02:00", **fields}


def adjustments(fake: FakeGoogleAds) -> list[tuple[Any, ...]]:
    """(type, order id or gclid pair, adjustment time, adjusted value) of each accepted adjustment."""
    return [
        (row["adjustmentType"], row.get("orderId") or row.get("gclidDateTimePair"), row["adjustmentDateTime"],
         (row.get("restatementValue") or {}).get("adjustedValue"))
        for row in fake.accepted["adjustment"]
    ]


def rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql).fetchall()


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_tag_skipped_total", {"tag": "gads_refund", "reason": reason}) or 0.0


# -- the flow --------------------------------------------------------------------------------------


async def test_generic_webhooks_restate_then_retract_a_purchase_and_retract_refunded_and_cancelled_orders(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        assert await beacon(session, base, browser_purchase(consent={"ad_user_data": "granted"})) == 204
        for name in ("order_created.json", "order_created_gbraid.json", "order_created_wbraid.json"):
            assert await post_fixture(session, base, name) == 200
        await wait_until(lambda: len(fake.accepted["click"]) == 3)
        for name in ("partial_refund.json", "partial_refund_rest.json", "full_refund.json", "cancelled.json"):
            assert await post_fixture(session, base, name) == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 4)

    assert [(r.get("orderId"), r.get("gclid") or r.get("gbraid") or r.get("wbraid"), r["conversionDateTime"],
             r["conversionValue"], r["currencyCode"], r.get("consent")) for r in fake.accepted["click"]] == [
        ("ORD-10492", "EAIaIQobChMI8fK2x4-test-gclid", "2026-04-23 14:31:09+02:00", 129.95, "EUR", {"adUserData": "GRANTED"}),
        ("ORD-20001", "0AAAAAoGx-test-gbraid", "2026-04-30 10:00:00+02:00", 54.9, "EUR", {"adUserData": "DENIED"}),
        ("ORD-20002", "CjwKCAiA-test-wbraid", "2026-05-01 15:30:00+02:00", 42.0, "USD", {"adUserData": "DENIED"}),
    ]
    assert fake.accepted["adjustment"][0] == {
        "conversionAction": ACTION, "adjustmentType": "RESTATEMENT", "adjustmentDateTime": "2026-04-25 09:12:00+02:00",
        "orderId": "ORD-10492", "restatementValue": {"adjustedValue": 99.95, "currencyCode": "EUR"},
    }
    assert adjustments(fake) == [
        ("RESTATEMENT", "ORD-10492", "2026-04-25 09:12:00+02:00", 99.95),
        ("RETRACTION", "ORD-10492", "2026-04-28 16:40:00+02:00", None),
        ("RETRACTION", "ORD-20001", "2026-05-02 11:00:00+02:00", None),
        ("RETRACTION", "ORD-20002", "2026-05-03 14:00:00+02:00", None),
    ]


async def test_shopify_webhooks_restate_a_refund_and_retract_a_cancellation(tmp_path):
    second = load_fixture("webhooks", "shopify_orders_create.json") | {"id": 5801234567891, "name": "#1043"}
    second["landing_site"] = "/?gclid=EAIaIQobChMIshopify-gclid-1043"
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        assert await post_fixture(session, base, "shopify_orders_create.json") == 200
        assert await post_shopify(session, base, second, "orders/create", "wh-create-1043") == 200
        await wait_until(lambda: len(fake.accepted["click"]) == 2)
        assert await post_fixture(session, base, "shopify_refunds_create.json") == 200
        assert await post_fixture(session, base, "shopify_orders_cancelled.json") == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 2)

    assert [(r["orderId"], r["gclid"], r["conversionValue"], r["currencyCode"]) for r in fake.accepted["click"]] == [
        ("5801234567890", "EAIaIQobChMIshopify-gclid-1042", 149.0, "USD"),
        ("5801234567891", "EAIaIQobChMIshopify-gclid-1043", 149.0, "USD"),
    ]
    assert adjustments(fake) == [
        ("RESTATEMENT", "5801234567890", "2026-04-26 16:00:00+02:00", 117.07),
        ("RETRACTION", "5801234567891", "2026-04-24 15:00:00+02:00", None),
    ]


async def test_woocommerce_webhooks_restate_then_retract_and_the_ping_is_answered(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        async with session.post(base + "/webhooks/woocommerce", data=b"webhook_id=17",
                                headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 200
        assert await post_fixture(session, base, "woocommerce_order_created_processing.json") == 200
        await wait_until(lambda: len(fake.accepted["click"]) == 1)
        assert await post_fixture(session, base, "woocommerce_order_updated_partial_refund.json") == 200
        assert await post_fixture(session, base, "woocommerce_order_updated_refunded.json") == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 2)

    assert [(r["orderId"], r["gclid"], r["conversionDateTime"]) for r in fake.accepted["click"]] == [
        ("4821", "Cj0KCQjw-test-woo-gclid", "2026-05-10 16:20:15+02:00")]
    assert adjustments(fake) == [
        ("RESTATEMENT", "4821", "2026-05-14 11:02:40+02:00", 69.9),
        ("RETRACTION", "4821", "2026-05-20 18:45:03+02:00", None),
    ]


# -- what must not happen ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param("/webhooks/order-update", {"X-Signature": "sha256=" + "0" * 64}, id="order_webhook"),
        pytest.param("/webhooks/shopify", {"X-Shopify-Hmac-Sha256": base64.b64encode(b"0" * 32).decode(),
                                           "X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "wh-x"},
                     id="shopify"),
        pytest.param("/webhooks/woocommerce", {"X-WC-Webhook-Signature": base64.b64encode(b"0" * 32).decode(),
                                               "X-WC-Webhook-Topic": "order.created"}, id="woocommerce"),
    ],
)
def test_a_wrongly_signed_webhook_is_401_and_stores_nothing(make_client, db_path, path, headers):
    client = make_client("""
clients:
  - {type: order_webhook, secret: orders-e2e-secret-0123456789}
  - {type: shopify, secret: orders-e2e-secret-0123456789}
  - {type: woocommerce, secret: orders-e2e-secret-0123456789}
triggers:
  everything: {all: []}
tags:
  - {name: sink, type: http_request, trigger: everything, url: "http://127.0.0.1:9/unused", mode: dry_run}
""", run_dispatcher=False)

    response = client.post(path, content=(WEBHOOKS / "order_created.json").read_bytes(), headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid signature"
    assert [rows(db_path, f"SELECT count(*) FROM {t}")[0][0] for t in ("outbox", "orders", "held_changes", "request_keys")] == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("name", "field"),
    [
        pytest.param("bad_missing_order_id.json", "order_id", id="missing_order_id"),
        pytest.param("bad_negative_refund.json", "refund_amount", id="negative_refund"),
    ],
)
def test_a_bad_order_update_is_400_naming_the_field_and_stores_nothing(make_client, db_path, name, field):
    client = make_client("""
clients:
  - {type: order_webhook, secret: orders-e2e-secret-0123456789}
""", run_dispatcher=False)

    response = client.post("/webhooks/order-update", content=(WEBHOOKS / name).read_bytes(), headers=HEADERS[name])

    assert (response.status_code, response.json()["detail"]) == (400, {"field": field})
    assert "teleported" not in response.text
    assert [rows(db_path, f"SELECT count(*) FROM {t}")[0][0] for t in ("outbox", "orders", "held_changes", "request_keys")] == [0, 0, 0, 0]


async def test_the_same_webhook_three_times_makes_one_adjustment(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        assert await post_fixture(session, base, "order_created.json") == 200
        assert await post_fixture(session, base, "shopify_orders_create.json") == 200
        await wait_until(lambda: len(fake.accepted["click"]) == 2)
        for _ in range(3):
            assert await post_fixture(session, base, "partial_refund.json") == 200  # no key: the ledger knows it
            assert await post_fixture(session, base, "shopify_refunds_create.json") == 200  # same X-Shopify-Webhook-Id
            assert await post_fixture(session, base, "partial_refund_rest.json", **{"Idempotency-Key": "oms-rest"}) == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 3)
        await wait_until(lambda: not rows(tmp_path / "g.db", "SELECT 1 FROM outbox WHERE status = 'pending'"))

    assert sorted(adjustments(fake)) == [
        ("RESTATEMENT", "5801234567890", "2026-04-26 16:00:00+02:00", 117.07),
        ("RESTATEMENT", "ORD-10492", "2026-04-25 09:12:00+02:00", 99.95),
        ("RETRACTION", "ORD-10492", "2026-04-28 16:40:00+02:00", None),
    ]
    assert sum(u.rows for u in fake.uploads if u.method == "uploadConversionAdjustments") == 3  # none sent twice


async def test_a_refund_before_its_order_is_held_then_sent_when_the_order_arrives(tmp_path):
    # The adjustment is committed with its conversion: the delay lets the conversion reach Google first.
    async with gateway_with_fake(tmp_path, delay_after_conversion="300ms") as (base, fake, session):
        assert await post_fixture(session, base, "partial_refund.json") == 200
        assert rows(tmp_path / "g.db", "SELECT order_id FROM held_changes") == [("ORD-10492",)]
        assert await post_fixture(session, base, "order_created.json") == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 1)

    assert [r["orderId"] for r in fake.accepted["click"]] == ["ORD-10492"]
    assert adjustments(fake) == [("RESTATEMENT", "ORD-10492", "2026-04-25 09:12:00+02:00", 99.95)]
    assert rows(tmp_path / "g.db", "SELECT count(*) FROM held_changes") == [(0,)]


async def test_two_refunds_of_one_order_arriving_together_are_decided_one_after_the_other(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        assert await post_fixture(session, base, "order_created.json") == 200
        await wait_until(lambda: len(fake.accepted["click"]) == 1)
        statuses = await asyncio.gather(post_fixture(session, base, "partial_refund.json"),
                                        post_fixture(session, base, "partial_refund_rest.json"))
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 2)

    assert statuses == [200, 200]
    (restated,) = [a for a in adjustments(fake) if a[0] == "RESTATEMENT"]
    (retracted,) = [a for a in adjustments(fake) if a[0] == "RETRACTION"]
    assert restated[3] in (99.95, 30.0)  # 129.95 minus whichever refund came first, never both from 129.95
    assert retracted[2] > restated[2]


def test_a_retained_value_that_disagrees_with_the_ledger_is_logged_with_ids_only(make_client, caplog):
    client = make_client("""
clients:
  - {type: order_webhook, secret: orders-e2e-secret-0123456789}
""", run_dispatcher=False)
    refund = {"order_id": "ORD-10492", "event": "partial_refund", "refund_amount": 30.0, "retained_value": 100.0,
              "currency": "EUR", "updated_at": "2026-04-25T09:12:00+02:00", "customer": {"email": "alex.doe@example.com"}}
    body = orjson.dumps(refund)
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    client.post("/webhooks/order-update", content=(WEBHOOKS / "order_created.json").read_bytes(),
                headers=HEADERS["order_created.json"])

    with caplog.at_level(logging.INFO, logger="gateway.app"):
        assert client.post("/webhooks/order-update", content=body, headers={"X-Signature": signature}).status_code == 200

    decisions = [(r.levelname, r.order_id, r.decision) for r in caplog.records if r.getMessage() == "order ledger"]
    assert decisions == [("WARNING", "ORD-10492", "retained_value_disagrees"), ("INFO", "ORD-10492", "restatement")]
    assert "alex.doe" not in repr([r.__dict__ for r in caplog.records])


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def test_a_held_refund_whose_order_never_comes_is_dead_lettered_as_order_not_found(tmp_path, db_path):
    config_path = tmp_path / "container.yaml"
    config_path.write_text(f"""
storage: {{url: "sqlite:///{db_path}"}}
orders: {{hold_unknown_refunds: 72h, sweep_interval: 20ms}}
clients:
  - {{type: order_webhook, secret: orders-e2e-secret-0123456789}}
""")
    clock = Clock(datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc))
    app = create_app(container_from(config_path.read_text(), db_path), now=clock)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        response = client.post("/webhooks/order-update", content=(WEBHOOKS / "refund_unknown_order.json").read_bytes(),
                               headers=HEADERS["refund_unknown_order.json"])
        assert response.status_code == 200
        clock.now += timedelta(hours=71, minutes=59)
        time.sleep(0.1)
        assert rows(db_path, "SELECT count(*) FROM dead_letters") == [(0,)]
        clock.now += timedelta(minutes=1)
        deadline = time.monotonic() + 5
        while not rows(db_path, "SELECT 1 FROM dead_letters") and time.monotonic() < deadline:
            time.sleep(0.02)

    assert rows(db_path, "SELECT destination, batch_key, code, message FROM dead_letters") == [
        ("order_ledger", "ORD-99999", "order_not_found", "no order ORD-99999 within 72h")]
    assert rows(db_path, "SELECT count(*) FROM held_changes") == [(0,)]
    shown = orjson.loads(run_cli("orders", "show", "ORD-99999", "--config", str(config_path)))
    assert [(d["status"], d["code"]) for d in shown["deliveries"]] == [("dead", "order_not_found")]


async def test_adjustments_outside_googles_windows_are_not_sent_and_are_counted(tmp_path):
    late_refund = {"order_id": "ORD-10492", "event": "partial_refund", "refund_amount": 30.0, "currency": "EUR",
                   "updated_at": "2026-06-17T12:00:00+02:00"}  # 55 days after the conversion
    late_cancel = {"order_id": "ORD-20002", "event": "cancelled", "updated_at": "2026-08-01T12:00:00-04:00"}  # 92 days
    expired = skipped("conversion_expired")  # Google's CONVERSION_EXPIRED: 54 days for every adjustment type
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        assert await post_fixture(session, base, "order_created.json") == 200
        assert await post_fixture(session, base, "order_created_wbraid.json") == 200
        assert await post_signed(session, base, late_refund) == 200
        assert await post_signed(session, base, late_cancel) == 200
        assert await post_fixture(session, base, "full_refund.json") == 200  # its order is unknown: held, not sent
        await wait_until(lambda: len(fake.accepted["click"]) == 2)
        await wait_until(lambda: not rows(tmp_path / "g.db", "SELECT 1 FROM outbox WHERE status = 'pending'"))

    assert fake.accepted["adjustment"] == []
    assert skipped("conversion_expired") - expired == 2
    assert rows(tmp_path / "g.db", "SELECT order_id, action FROM order_changes ORDER BY order_id") == [
        ("ORD-10492", "RESTATEMENT"), ("ORD-20002", "RETRACTION")]


async def test_no_adjustment_is_queued_for_a_conversion_google_refused(tmp_path):
    refused_before = skipped("conversion_upload_failed")
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        fake.fail_value("EAIaIQobChMI8fK2x4-test-gclid", "UNPARSEABLE_GCLID")
        assert await post_fixture(session, base, "order_created.json") == 200
        await wait_until(lambda: rows(tmp_path / "g.db", "SELECT code FROM dead_letters") == [("UNPARSEABLE_GCLID",)])
        assert await post_fixture(session, base, "partial_refund.json") == 200
        await wait_until(lambda: skipped("conversion_upload_failed") - refused_before == 1)

    assert fake.accepted["adjustment"] == []
    assert rows(tmp_path / "g.db", "SELECT count(*) FROM outbox WHERE tag = 'gads_refund'") == [(0,)]
    # The ledger still records the refund (its money moved); only the upload to Google is skipped.
    assert rows(tmp_path / "g.db", "SELECT action, retained FROM order_changes") == [("RESTATEMENT", "99.95")]


async def test_an_order_uploaded_without_order_id_is_adjusted_by_gclid_and_conversion_time(tmp_path):
    async with gateway_with_fake(tmp_path, send_order_id=False) as (base, fake, session):
        assert await post_fixture(session, base, "order_created.json") == 200
        await wait_until(lambda: len(fake.accepted["click"]) == 1)
        assert await post_fixture(session, base, "partial_refund.json") == 200
        assert await post_fixture(session, base, "partial_refund_rest.json") == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 2)

    assert "orderId" not in fake.accepted["click"][0]
    pair = {"gclid": "EAIaIQobChMI8fK2x4-test-gclid", "conversionDateTime": "2026-04-23 14:31:09+02:00"}
    assert fake.accepted["adjustment"] == [
        {"conversionAction": ACTION, "adjustmentType": "RESTATEMENT", "adjustmentDateTime": "2026-04-25 09:12:00+02:00",
         "gclidDateTimePair": pair, "restatementValue": {"adjustedValue": 99.95, "currencyCode": "EUR"}},
        {"conversionAction": ACTION, "adjustmentType": "RETRACTION", "adjustmentDateTime": "2026-04-28 16:40:00+02:00",
         "gclidDateTimePair": pair},
    ]


async def test_the_browser_hits_consent_applies_to_the_order_systems_events(tmp_path):
    refund = {"event": "partial_refund", "refund_amount": 10.0, "currency": "EUR", "updated_at": "2026-04-25T09:12:00+02:00",
              "customer": {"email": "alex.doe@example.com"}}
    order = {"event": "order_created", "order_value": 129.95, "currency": "EUR", "updated_at": "2026-04-23T14:31:09+02:00"}
    async with HttpSink() as sink:
        async with gateway_with_fake(tmp_path, sink_url=sink.url) as (base, fake, session):
            assert await beacon(session, base, browser_purchase(
                "ORD-1", consent={"ad_user_data": "granted", "ad_personalization": "granted"})) == 204
            assert await beacon(session, base, browser_purchase("ORD-2", gclid="gclid-2")) == 204  # no consent: the default
            for order_id in ("ORD-1", "ORD-2"):
                assert await post_signed(session, base, {"order_id": order_id, **order}) == 200  # OMS copy, no consent
                assert await post_signed(session, base, {"order_id": order_id, **refund}) == 200
            await wait_until(lambda: len(sink.requests) == 2)

    forwarded = {r.json()["transaction_id"]: r.json() for r in sink.requests}
    assert (forwarded["ORD-1"]["consent"]["ad_user_data"], forwarded["ORD-1"]["user_data"]) == (
        "granted", {"email_address": "alex.doe@example.com"})
    assert (forwarded["ORD-2"]["consent"]["ad_user_data"], "user_data" in forwarded["ORD-2"]) == ("denied", False)
    assert [r["orderId"] for r in fake.accepted["click"]] == ["ORD-1", "ORD-2"]


async def test_orders_show_prints_the_ledger_entry_and_every_delivery_without_personal_data(tmp_path):
    config_path = tmp_path / "container.yaml"
    async with gateway_with_fake(tmp_path) as (base, fake, session):
        config_path.write_text(container_yaml(fake, tmp_path / "g.db"))
        for name in ("order_created.json", "partial_refund.json"):
            assert await post_fixture(session, base, name) == 200
        await wait_until(lambda: len(fake.accepted["adjustment"]) == 1)
        await wait_until(lambda: not rows(tmp_path / "g.db", "SELECT 1 FROM outbox WHERE status = 'pending'"))
        shown = run_cli("orders", "show", "ORD-10492", "--config", str(config_path))

    report = orjson.loads(shown)
    assert {k: report["order"][k] for k in ("value", "refunded", "retained", "retracted", "gclid", "consent")} == {
        "value": "129.95", "refunded": "30.0", "retained": "99.95", "retracted": False,
        "gclid": "EAIaIQobChMI8fK2x4-test-gclid",
        "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
                    "ad_personalization": "denied"},
    }
    assert [(c["decision"], c["retained_after"]) for c in report["changes"]] == [("RESTATEMENT", "99.95")]
    assert [(d["tag"], d["status"]) for d in report["deliveries"]] == [("gads_purchase", "delivered"),
                                                                      ("gads_refund", "delivered")]
    for personal in ("Alex.Doe", "170 1234567", "Berlin", "10115"):
        assert personal not in shown


def run_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
