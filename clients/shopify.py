"""Shopify webhooks: ``POST /webhooks/shopify`` for the order topics that move a conversion's value.

References: https://shopify.dev/docs/apps/build/webhooks/verify-deliveries (HMAC and duplicates),
https://shopify.dev/docs/api/webhooks/latest (topics, each delivered with the resource's REST shape),
https://shopify.dev/docs/api/admin-rest/latest/resources/order (``refunds``, ``source_name``,
``client_details``), .../refund and .../transaction (a transaction's ``status``: ``pending``,
``failure``, ``success`` or ``error``).

- ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body, keyed
  with the app's client secret (or the secret a store shows under
  Notifications -> Webhooks); compared in constant time before the body is read.
- ``X-Shopify-Topic``: ``orders/create`` and ``orders/paid`` -> ``purchase``
  (the ledger keeps one per order), ``orders/cancelled`` -> ``order_cancelled``,
  ``refunds/create`` -> ``refund``, ``orders/updated`` -> the backstop below.
  The topic header is not signed, so it must agree with the body: an order
  for the order topics, ``cancelled_at`` for ``orders/cancelled``, a refund
  (``order_id`` and its ``transactions``) for ``refunds/create``; a body
  re-sent under another topic is a 400. Any other topic is acknowledged
  with 200 ``{"ignored": "unsupported_topic"}``: Shopify removes a
  subscription whose deliveries keep failing.
- Shopify retries a delivery with the same ``X-Shopify-Webhook-Id``; it is
  the request key, so a retry is a no-op that still gets 200.
- The order id is the numeric ``id`` (``order_id`` in a refund), so the
  browser's purchase hit must send that as ``transaction_id`` for the two to
  be one order.
- A refund's amount is what its ``transactions`` of kind ``refund`` moved:
  ``success`` has moved, ``pending`` (Shopify Payments sends
  ``refunds/create`` once, while the money is still on its way) will: such
  a refund is ``order.refund_pending`` and the ledger holds it; ``failure``
  and ``error`` moved nothing. A refund that moved nothing makes no event
  (acknowledged as ignored). Line items are not summed: they ignore shipping
  refunds and order-level adjustments. Transactions are in the currency the
  customer paid, so the purchase's value is
  ``total_price_set.presentment_money`` when Shopify sends it (else
  ``total_price`` in ``currency``): the ledger subtracts like from like.
- ``orders/updated`` is the backstop: it carries the order's cumulative
  ``refunds`` with their transactions' current status, so each refund in it
  is a refund event (``order.backstop``) that the ledger applies by refund
  id, once: one it missed, or one it held as pending that has succeeded
  since. A cancelled order's update is likewise a cancellation. The ledger
  never holds a backstop change for an order it does not know.
- The click id is in the query of ``landing_site`` (the first page of the
  visit), or in a cart attribute (``note_attributes``) named ``gclid``,
  ``gbraid`` or ``wbraid`` that a storefront script filled. Consent comes
  from note attributes named like the four Consent Mode signals, when the
  storefront puts them there; otherwise the ledger's (from the browser hit)
  or the container's default applies.
- Customer data comes from ``customer`` and ``billing_address``; user agent
  and IP from ``client_details`` (the buyer's browser, not Shopify's servers).
  An order placed on the web storefront (``source_name: web``) with the
  browser's user agent is ``order.placed_on_web``, its ``page_location`` the
  landing page on the shop's domain: the Meta tag sends it as a website
  event.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Mapping
from urllib.parse import urljoin, urlsplit

from pydantic import Field, PrivateAttr

from clients import _orders
from clients._click_ids import click_ids
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.errors import BadRequest
from gateway.event import Event

# Every request that makes events is signed with the client's secret: its events may change an order.
AUTHENTICATED = True
ROUTES = [("POST", "/webhooks/shopify")]

PURCHASE_TOPICS = frozenset({"orders/create", "orders/paid"})
TOPICS = PURCHASE_TOPICS | {"orders/cancelled", "refunds/create", "orders/updated"}
# Refund transaction statuses: money that has moved, and money that may still move.
MOVED = frozenset({"success"})
MOVING = frozenset({"pending", "awaiting_response", "unknown"})

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
        "source_name": {"type": "string"}, "order_status_url": {"type": "string"},
        "refunds": {"type": "array", "description": "Cumulative refunds (orders/updated)."},
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
             "description": "One of the topics handled; any other is acknowledged with {\"ignored\": ...}.",
             "schema": {"type": "string", "example": "orders/create"}},
            {"name": "X-Shopify-Webhook-Id", "in": "header", "required": False,
             "description": "The same for every retry of one delivery: a retry is a no-op that answers 200.",
             "schema": {"type": "string", "maxLength": 200}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [_ORDER, _REFUND]}}}},
        "responses": {"200": {"description": "Recorded, recognised as a redelivery, or {\"ignored\": reason}."}},
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
    webhook_id = raw.headers.get("x-shopify-webhook-id", "").strip()
    request_key = f"shopify:{webhook_id}" if webhook_id else None
    if topic not in TOPICS:
        return ClientResult.ignore("unsupported_topic", request_key)
    payload = _orders.json_object(raw.body)
    if topic == "refunds/create":
        events = _refunds([payload], raw)
        if not events:
            return ClientResult.ignore("no_money_moved", request_key)
    elif topic == "orders/updated":
        events = _update(payload, raw)
        if not events:
            return ClientResult.ignore("no_refund_or_cancellation", request_key)
    else:
        events = [_order(topic, payload, raw)]
    return ClientResult(events, status=200, request_key=request_key)


def _order(topic: str, order: Mapping[str, Any], raw: RawRequest) -> Event:
    order_id = _orders.required_text(order, "id", "id")
    if "order_id" in order and "transactions" in order:  # a refund's body under an order topic
        raise BadRequest(400, f"{topic} needs an order, not a refund", field="order_id")
    value, currency = _value(order, required=topic in PURCHASE_TOPICS)
    fields = _order_fields(order, raw)
    if topic in PURCHASE_TOPICS:
        moment = _time(order, ("processed_at", "created_at")) or raw.received_at
        line_items = order.get("line_items")
        fields["items"] = _orders.items(line_items if isinstance(line_items, list) else [],
                                        id_keys=("sku", "variant_id", "product_id"), name_key="title")
        return _orders.purchase(order_id, moment, value, currency, placed_on_web=_placed_on_web(order, fields), **fields)
    moment = _orders.timestamp(order.get("cancelled_at"), "cancelled_at")
    if moment is None:
        raise BadRequest(400, "orders/cancelled needs cancelled_at", field="cancelled_at")
    return _orders.cancellation(order_id, moment, currency, total=value, **fields)


def _update(order: Mapping[str, Any], raw: RawRequest) -> list[Event]:
    """``orders/updated``: the order's cumulative refunds (and its cancellation), each applied once by the ledger."""
    order_id = _orders.required_text(order, "id", "id")
    total, currency = _value(order, required=False)
    refunds = order.get("refunds")
    if refunds is not None and not isinstance(refunds, list):
        raise BadRequest(400, "refunds must be a list", field="refunds")
    entries = []
    for i, entry in enumerate(refunds or []):
        if not isinstance(entry, Mapping):
            raise BadRequest(400, "a refund must be an object", field=f"refunds[{i}]")
        entries.append({**entry, "order_id": entry.get("order_id", order_id)})
    events = _refunds(entries, raw, prefix="refunds", total=total, backstop=True)
    cancelled_at = _orders.timestamp(order.get("cancelled_at"), "cancelled_at")
    if cancelled_at is not None:
        events.append(_orders.cancellation(order_id, cancelled_at, currency, total=total, backstop=True,
                                           **_order_fields(order, raw)))
    return events


