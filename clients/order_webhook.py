"""Generic order-update webhook: ``POST /webhooks/order-update``, for any order system that can post signed JSON.

The body is one order update::

    {"order_id": "ORD-10492", "event": "partial_refund", "refund_amount": 30.0,
     "retained_value": 99.95, "currency": "EUR", "updated_at": "2026-04-25T09:12:00+02:00",
     "items_returned": [{"sku": "SKU-SOCKS", "quantity": 1, "price": 30.0}],
     "gclid": "...", "customer": {"email": "...", "phone": "..."}, "consent": {"ad_user_data": "granted"}}

``event`` is one of ``order_created`` / ``order_paid`` (-> ``purchase``, with
``order_value``), ``partial_refund`` / ``full_refund`` / ``refund`` (->
``refund``, with ``refund_amount``; a ``full_refund`` always retracts, a
``partial_refund`` only when the ledger's arithmetic reaches zero) and
``cancelled`` (-> ``order_cancelled``). ``customer`` fields become
``user_data``; ``consent`` holds the four Consent Mode v2 signals as
``granted`` / ``denied``. Keys the gateway does not know are ignored, so an
order system may send more than this.

The request must carry ``X-Signature: sha256=<hex HMAC-SHA256 of the raw
body>`` made with the client's ``secret``. ``Idempotency-Key`` (or the body's
``event_id``) makes a redelivery a no-op that still answers 200. A refund's
id (``extra.refund_id``) is the body's ``refund_id`` when there is one, else
the idempotency key, else a digest of order id, ``updated_at`` and amount.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field, PrivateAttr

from clients import _orders
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.consent import consent_from_mapping
from gateway.errors import BadRequest
from gateway.event import Event

ROUTES = [("POST", "/webhooks/order-update")]

PURCHASES = frozenset({"order_created", "order_paid"})
REFUNDS = frozenset({"partial_refund", "full_refund", "refund"})
EVENTS = PURCHASES | REFUNDS | {"cancelled"}
_CUSTOMER = ("email", "phone", "first_name", "last_name", "street", "city", "region", "postal_code", "country")

_MONEY, _TEXT = _orders.MONEY_SCHEMA, _orders.TEXT_SCHEMA
_BODY = {
    "type": "object",
    "required": ["order_id", "event"],
    "additionalProperties": True,
    "properties": {
        "order_id": _TEXT,
        "event": {"type": "string", "enum": ["order_created", "order_paid", "partial_refund", "full_refund", "refund",
                                             "cancelled"]},
        "order_value": _MONEY, "refund_amount": _MONEY, "retained_value": _MONEY,
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        "updated_at": {"type": "string", "format": "date-time", "description": "With an offset; between 1970 and 2100."},
        "event_id": _TEXT, "refund_id": _TEXT,
        "items_returned": {"type": "array", "items": {"type": "object", "properties": {
            "sku": _TEXT, "item_id": _TEXT, "quantity": {"type": "integer"}, "price": _MONEY}}},
        "gclid": _TEXT, "gbraid": _TEXT, "wbraid": _TEXT,
        "customer": {"type": "object", "properties": {k: {"type": "string"} for k in _CUSTOMER}},
        "consent": _orders.CONSENT_SCHEMA,
    },
}

# The OpenAPI operations of this client (served at /openapi.json by gateway.openapi).
OPENAPI: dict[str, dict[str, Any]] = {
    "POST /webhooks/order-update": {
        "operationId": "order_webhook_update",
        "summary": "One order update (created, paid, refunded, cancelled) from any order system",
        "parameters": [
            {"name": "X-Signature", "in": "header", "required": True,
             "description": "sha256=<hex HMAC-SHA256 of the raw body, keyed with the client's secret>",
             "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"}},
            {"name": "Idempotency-Key", "in": "header", "required": False,
             "description": "Makes a redelivery a no-op that still answers 200 (default: the body's event_id).",
             "schema": {"type": "string", "maxLength": 200}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY}}},
        "responses": {"200": {"description": "Recorded, or recognised as a redelivery."}},
    },
}


class Config(ClientConfig):
    type: Literal["order_webhook"]
    secret: str = Field(min_length=1, description="Shared secret of the X-Signature HMAC-SHA256 (hex) over the raw body.")
    _key: bytes = PrivateAttr(b"")

    def model_post_init(self, context: Any, /) -> None:
        self._key = self.secret.encode("utf-8")


def parse(raw: RawRequest, config: Config) -> ClientResult:
    _orders.check_hex_signature(raw.body, config._key, raw.headers.get("x-signature"), "headers.x-signature")
    payload = _orders.json_object(raw.body)

    order_id = _orders.required_text(payload, "order_id", "order_id")
    kind = payload.get("event")
    if not isinstance(kind, str) or kind not in EVENTS:
        raise BadRequest(400, f"event must be one of {', '.join(sorted(EVENTS))}", field="event")
    event_id = _orders.text(payload, "event_id", "event_id")
    key = raw.headers.get("idempotency-key", "").strip() or event_id
    moment = _orders.timestamp(payload.get("updated_at"), "updated_at") or raw.received_at
    currency = _orders.currency(payload.get("currency"), "currency", required=kind in PURCHASES)
    common = _common(payload, event_id)

    event: Event
    if kind in PURCHASES:
        value = _orders.money(payload.get("order_value"), "order_value", required=True)
        event = _orders.purchase(order_id, moment, value, currency, **common)
    elif kind in REFUNDS:
        amount = _orders.money(payload.get("refund_amount"), "refund_amount", required=kind != "full_refund")
        retained = _orders.money(payload.get("retained_value"), "retained_value")
        refund_id = _orders.text(payload, "refund_id", "refund_id") or (
            f"key:{key}" if key else _orders.stable_id(order_id, moment.isoformat(), amount)
        )
        returned = payload.get("items_returned")
        if returned is not None and not isinstance(returned, list):
            raise BadRequest(400, "items_returned must be a list", field="items_returned")
        event = _orders.refund(
            order_id, moment, amount, currency, refund_id, full=kind == "full_refund", retained_value=retained,
            items=_orders.items(returned or [], id_keys=("sku", "item_id")), **common,
        )
    else:
        event = _orders.cancellation(order_id, moment, currency, **common)
    return ClientResult([event], status=200, request_key=f"order_webhook:{key}" if key else None)


def _common(payload: Mapping[str, Any], event_id: str | None) -> dict[str, Any]:
    """Click ids, customer and consent: what every kind of update may carry."""
    fields: dict[str, Any] = {}
    for name in _orders.CLICK_IDS:
        value = _orders.text(payload, name, name)
        if value is not None:
            fields[name] = value
    customer = payload.get("customer")
    if customer is not None:
        if not isinstance(customer, Mapping):
            raise BadRequest(400, "customer must be an object", field="customer")
        values = {k: _orders.text(customer, k, f"customer.{k}") for k in _CUSTOMER}
        fields["user_data"] = _orders.user_data(**values)
    if payload.get("consent") is not None:
        fields["consent"] = consent_from_mapping(payload["consent"], "consent")
    if event_id is not None:
        fields["event_id"] = event_id
    return fields
