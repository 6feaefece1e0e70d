"""The Shopify client: signed topics in, order events out, a 401 for a bad HMAC, a 400 for other topics."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from clients import shopify
from gateway.client import RawRequest
from gateway.errors import BadRequest
from tests.conftest import FIXTURES, load_fixture

RECEIVED_AT = datetime(2026, 5, 5, 12, 0, 0, tzinfo=timezone.utc)
CONFIG = shopify.Config(type="shopify", secret="fixture-secret")
HEADERS = load_fixture("webhooks", "headers.json")
WEBHOOKS = FIXTURES / "webhooks"


def fixture_request(name: str, **override: str) -> RawRequest:
    headers = {k.lower(): v for k, v in {**HEADERS[name], **override}.items()}
    return RawRequest("POST", "/webhooks/shopify", "", headers, (WEBHOOKS / name).read_bytes(), "127.0.0.1", RECEIVED_AT)


def signed(payload: dict[str, Any], topic: str, webhook_id: str = "wh-1") -> RawRequest:
    body = orjson.dumps(payload)
    digest = base64.b64encode(hmac.new(b"fixture-secret", body, hashlib.sha256).digest()).decode()
    headers = {"x-shopify-hmac-sha256": digest, "x-shopify-topic": topic, "x-shopify-webhook-id": webhook_id}
    return RawRequest("POST", "/webhooks/shopify", "", headers, body, "127.0.0.1", RECEIVED_AT)


USER_AGENT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.4 Safari/605.1.15")
JANE = {
    "email_address": "jane.roe+news@example.com", "phone_number": "+14155550132",
    "address": {"first_name": "Jane", "last_name": "Roe", "street": "1 Market St", "city": "San Francisco",
                "region": "CA", "postal_code": "94105", "country": "US"},
}
ITEMS = [{"item_id": "TRAIL-42", "item_name": "Trail Shoe", "quantity": 1, "price": 110.0},
         {"item_id": "SOCK-3P", "item_name": "Socks 3-pack", "quantity": 2, "price": 15.0}]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("shopify_orders_create.json", {
            "event_name": "purchase", "transaction_id": "5801234567890", "timestamp": "2026-04-23T12:31:09Z",
            "value": 149.0, "currency": "USD", "gclid": "EAIaIQobChMIshopify-gclid-1042", "items": ITEMS,
            "user_data": JANE, "ip_override": "203.0.113.7", "user_agent": USER_AGENT,
            "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
            "extra": {"source": "order_system"},
        }, id="orders_create_is_a_purchase_with_the_landing_site_gclid"),
        pytest.param("shopify_refunds_create.json", {
            "event_name": "refund", "transaction_id": "5801234567890", "timestamp": "2026-04-26T14:00:00Z",
            "event_id": "shopify:930001", "value": 31.93, "currency": "USD",
            "items": [{"item_id": "SOCK-3P", "item_name": "Socks 3-pack", "quantity": 2, "price": 15.0}],
            "consent": {}, "extra": {"source": "order_system", "refund_id": "shopify:930001"},
        }, id="refunds_create_refunds_what_the_successful_refund_transactions_moved"),
        pytest.param("shopify_orders_cancelled.json", {
            "event_name": "order_cancelled", "transaction_id": "5801234567891", "timestamp": "2026-04-24T13:00:00Z",
            "event_id": "cancel:5801234567891", "currency": "USD", "gclid": "EAIaIQobChMIshopify-gclid-1042",
            "user_data": JANE, "ip_override": "203.0.113.7", "user_agent": USER_AGENT,
            "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
            "extra": {"source": "order_system"},
        }, id="orders_cancelled_is_order_cancelled"),
    ],
)
def test_fixture_becomes_the_order_event(name: str, expected: dict[str, Any]) -> None:
    result = shopify.parse(fixture_request(name), CONFIG)

    assert [e.to_json_dict() for e in result.events] == [expected]
    assert (result.status, result.request_key) == (200, f"shopify:{HEADERS[name]['X-Shopify-Webhook-Id']}")


def test_orders_paid_is_a_purchase_too() -> None:
    order = load_fixture("webhooks", "shopify_orders_create.json")

    result = shopify.parse(signed(order, "orders/paid"), CONFIG)

    assert [e.event_name for e in result.events] == ["purchase"]


@pytest.mark.parametrize(
    "override",
    [
        pytest.param({"X-Shopify-Hmac-Sha256": ""}, id="missing"),
        pytest.param({"X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode()}, id="wrong_digest"),
        pytest.param({"X-Shopify-Hmac-Sha256": "not base64!"}, id="not_base64"),
        pytest.param({"X-Shopify-Hmac-Sha256": HEADERS["shopify_refunds_create.json"]["X-Shopify-Hmac-Sha256"]},
                     id="another_bodys_digest"),
    ],
)
def test_a_bad_hmac_is_401_naming_the_header(override: dict[str, str]) -> None:
    with pytest.raises(BadRequest) as caught:
        shopify.parse(fixture_request("shopify_orders_create.json", **override), CONFIG)

    assert (caught.value.status, caught.value.field) == (401, "headers.x-shopify-hmac-sha256")


def test_a_topic_it_does_not_handle_is_400_naming_the_header() -> None:
    with pytest.raises(BadRequest) as caught:
        shopify.parse(signed({"id": 1}, "products/update"), CONFIG)

    assert caught.value.body() == {"error": "unsupported topic", "detail": {"field": "headers.x-shopify-topic"}}


def test_the_click_id_may_come_from_a_cart_attribute() -> None:
    order = load_fixture("webhooks", "shopify_orders_create.json")
    order["landing_site"] = "/"
    order["note_attributes"] = [{"name": "gclid", "value": "gclid-from-cart"}]

    (event,) = shopify.parse(signed(order, "orders/create"), CONFIG).events

    assert (event.gclid, event.consent.model_dump(exclude_none=True)) == ("gclid-from-cart", {})


def test_the_purchase_is_valued_in_the_currency_the_customer_paid() -> None:
    order = load_fixture("webhooks", "shopify_orders_create.json") | {
        "currency": "USD", "presentment_currency": "EUR",
        "total_price_set": {"shop_money": {"amount": "149.00", "currency_code": "USD"},
                            "presentment_money": {"amount": "137.50", "currency_code": "EUR"}},
    }

    (event,) = shopify.parse(signed(order, "orders/create"), CONFIG).events

    assert (event.value, event.currency) == (137.5, "EUR")


def test_a_refund_without_a_successful_refund_transaction_makes_no_event() -> None:
    refund = load_fixture("webhooks", "shopify_refunds_create.json")
    refund["transactions"] = [t | {"status": "failure"} for t in refund["transactions"]]

    result = shopify.parse(signed(refund, "refunds/create", "wh-9"), CONFIG)

    assert (result.events, result.request_key) == ([], "shopify:wh-9")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"total_price": "-1.00"}, "total_price", id="negative_total"),
        pytest.param({"note_attributes": [{"name": "ad_user_data", "value": "perhaps"}]},
                     "note_attributes.ad_user_data", id="consent_attribute_not_granted_or_denied"),
        pytest.param({"processed_at": "tomorrow"}, "processed_at", id="time_not_iso"),
        pytest.param({"id": None}, "id", id="no_order_id"),
    ],
)
def test_a_bad_order_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    order = load_fixture("webhooks", "shopify_orders_create.json") | change

    with pytest.raises(BadRequest) as caught:
        shopify.parse(signed(order, "orders/create"), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, field)
