"""Order webhooks, signed and not: hostile JSON with a correct signature must still get a 4xx, never a 5xx.

The signature is checked before anything in the body is read, so an
unsigned or badly signed request must get a 401 whatever it carries; a
correctly signed one reaches the parser, the ledger and the tags, which is
where hostile values (huge amounts, times at the ends of the calendar, ids
of every type, lists where objects belong) can hurt.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, FuzzedGateway, base64_signature, hex_signature
from tests.fuzz.strategies import (
    dumps,
    hostile_json,
    iso_times,
    json_values,
    mangled,
    mostly,
    numberish,
    objects,
    recent_times,
    text,
)

order_ids = mostly(st.from_regex(r"(ORD|W)-[0-9]{1,4}", fullmatch=True) | st.integers(1, 10**6),
                   st.one_of(text, st.integers(), json_values))
money = mostly(st.decimals(0, 10**4, places=2).map(str) | st.floats(0, 1e4, allow_nan=False) | st.integers(0, 10**4),
               numberish)
currencies = mostly(st.sampled_from(["EUR", "USD", "eur"]), text)
clicks = mostly(st.from_regex(r"Cj0[A-Za-z0-9_-]{4,20}", fullmatch=True), text)
consent = objects({s: st.sampled_from(["granted", "denied"]) for s in
                   ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")})
times = mostly(recent_times(), iso_times())
customer = objects({"email": text, "phone": text, "first_name": text, "last_name": text, "street": text,
                    "city": text, "region": text, "postal_code": text, "country": text})


signed_or_not = st.sampled_from(["signed"] * 8 + ["unsigned", "wrong", "garbled"])
delivery_ids = st.uuids().map(lambda u: str(u).encode()) | st.sampled_from([b"d-1", b"", b"\xff"])  # a redelivery now and then


def _signature(how: str, body: bytes, sign: Any) -> bytes | None:
    if how == "signed":
        return sign(body)
    if how == "wrong":
        return sign(body + b"x")
    if how == "garbled":
        return b"sha256=\xff\x00not-hex"
    return None


# -- the generic order-update webhook -----------------------------------------------------------

ORDER_UPDATE = {
    "order_id": order_ids,
    "event": mostly(st.sampled_from(["order_created", "order_paid", "partial_refund", "full_refund", "refund",
                                     "cancelled"]), text),
    "order_value": money, "refund_amount": money, "retained_value": money, "currency": currencies,
    "updated_at": times, "event_id": mostly(st.uuids().map(str), text), "refund_id": mostly(st.uuids().map(str), text),
    "items_returned": st.lists(objects({"sku": text, "item_id": text, "quantity": st.integers(-3, 10**6) | numberish,
                                        "price": money}), max_size=3),
    "gclid": clicks, "gbraid": clicks, "wbraid": clicks, "customer": customer, "consent": consent,
}


@st.composite
def order_updates(draw: st.DrawFn) -> dict[str, Any]:
    payload = draw(mostly(objects(ORDER_UPDATE, required=("order_id", "event")), hostile_json, odds=9))
    body = draw(mangled(dumps(payload)))
    how = draw(signed_or_not)
    headers = []
    signature = _signature(how, body, hex_signature)
    if signature is not None:
        headers.append((b"x-signature", signature))
    if draw(st.booleans()):
        headers.append((b"idempotency-key", draw(delivery_ids | st.sampled_from([b"k-1", b"k-2", b" ", b"\xff\x00"]))))
    return {"headers": headers, "body": body, "how": how}


@FUZZ
@given(request=order_updates())
def test_order_update_webhooks_signed_or_not_get_2xx_or_a_json_4xx_and_a_4xx_stores_nothing(fuzzed: FuzzedGateway, request):
    answer = fuzzed.send_checked("POST", "/webhooks/order-update", headers=request["headers"], body=request["body"])
    if request["how"] != "signed":
        assert answer.status == 401


# -- Shopify ----------------------------------------------------------------------------------------

SHOPIFY_TOPICS = ["orders/create", "orders/paid", "orders/cancelled", "refunds/create"]
price_set = objects({"presentment_money": objects({"amount": money, "currency_code": currencies}),
                     "shop_money": objects({"amount": money, "currency_code": currencies})})
address = objects({"first_name": text, "last_name": text, "address1": text, "city": text, "province_code": text,
                   "zip": text, "country_code": text, "phone": text})
named = st.lists(objects({"name": mostly(st.sampled_from(["gclid", "gbraid", "_gclid", "ad_user_data", "ad_storage"]), text),
                          "value": mostly(clicks | st.sampled_from(["granted", "denied"]), hostile_json)}), max_size=4)
line_item = objects({"sku": text, "variant_id": st.integers(1, 10**12) | text, "product_id": st.integers(1, 10**12),
                     "title": text, "quantity": st.integers(-2, 100) | numberish, "price": money})
SHOPIFY_ORDER = {
    "id": order_ids, "total_price": money, "currency": currencies, "total_price_set": price_set,
    "processed_at": times, "created_at": times, "cancelled_at": times, "updated_at": times,
    "landing_site": mostly(st.builds(lambda g: f"/?gclid={g}", clicks), text), "note_attributes": named,
    "email": text, "phone": text, "customer": objects({"email": text, "phone": text, "first_name": text}),
    "billing_address": address, "client_details": objects({"browser_ip": text, "user_agent": text}),
    "browser_ip": text, "line_items": st.lists(line_item, max_size=3),
}
SHOPIFY_REFUND = {
    "id": order_ids, "order_id": order_ids, "processed_at": times, "created_at": times,
    "transactions": st.lists(objects({"kind": mostly(st.just("refund"), text), "status": mostly(st.just("success"), text),
                                      "amount": money, "currency": currencies}), max_size=3),
    "refund_line_items": st.lists(objects({"quantity": st.integers(0, 5), "line_item": line_item}), max_size=3),
}


@st.composite
def shopify_webhooks(draw: st.DrawFn) -> dict[str, Any]:
    topic = draw(mostly(st.sampled_from(SHOPIFY_TOPICS), st.sampled_from(["orders/updated", "", "ORDERS/CREATE", "\xff"]),
                        odds=9))
    fields = SHOPIFY_REFUND if topic == "refunds/create" else SHOPIFY_ORDER
    required = ("id", "order_id") if topic == "refunds/create" else ("id",)
    payload = draw(mostly(objects(fields, required=required), hostile_json, odds=9))
    body = draw(mangled(dumps(payload)))
    how = draw(signed_or_not)
    headers = [(b"x-shopify-topic", topic.encode("utf-8", "replace"))]
    signature = _signature(how, body, base64_signature)
    if signature is not None:
        headers.append((b"x-shopify-hmac-sha256", signature))
    if draw(st.booleans()):
        headers.append((b"x-shopify-webhook-id", draw(delivery_ids)))
    return {"headers": headers, "body": body, "how": how}


@FUZZ
@given(request=shopify_webhooks())
def test_shopify_webhooks_signed_or_not_get_2xx_or_a_json_4xx_and_a_4xx_stores_nothing(fuzzed: FuzzedGateway, request):
    answer = fuzzed.send_checked("POST", "/webhooks/shopify", headers=request["headers"], body=request["body"])
    if request["how"] != "signed":
        assert answer.status == 401


# -- WooCommerce ---------------------------------------------------------------------------------------

WOO_TOPICS = ["order.created", "order.updated", "order.deleted", "order.restored"]
WOO_ORDER = {
    "id": order_ids, "number": order_ids,
    "status": mostly(st.sampled_from(["processing", "completed", "cancelled", "refunded", "on-hold", "pending"]), text),
    "currency": currencies, "total": money, "date_paid_gmt": mostly(recent_times(naive=True), iso_times()),
    "date_created_gmt": mostly(recent_times(naive=True), iso_times()),
    "date_modified_gmt": mostly(recent_times(naive=True), iso_times()),
    "meta_data": st.lists(objects({"key": mostly(st.sampled_from(["_gclid", "gclid", "wbraid", "ad_user_data"]), text),
                                   "value": mostly(clicks | st.sampled_from(["granted", "denied"]), hostile_json)}),
                          max_size=4),
    "billing": objects({"email": text, "phone": text, "first_name": text, "last_name": text, "address_1": text,
                        "city": text, "state": text, "postcode": text, "country": text}),
    "refunds": st.lists(objects({"id": mostly(st.integers(1, 10**6), text),
                                 "total": mostly(money.map(lambda m: f"-{m}"), money)}, required=("id", "total")),
                        max_size=3),
    "line_items": st.lists(objects({"sku": text, "product_id": st.integers(1, 10**6), "name": text,
                                    "quantity": st.integers(0, 9), "price": money}), max_size=3),
    "customer_ip_address": text, "customer_user_agent": text,
}


@st.composite
def woocommerce_webhooks(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.sampled_from([False] * 9 + [True])):  # the ping a store sends when a webhook is saved
        body = draw(st.sampled_from([b"webhook_id=12", b"webhook_id=", b"webhook_id=1&x=2", b"webhook_id=" + b"9" * 30]))
        return {"headers": [(b"content-type", b"application/x-www-form-urlencoded")], "body": body, "how": "ping"}
    topic = draw(mostly(st.sampled_from(WOO_TOPICS), st.sampled_from(["action.woocommerce_x", "", "\xff"]), odds=9))
    payload = draw(mostly(objects(WOO_ORDER, required=("id", "status")), hostile_json, odds=9))
    body = draw(mangled(dumps(payload)))
    how = draw(signed_or_not)
    headers = [(b"x-wc-webhook-topic", topic.encode("utf-8", "replace"))]
    signature = _signature(how, body, base64_signature)
    if signature is not None:
        headers.append((b"x-wc-webhook-signature", signature))
    if draw(st.booleans()):
        headers.append((b"x-wc-webhook-delivery-id", draw(delivery_ids)))
    return {"headers": headers, "body": body, "how": how}


@FUZZ
@given(request=woocommerce_webhooks())
def test_woocommerce_webhooks_signed_or_not_get_2xx_or_a_json_4xx_and_a_4xx_stores_nothing(fuzzed: FuzzedGateway, request):
    answer = fuzzed.send_checked("POST", "/webhooks/woocommerce", headers=request["headers"], body=request["body"])
    if request["how"] not in ("signed", "ping"):
        assert answer.status == 401


# -- correctly signed hostile JSON of any shape ------------------------------------------------------


@FUZZ
@given(payload=st.one_of(hostile_json, st.dictionaries(text, json_values, max_size=6)),
       route=st.sampled_from(["order-update", "shopify", "woocommerce"]),
       topic=st.sampled_from(SHOPIFY_TOPICS + WOO_TOPICS))
def test_any_json_correctly_signed_gets_2xx_or_a_json_4xx(fuzzed: FuzzedGateway, payload, route, topic):
    body = dumps(payload)
    if route == "order-update":
        headers = [(b"x-signature", hex_signature(body))]
    elif route == "shopify":
        headers = [(b"x-shopify-hmac-sha256", base64_signature(body)), (b"x-shopify-topic", topic.encode())]
    else:
        headers = [(b"x-wc-webhook-signature", base64_signature(body)), (b"x-wc-webhook-topic", topic.encode())]
    fuzzed.send_checked("POST", f"/webhooks/{route}", headers=headers, body=body)
