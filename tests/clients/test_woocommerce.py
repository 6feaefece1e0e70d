"""The WooCommerce client: signed order topics in, order events by status and refunds, the ping answered,
legacy API bodies read, other topics acknowledged."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from clients import woocommerce
from gateway.client import RawRequest
from gateway.errors import BadRequest
from tests.conftest import FIXTURES, load_fixture

RECEIVED_AT = datetime(2026, 5, 21, 12, 0, 0, tzinfo=timezone.utc)
CONFIG = woocommerce.Config(type="woocommerce", secret="fixture-secret")
HEADERS = load_fixture("webhooks", "woocommerce_headers.json")
WEBHOOKS = FIXTURES / "webhooks"


def fixture_request(name: str, **override: str) -> RawRequest:
    headers = {k.lower(): v for k, v in {**HEADERS[name], **override}.items()}
    return RawRequest("POST", "/webhooks/woocommerce", "", headers, (WEBHOOKS / name).read_bytes(), "127.0.0.1", RECEIVED_AT)


def signed(order: dict[str, Any], topic: str = "order.updated") -> RawRequest:
    body = orjson.dumps(order)
    digest = base64.b64encode(hmac.new(b"fixture-secret", body, hashlib.sha256).digest()).decode()
    headers = {"x-wc-webhook-signature": digest, "x-wc-webhook-topic": topic, "x-wc-webhook-delivery-id": "d-1"}
    return RawRequest("POST", "/webhooks/woocommerce", "", headers, body, "127.0.0.1", RECEIVED_AT)


def summary(raw: RawRequest, config: woocommerce.Config = CONFIG) -> list[tuple[Any, ...]]:
    """(event name, order, value, refund id, refund type, time) of each event."""
    return [
        (e.event_name, e.transaction_id, e.value, e.order.refund_id if e.order else None,
         "full" if e.order and e.order.full_refund else None, e.timestamp.isoformat())
        for e in woocommerce.parse(raw, config).events
    ]


def test_a_processing_order_is_a_purchase_with_click_id_consent_and_customer() -> None:
    result = woocommerce.parse(fixture_request("woocommerce_order_created_processing.json"), CONFIG)

    assert [e.to_json_dict() for e in result.events] == [{
        "event_name": "purchase", "transaction_id": "4821", "timestamp": "2026-05-10T14:20:15Z",
        "value": 89.9, "currency": "EUR", "gclid": "Cj0KCQjw-test-woo-gclid",
        "items": [{"item_id": "JACKET-RAIN-M", "item_name": "Rain Jacket - M", "quantity": 1, "price": 54.62},
                  {"item_id": "SOCKS-WOOL", "item_name": "Wool Socks", "quantity": 1, "price": 16.81}],
        "user_data": {"email_address": "max.mustermann@example.de", "phone_number": "+49 40 1234567",
                      "address": {"first_name": "Max", "last_name": "Mustermann", "street": "Hauptstr. 5",
                                  "city": "Hamburg", "postal_code": "20095", "country": "DE"}},
        "ip_override": "198.51.100.42",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/131.0.0.0 Safari/537.36",
        "consent": {"ad_user_data": "granted", "ad_personalization": "denied"},
        "extra": {},
    }]
    assert (result.status, result.request_key) == (200, "woocommerce:0b5f3a9c1d7e2f4a6b8c0d1e2f3a4b5c")


def test_a_legacy_api_body_is_read_like_the_current_one() -> None:
    body = (WEBHOOKS / "woocommerce_legacy_v3_order_created.json").read_bytes()
    digest = base64.b64encode(hmac.new(b"fixture-secret", body, hashlib.sha256).digest()).decode()
    headers = {"x-wc-webhook-signature": digest, "x-wc-webhook-topic": "order.created", "x-wc-webhook-delivery-id": "l-1"}

    result = woocommerce.parse(RawRequest("POST", "/webhooks/woocommerce", "", headers, body, "127.0.0.1", RECEIVED_AT),
                               CONFIG)

    assert [e.to_json_dict() for e in result.events] == [{
        "event_name": "purchase", "transaction_id": "4822", "timestamp": "2026-05-10T14:20:11Z",
        "value": 89.9, "currency": "EUR",
        "items": [{"item_id": "SWEATER-M", "item_name": "Wool Sweater", "quantity": 1, "price": 60.0},
                  {"item_id": "SOCKS-W", "item_name": "Wool Socks", "quantity": 1, "price": 25.0}],
        "user_data": {"email_address": "max.mustermann@example.de", "phone_number": "+49 40 1234567",
                      "address": {"first_name": "Max", "last_name": "Mustermann", "street": "Hauptstr. 5",
                                  "city": "Hamburg", "postal_code": "20095", "country": "DE"}},
        "ip_override": "198.51.100.42",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/131.0.0.0 Safari/537.36",
        "consent": {}, "extra": {},
    }]


def test_a_legacy_refunded_order_is_a_full_refund_of_its_total_and_its_meta_data_is_read() -> None:
    legacy = load_fixture("webhooks", "woocommerce_legacy_v3_order_created.json")
    legacy["order"] |= {"status": "refunded", "order_meta": {"_gclid": "legacy-gclid"}}

    (event,) = woocommerce.parse(signed(legacy), CONFIG).events

    assert (event.event_name, event.value, event.gclid, event.order.full_refund, event.order.total) == (
        "refund", 89.9, "legacy-gclid", True, 89.9)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("woocommerce_order_updated_partial_refund.json", [
            ("purchase", "4821", 89.9, None, None, "2026-05-10T14:20:15+00:00"),
            ("refund", "4821", 20.0, "woocommerce:4830", None, "2026-05-14T09:02:40+00:00"),
        ], id="an_update_with_a_refund_repeats_the_purchase_and_reports_the_refund"),
        pytest.param("woocommerce_order_updated_refunded.json", [
            ("refund", "4821", 20.0, "woocommerce:4830", None, "2026-05-20T16:45:03+00:00"),
            ("refund", "4821", 69.9, "woocommerce:4837", None, "2026-05-20T16:45:03+00:00"),
        ], id="refunded_reports_every_refund_oldest_first_and_nothing_more_when_they_cover_the_total"),
        pytest.param("woocommerce_order_updated_cancelled.json", [
            ("order_cancelled", "4822", None, None, None, "2026-05-12T08:00:00+00:00"),
        ], id="cancelled_is_order_cancelled"),
    ],
)
def test_an_order_update_becomes_events_by_status_and_refunds(name: str, expected: list[tuple[Any, ...]]) -> None:
    assert summary(fixture_request(name)) == expected


def test_refunded_without_refund_entries_is_a_full_refund_of_the_total() -> None:
    order = load_fixture("webhooks", "woocommerce_order_updated_refunded.json") | {"refunds": []}

    assert summary(signed(order)) == [("refund", "4821", 89.9, "woocommerce:4821:refunded", "full", "2026-05-20T16:45:03+00:00")]


def test_refunded_with_refunds_short_of_the_total_refunds_the_rest_in_full() -> None:
    order = load_fixture("webhooks", "woocommerce_order_updated_refunded.json")
    order["refunds"] = [{"id": 4830, "reason": "", "total": "-20.00"}]

    assert summary(signed(order))[-1] == ("refund", "4821", 69.9, "woocommerce:4821:refunded", "full",
                                          "2026-05-20T16:45:03+00:00")


@pytest.mark.parametrize("status", ["pending", "on-hold", "failed", "checkout-draft"])
def test_an_unpaid_order_makes_no_event(status: str) -> None:
    order = load_fixture("webhooks", "woocommerce_order_created_processing.json") | {"status": status}

    assert summary(signed(order, "order.created")) == []


def test_on_hold_counts_as_a_purchase_when_configured() -> None:
    config = woocommerce.Config(type="woocommerce", secret="fixture-secret",
                                purchase_statuses=["on-hold", "processing", "completed"])
    order = load_fixture("webhooks", "woocommerce_order_created_processing.json") | {"status": "on-hold"}

    assert [e[0] for e in summary(signed(order, "order.created"), config)] == ["purchase"]


def test_the_order_number_can_be_the_transaction_id() -> None:
    config = woocommerce.Config(type="woocommerce", secret="fixture-secret", order_id_field="number")
    order = load_fixture("webhooks", "woocommerce_order_created_processing.json") | {"number": "WC-2026-4821"}

    assert summary(signed(order, "order.created"), config)[0][1] == "WC-2026-4821"


def test_the_ping_on_webhook_creation_gets_200_and_nothing_else() -> None:
    raw = RawRequest("POST", "/webhooks/woocommerce", "", {"content-type": "application/x-www-form-urlencoded"},
                     b"webhook_id=17", "127.0.0.1", RECEIVED_AT)

    result = woocommerce.parse(raw, CONFIG)

    assert (result.status, result.events, result.request_key) == (200, [], None)


@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"X-WC-Webhook-Signature": ""}, id="missing"),
        pytest.param({"X-WC-Webhook-Signature": base64.b64encode(b"y" * 32).decode()}, id="wrong_digest"),
        pytest.param({"X-WC-Webhook-Signature": HEADERS["woocommerce_order_updated_refunded.json"]["X-WC-Webhook-Signature"]},
                     id="another_bodys_digest"),
    ],
)
def test_a_bad_signature_is_401_naming_the_header(override: dict[str, str]) -> None:
    with pytest.raises(BadRequest) as caught:
        woocommerce.parse(fixture_request("woocommerce_order_created_processing.json", **override), CONFIG)

    assert (caught.value.status, caught.value.field) == (401, "headers.x-wc-webhook-signature")


def test_a_deleted_order_is_answered_without_events() -> None:
    result = woocommerce.parse(signed({"id": 4821}, "order.deleted"), CONFIG)

    assert (result.status, result.events, result.request_key) == (200, [], "woocommerce:d-1")


def test_a_topic_it_does_not_handle_is_acknowledged_as_ignored() -> None:
    result = woocommerce.parse(signed({"id": 1}, "product.updated"), CONFIG)

    assert (result.status, result.events, result.ignored, result.request_key) == (200, [], "unsupported_topic",
                                                                                  "woocommerce:d-1")


def test_every_refund_carries_the_order_total_for_the_ledgers_base() -> None:
    events = woocommerce.parse(fixture_request("woocommerce_order_updated_refunded.json"), CONFIG).events

    assert [(e.order.refund_id, e.order.total) for e in events] == [("woocommerce:4830", 89.9), ("woocommerce:4837", 89.9)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"refunds": [{"id": 1, "total": "-abc"}]}, "refunds[0].total", id="refund_total_not_a_number"),
        pytest.param({"total": "lots"}, "total", id="total_not_a_number"),
        pytest.param({"date_paid_gmt": "yesterday"}, "date_paid_gmt", id="time_not_iso"),
        pytest.param({"meta_data": [{"key": "_ad_user_data", "value": "maybe"}]}, "meta_data.ad_user_data",
                     id="consent_meta_not_granted_or_denied"),
    ],
)
def test_a_bad_order_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    order = load_fixture("webhooks", "woocommerce_order_created_processing.json") | change

    with pytest.raises(BadRequest) as caught:
        woocommerce.parse(signed(order), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, field)
