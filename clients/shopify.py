"""Shopify webhooks: ``POST /webhooks/shopify`` for the order topics that move a conversion's value.

References: https://shopify.dev/docs/apps/build/webhooks/verify-deliveries (HMAC and duplicates),
https://shopify.dev/docs/api/admin-rest/latest/resources/webhook (topics),
https://shopify.dev/docs/api/admin-rest/latest/resources/order and .../refund (payloads).

- ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body, keyed
  with the app's client secret (or the secret a store shows under
  Notifications -> Webhooks); compared in constant time before the body is read.
- ``X-Shopify-Topic``: ``orders/create`` and ``orders/paid`` -> ``purchase``
  (the ledger keeps one per order), ``orders/cancelled`` -> ``order_cancelled``,
  ``refunds/create`` -> ``refund``. Any other topic is refused with a 400
  naming the header: a store sending it is misconfigured.
- Shopify retries a delivery with the same ``X-Shopify-Webhook-Id``; it is
  the request key, so a retry is a no-op that still gets 200.
- The order id is the numeric ``id`` (``order_id`` in a refund), so the
  browser's purchase hit must send that as ``transaction_id`` for the two to
  be one order.
- A refund's amount is what its ``transactions`` of kind ``refund`` with
  status ``success`` moved: a failed attempt or a restock without money
  refunds nothing (such a refund produces no event). Line items are not
  summed: they ignore shipping refunds and order-level adjustments.
  Transactions are in the currency the customer paid, so the purchase's
  value is ``total_price_set.presentment_money`` when Shopify sends it (else
  ``total_price`` in ``currency``): the ledger subtracts like from like.
- The click id is in the query of ``landing_site`` (the first page of the
  visit), or in a cart attribute (``note_attributes``) named ``gclid``,
  ``gbraid`` or ``wbraid`` that a storefront script filled. Consent comes
  from note attributes named like the four Consent Mode signals, when the
  storefront puts them there; otherwise the ledger's (from the browser hit)
  or the container's default applies.
- Customer data comes from ``customer`` and ``billing_address``; user agent
  and IP from ``client_details`` (the buyer's browser, not Shopify's servers).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Mapping

from pydantic import Field, PrivateAttr

from clients import _orders
from clients._click_ids import click_ids
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.errors import BadRequest
from gateway.event import Event

ROUTES = [("POST", "/webhooks/shopify")]

PURCHASE_TOPICS = frozenset({"orders/create", "orders/paid"})
TOPICS = PURCHASE_TOPICS | {"orders/cancelled", "refunds/create"}

_MONEY, _TEXT = _orders.MONEY_SCHEMA, _orders.TEXT_SCHEMA
_TIME = {"type": "string", "format": "date-time"}
_NAMED = {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {}}}}
_LINE_ITEM = {"type": "object", "properties": {
    "sku": _TEXT, "variant_id": _TEXT, "product_id": _TEXT, "title": {"type": "string"},
    "quantity": {"type": "integer"}, "price": _MONEY}}
_ORDER = {
    "type": "object",
    "required": ["id"],
    "description": "An order (orders/create, orders/paid, orders/cancelled), as Shopify's Admin API shows it.",
    "properties": {
        "id": _TEXT, "total_price": _MONEY, "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        "total_price_set": {"type": "object", "properties": {"presentment_money": {"type": "object", "properties": {
            "amount": _MONEY, "currency_code": {"type": "string", "pattern": "^[A-Za-z]{3}$"}}}}},
        "processed_at": _TIME, "created_at": _TIME, "cancelled_at": _TIME, "updated_at": _TIME,
        "landing_site": {"type": "string"}, "note_attributes": _NAMED, "email": {"type": "string"},
        "phone": {"type": "string"}, "customer": {"type": "object"}, "billing_address": {"type": "object"},
        "client_details": {"type": "object"}, "line_items": {"type": "array", "items": _LINE_ITEM},
    },
}
_REFUND = {
    "type": "object",
    "required": ["id", "order_id"],
    "description": "A refund (refunds/create).",
    "properties": {
        "id": _TEXT, "order_id": _TEXT, "processed_at": _TIME, "created_at": _TIME,
        "transactions": {"type": "array", "items": {"type": "object", "properties": {
            "kind": {"type": "string"}, "status": {"type": "string"}, "amount": _MONEY,
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"}}}},
        "refund_line_items": {"type": "array", "items": {"type": "object", "properties": {
            "quantity": {"type": "integer"}, "line_item": _LINE_ITEM}}},
    },
}

# The OpenAPI operations of this client (served at /openapi.json by gateway.openapi).
OPENAPI: dict[str, dict[str, Any]] = {
    "POST /webhooks/shopify": {
        "operationId": "shopify_webhook",
        "summary": "A Shopify order or refund webhook",
        "parameters": [
            {"name": "X-Shopify-Hmac-Sha256", "in": "header", "required": True,
             "description": "Base64 HMAC-SHA256 of the raw body, keyed with the app's client secret.",
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$"}},
            {"name": "X-Shopify-Topic", "in": "header", "required": True,
             "schema": {"type": "string", "enum": sorted(TOPICS)}},
            {"name": "X-Shopify-Webhook-Id", "in": "header", "required": False,
             "description": "The same for every retry of one delivery: a retry is a no-op that answers 200.",
             "schema": {"type": "string", "maxLength": 200}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [_ORDER, _REFUND]}}}},
        "responses": {"200": {"description": "Recorded, or recognised as a redelivery."}},
    },
}


class Config(ClientConfig):
    type: Literal["shopify"]
    secret: str = Field(min_length=1, description="The app's client secret (the key of X-Shopify-Hmac-Sha256).")
    _key: bytes = PrivateAttr(b"")

    def model_post_init(self, context: Any, /) -> None:
        self._key = self.secret.encode("utf-8")


def parse(raw: RawRequest, config: Config) -> ClientResult:
    _orders.check_base64_signature(
        raw.body, config._key, raw.headers.get("x-shopify-hmac-sha256"), "headers.x-shopify-hmac-sha256"
    )
    topic = raw.headers.get("x-shopify-topic", "").strip()
    if topic not in TOPICS:
        raise BadRequest(400, "unsupported topic", field="headers.x-shopify-topic")
    payload = _orders.json_object(raw.body)
    webhook_id = raw.headers.get("x-shopify-webhook-id", "").strip()
    if topic == "refunds/create":
        events = _refund(payload, raw)
    else:
        events = [_order(topic, payload, raw)]
    return ClientResult(events, status=200, request_key=f"shopify:{webhook_id}" if webhook_id else None)


def _order(topic: str, order: Mapping[str, Any], raw: RawRequest) -> Event:
    order_id = _orders.required_text(order, "id", "id")
    value, currency = _value(order, required=topic in PURCHASE_TOPICS)
    attributes = _orders.named_values(order.get("note_attributes"), "note_attributes", "name", "value")
    fields: dict[str, Any] = {
        **click_ids(_url(order.get("landing_site"))),
        **_orders.click_ids_from_named(attributes),
        "consent": _orders.consent_from_named(attributes, "note_attributes"),
        "user_data": _customer(order),
        **_client_details(order),
    }
    if topic in PURCHASE_TOPICS:
        moment = _time(order, ("processed_at", "created_at")) or raw.received_at
        line_items = order.get("line_items")
        fields["items"] = _orders.items(line_items if isinstance(line_items, list) else [],
                                        id_keys=("sku", "variant_id", "product_id"), name_key="title")
        return _orders.purchase(order_id, moment, value, currency, **fields)
    moment = _time(order, ("cancelled_at", "updated_at")) or raw.received_at
    return _orders.cancellation(order_id, moment, currency, **fields)


def _refund(refund: Mapping[str, Any], raw: RawRequest) -> list[Event]:
    order_id = _orders.required_text(refund, "order_id", "order_id")
    refund_id = _orders.required_text(refund, "id", "id")
    transactions = refund.get("transactions")
    if transactions is not None and not isinstance(transactions, list):
        raise BadRequest(400, "transactions must be a list", field="transactions")
    amount = None
    currency = None
    for i, tx in enumerate(transactions or []):
        if not isinstance(tx, Mapping) or tx.get("kind") != "refund" or tx.get("status") != "success":
            continue
        moved = _orders.money(tx.get("amount"), f"transactions[{i}].amount", required=True)
        amount = moved if amount is None else amount + moved  # type: ignore[operator]
        currency = currency or _orders.currency(tx.get("currency"), f"transactions[{i}].currency")
    if amount is None or amount == 0:
        return []  # nothing was paid back (a restock, or every attempt failed)
    moment = _time(refund, ("processed_at", "created_at")) or raw.received_at
    returned = []
    lines = refund.get("refund_line_items")
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, Mapping) and isinstance(line.get("line_item"), Mapping):
            returned.append({**line["line_item"], "quantity": line.get("quantity")})
    items = _orders.items(returned, id_keys=("sku", "variant_id", "product_id"), name_key="title")
    return [_orders.refund(order_id, moment, amount, currency, f"shopify:{refund_id}", items=items)]


def _value(order: Mapping[str, Any], required: bool) -> tuple[Any, str | None]:
    """The order's total in the currency the customer paid, which is the currency of its refunds.

    ``total_price_set.presentment_money`` when Shopify sends it, else
    ``total_price`` in the shop's ``currency`` (the same for single-currency shops).
    """
    price_set = order.get("total_price_set")
    presentment = price_set.get("presentment_money") if isinstance(price_set, Mapping) else None
    if isinstance(presentment, Mapping) and presentment.get("amount") is not None:
        field = "total_price_set.presentment_money"
        return (_orders.money(presentment.get("amount"), f"{field}.amount", required=required),
                _orders.currency(presentment.get("currency_code"), f"{field}.currency_code", required=required))
    return (_orders.money(order.get("total_price"), "total_price", required=required),
            _orders.currency(order.get("currency"), "currency", required=required))


def _customer(order: Mapping[str, Any]) -> Any:
    customer = order.get("customer") if isinstance(order.get("customer"), Mapping) else {}
    billing = order.get("billing_address") if isinstance(order.get("billing_address"), Mapping) else {}
    return _orders.user_data(
        email=order.get("email") or customer.get("email"),
        phone=customer.get("phone") or order.get("phone") or billing.get("phone"),
        first_name=billing.get("first_name") or customer.get("first_name"),
        last_name=billing.get("last_name") or customer.get("last_name"),
        street=billing.get("address1"),
        city=billing.get("city"),
        region=billing.get("province_code"),
        postal_code=billing.get("zip"),
        country=billing.get("country_code"),
    )


def _client_details(order: Mapping[str, Any]) -> dict[str, str]:
    details = order.get("client_details") if isinstance(order.get("client_details"), Mapping) else {}
    out = {}
    ip = details.get("browser_ip") or order.get("browser_ip")
    if isinstance(ip, str) and ip.strip():
        out["ip_override"] = ip.strip()
    agent = details.get("user_agent")
    if isinstance(agent, str) and agent.strip():
        out["user_agent"] = agent.strip()
    return out


def _time(obj: Mapping[str, Any], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        moment = _orders.timestamp(obj.get(key), key)
        if moment is not None:
            return moment
    return None


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) else None