def _order_fields(order: Mapping[str, Any], raw: RawRequest) -> dict[str, Any]:
    attributes = _orders.named_values(order.get("note_attributes"), "note_attributes", "name", "value")
    fields: dict[str, Any] = {
        **click_ids(_url(order.get("landing_site"))),
        **_orders.click_ids_from_named(attributes),
        "consent": _orders.consent_from_named(attributes, "note_attributes"),
        "user_data": _customer(order),
        **_client_details(order),
    }
    landing = _landing_page(order, raw)
    if landing is not None and order.get("source_name") == "web":
        fields["page_location"] = landing
    return fields


def _placed_on_web(order: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Placed by the buyer's browser on the web storefront, with what a website event needs (agent, page)."""
    return order.get("source_name") == "web" and "user_agent" in fields and "page_location" in fields


def _landing_page(order: Mapping[str, Any], raw: RawRequest) -> str | None:
    """``landing_site`` on the shop's origin: the order status page's (in the signed body), else the shop domain's."""
    landing = _url(order.get("landing_site"))
    if not landing or not landing.strip():
        return None
    status_url = _url(order.get("order_status_url"))
    origin = None
    if status_url:
        parts = urlsplit(status_url.strip())
        if parts.scheme == "https" and parts.netloc:
            origin = f"https://{parts.netloc}/"
    domain = raw.headers.get("x-shopify-shop-domain", "").strip()
    if origin is None and domain and all(c.isalnum() or c in ".-" for c in domain):
        origin = f"https://{domain}/"
    if origin is None:
        return None
    page = urljoin(origin, landing.strip())
    return page if page.startswith(("https://", "http://")) else None


def _refunds(
    refunds: list[Mapping[str, Any]], raw: RawRequest, *, prefix: str = "", total: Decimal | None = None,
    backstop: bool = False,
) -> list[Event]:
    """One refund event per refund that moved (or is moving) money; ``prefix`` names where the refunds sit."""
    events = []
    for n, refund in enumerate(refunds):
        at = f"{prefix}[{n}]." if prefix else ""
        order_id = _orders.required_text(refund, "order_id", f"{at}order_id")
        refund_id = _orders.required_text(refund, "id", f"{at}id")
        transactions = refund.get("transactions")
        if not isinstance(transactions, list):
            raise BadRequest(400, "a refund's transactions must be a list", field=f"{at}transactions")
        moved, moving, currency = _money_moved(transactions, at)
        amount = (moved or Decimal(0)) + (moving or Decimal(0))
        if amount == 0:
            continue  # nothing was or will be paid back (a restock, or every attempt failed)
        moment = _time(refund, ("processed_at", "created_at")) or raw.received_at
        returned = []
        lines = refund.get("refund_line_items")
        for line in lines if isinstance(lines, list) else []:
            if isinstance(line, Mapping) and isinstance(line.get("line_item"), Mapping):
                returned.append({**line["line_item"], "quantity": line.get("quantity")})
        items = _orders.items(returned, id_keys=("sku", "variant_id", "product_id"), name_key="title")
        events.append(_orders.refund(order_id, moment, amount, currency, f"shopify:{refund_id}", items=items,
                                     pending=moving is not None, total=total, backstop=backstop))
    return events


def _money_moved(transactions: list[Any], at: str) -> tuple[Decimal | None, Decimal | None, str | None]:
    """What the refund transactions moved and are still moving, and their currency."""
    moved: Decimal | None = None
    moving: Decimal | None = None
    currency = None
    for i, tx in enumerate(transactions):
        if not isinstance(tx, Mapping) or tx.get("kind") != "refund" or tx.get("status") not in MOVED | MOVING:
            continue
        amount = _orders.money(tx.get("amount"), f"{at}transactions[{i}].amount", required=True)
        if tx.get("status") in MOVED:
            moved = amount if moved is None else moved + amount  # type: ignore[operator]
        else:
            moving = amount if moving is None else moving + amount  # type: ignore[operator]
        currency = currency or _orders.currency(tx.get("currency"), f"{at}transactions[{i}].currency")
    return moved, moving, currency


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
