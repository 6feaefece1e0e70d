"""The Shopify client: signed topics in, order events out; a 401 for a bad HMAC, a 400 for a topic its body
contradicts, an acknowledgement for topics it does not act on."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timezone
from typing import Any

import msgspec
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
            "consent": {"ad_user_data": "granted", "ad_personalization": "granted"}, "extra": {},
        }, id="orders_create_is_a_purchase_with_the_landing_site_gclid"),
        pytest.param("shopify_refunds_create.json", {
            "event_name": "refund", "transaction_id": "5801234567890", "timestamp": "2026-04-26T14:00:00Z",
            "event_id": "shopify:930001", "value": 31.93, "currency": "USD",
            "items": [{"item_id": "SOCK-3P", "item_name": "Socks 3-pack", "quantity": 2, "price": 15.0}],
            "consent": {}, "order": {"refund_id": "shopify:930001"}, "extra": {},
        }, id="refunds_create_refunds_what_the_successful_refund_transactions_moved"),
        pytest.param("shopify_orders_cancelled.json", {
            "event_name": "order_cancelled", "transaction_id": "5801234567891", "timestamp": "2026-04-24T13:00:00Z",
            "event_id": "cancel:5801234567891", "currency": "USD", "gclid": "EAIaIQobChMIshopify-gclid-1042",
            "user_data": JANE, "ip_override": "203.0.113.7", "user_agent": USER_AGENT,
            "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
            "order": {"total": 149.0}, "extra": {},
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


def test_a_topic_it_does_not_handle_is_acknowledged_as_ignored() -> None:
    result = shopify.parse(signed({"id": 1}, "products/update", "wh-7"), CONFIG)

    assert (result.status, result.body, result.events, result.ignored, result.request_key) == (
        200, b'{"ignored":"unsupported_topic"}', [], "unsupported_topic", "shopify:wh-7")


ORDER = load_fixture("webhooks", "shopify_orders_create.json")
REFUND = load_fixture("webhooks", "shopify_refunds_create.json")


@pytest.mark.parametrize(
    ("body", "topic", "field"),
    [
        pytest.param(ORDER, "orders/cancelled", "cancelled_at", id="an_uncancelled_order_as_orders_cancelled"),
        pytest.param(ORDER, "refunds/create", "order_id", id="an_order_as_refunds_create"),
        pytest.param(REFUND, "orders/create", "order_id", id="a_refund_as_orders_create"),
        pytest.param(REFUND, "orders/cancelled", "order_id", id="a_refund_as_orders_cancelled"),
        pytest.param({**REFUND, "transactions": None}, "refunds/create", "transactions", id="a_refund_without_transactions"),
    ],
)
def test_a_topic_its_body_contradicts_is_400_naming_the_field(body: dict[str, Any], topic: str, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        shopify.parse(signed(body, topic), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, field)


def transaction(amount: str, status: str, tx_id: int = 1) -> dict[str, Any]:
    return {"id": tx_id, "kind": "refund", "status": status, "amount": amount, "currency": "USD"}


def test_a_refund_whose_money_is_still_pending_is_marked_pending_for_the_ledger() -> None:
    refund = REFUND | {"transactions": [transaction("1012.70", "pending")]}

    (event,) = shopify.parse(signed(refund, "refunds/create"), CONFIG).events

    assert (event.value, event.order.refund_id, event.order.refund_pending) == (1012.7, "shopify:930001", True)


def test_orders_updated_reports_every_refund_and_the_cancellation_as_backstops() -> None:
    order = ORDER | {"cancelled_at": "2026-04-28T10:00:00-04:00", "refunds": [
        {"id": 930001, "processed_at": "2026-04-26T10:00:00-04:00",
         "transactions": [transaction("31.93", "success"), transaction("31.93", "failure", 2)]},
        {"id": 930002, "processed_at": "2026-04-27T10:00:00-04:00", "transactions": [transaction("50.00", "pending")]},
        {"id": 930003, "processed_at": "2026-04-27T11:00:00-04:00", "transactions": [transaction("9.00", "error")]},
    ]}

    result = shopify.parse(signed(order, "orders/updated"), CONFIG)

    assert [(e.event_name, e.value, msgspec.to_builtins(e.order)) for e in result.events] == [
        ("refund", 31.93, {"refund_id": "shopify:930001", "total": 149.0, "backstop": True}),
        ("refund", 50.0, {"refund_id": "shopify:930002", "refund_pending": True, "total": 149.0, "backstop": True}),
        ("order_cancelled", None, {"total": 149.0, "backstop": True}),
    ]
    assert [e.transaction_id for e in result.events] == ["5801234567890"] * 3


def test_orders_updated_without_refund_or_cancellation_is_acknowledged_as_ignored() -> None:
    result = shopify.parse(signed(ORDER, "orders/updated"), CONFIG)

    assert (result.status, result.events, result.ignored) == (200, [], "no_refund_or_cancellation")


def test_a_web_storefront_order_is_placed_on_the_web_with_its_landing_page() -> None:
    order = ORDER | {"source_name": "web", "order_status_url": "https://trail-shop.example/1234/orders/abc/authenticate?key=k"}

    (event,) = shopify.parse(signed(order, "orders/create"), CONFIG).events

    assert (event.order.placed_on_web, event.page_location, event.user_agent) == (
        True, "https://trail-shop.example/products/trail-shoe?utm_source=google&gclid=EAIaIQobChMIshopify-gclid-1042",
        USER_AGENT)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"source_name": "pos"}, id="a_point_of_sale_order"),
        pytest.param({"source_name": "web", "client_details": {}}, id="without_the_browsers_user_agent"),
        pytest.param({"source_name": "web", "landing_site": None}, id="without_a_landing_page"),
    ],
)
def test_an_order_not_placed_in_a_browser_on_the_storefront_is_not_placed_on_the_web(change: dict[str, Any]) -> None:
    (event,) = shopify.parse(signed(ORDER | change, "orders/create"), CONFIG).events

    assert event.order is None


def test_the_click_id_may_come_from_a_cart_attribute() -> None:
    order = load_fixture("webhooks", "shopify_orders_create.json")
    order["landing_site"] = "/"
    order["note_attributes"] = [{"name": "gclid", "value": "gclid-from-cart"}]

    (event,) = shopify.parse(signed(order, "orders/create"), CONFIG).events

    assert (event.gclid, msgspec.to_builtins(event.consent)) == ("gclid-from-cart", {})


def test_the_purchase_is_valued_in_the_currency_the_customer_paid() -> None:
    order = load_fixture("webhooks", "shopify_orders_create.json") | {
        "currency": "USD", "presentment_currency": "EUR",
        "total_price_set": {"shop_money": {"amount": "149.00", "currency_code": "USD"},
                            "presentment_money": {"amount": "137.50", "currency_code": "EUR"}},
    }

    (event,) = shopify.parse(signed(order, "orders/create"), CONFIG).events

    assert (event.value, event.currency) == (137.5, "EUR")


def test_a_refund_that_moved_no_money_is_acknowledged_without_an_event() -> None:
    refund = load_fixture("webhooks", "shopify_refunds_create.json")
    refund["transactions"] = [t | {"status": "failure"} for t in refund["transactions"]]

    result = shopify.parse(signed(refund, "refunds/create", "wh-9"), CONFIG)

    assert (result.events, result.request_key, result.ignored) == ([], "shopify:wh-9", "no_money_moved")


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
