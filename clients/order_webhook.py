"""Generic order-update webhook: ``POST /webhooks/order-update``, for any order system that can post signed JSON.

The body is one order update::

    {"order_id": "ORD-10492", "event": "partial_refund", "refund_id": "RF-881", "refund_amount": 30.0,
     "retained_value": 99.95, "currency": "EUR", "updated_at": "2026-04-25T09:12:00+02:00",
     "items_returned": [{"sku": "SKU-SOCKS", "quantity": 1, "price": 30.0}],
     "gclid": "...", "customer": {"email": "...", "phone": "..."}, "consent": {"ad_user_data": "granted"}}

``event`` is one of ``order_created`` / ``order_paid`` (-> ``purchase``, with
``order_value``, the order's total: the base of every later refund),
``partial_refund`` / ``full_refund`` / ``refund`` (-> ``refund``, with
``refund_amount``; a ``full_refund`` always retracts, a ``partial_refund``
only when the ledger's arithmetic reaches zero) and ``cancelled`` (->
``order_cancelled``). Any other ``event`` is acknowledged with 200
``{"ignored": "unknown_event"}`` and changes nothing: order systems retry
refusals and end up disabling the subscription. ``customer`` fields become
``user_data``; ``consent`` holds the four Consent Mode v2 signals as
``granted`` / ``denied``. Keys the gateway does not know are ignored, so an
order system may send more than this.

A refund is applied once, whatever is resent: its identity is the body's
``refund_id``, else a digest of the signed body, so an identical redelivery
or a replayed body is a no-op. An unsigned header never names a refund: a
captured body replayed with a new ``Idempotency-Key`` is still the same
refund. ``refund_status: pending`` (money not moved yet, ``refund_id``
required) is held until an update with the same ``refund_id`` says
``succeeded``; ``failed`` moved nothing and is acknowledged as ignored. A
refund in another currency than the order's needs ``exchange_rate`` (order
currency per unit of the refund's currency), else it becomes a dead letter.

The request must carry ``X-Signature: sha256=<hex HMAC-SHA256 of the raw
body>`` made with the client's ``secret``, or, better, a signed timestamp as
Stripe does: ``X-Signature: t=<unix seconds>,sha256=<hex HMAC-SHA256 of
"<t>." + raw body>``. A signed timestamp further than
``signature_tolerance`` (default 5 minutes) from the gateway's clock is
refused, so a captured request cannot be replayed later;
``require_signed_timestamp`` refuses the plain form. ``Idempotency-Key`` (or
the body's ``event_id``) makes a redelivery a no-op that still answers 200.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any, Literal, Mapping

from pydantic import Field, PrivateAttr

from clients import _orders
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.consent import consent_from_mapping
from gateway.durations import Duration
from gateway.errors import BadRequest
from gateway.event import Event

# Every request that makes events is signed with the client's secret: its events may change an order.
AUTHENTICATED = True
ROUTES = [("POST", "/webhooks/order-update")]

PURCHASES = frozenset({"order_created", "order_paid"})
REFUNDS = frozenset({"partial_refund", "full_refund", "refund"})
EVENTS = PURCHASES | REFUNDS | {"cancelled"}
REFUND_STATUSES = frozenset({"succeeded", "pending", "failed"})
_SIGNATURE = "headers.x-signature"
_MAX_TIMESTAMP_DIGITS = 12
_CUSTOMER = ("email", "phone", "first_name", "last_name", "street", "city", "region", "postal_code", "country")

_MONEY, _TEXT = _orders.MONEY_SCHEMA, _orders.TEXT_SCHEMA
_BODY = {
    "type": "object",
    "required": ["order_id", "event"],
    "additionalProperties": True,
    "properties": {
        "order_id": _TEXT,
        "event": {"type": "string", "description": "order_created, order_paid, partial_refund, full_refund, refund or "
                                                   "cancelled; any other value is acknowledged and ignored."},
        "order_value": _MONEY, "refund_amount": _MONEY, "retained_value": _MONEY,
        "refund_status": {"type": "string", "enum": sorted(REFUND_STATUSES)},
        "exchange_rate": {**_MONEY, "description": "Order-currency units per unit of the refund's currency (above 0)."},
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
             "description": "sha256=<hex HMAC-SHA256 of the raw body, keyed with the client's secret>, or "
                            "t=<unix seconds>,sha256=<hex HMAC-SHA256 of '<t>.' + raw body>",
             "schema": {"type": "string", "pattern": "^(t=[0-9]{1,12},)?sha256=[0-9a-f]{64}$"}},
            {"name": "Idempotency-Key", "in": "header", "required": False,
             "description": "Makes a redelivery a no-op that still answers 200 (default: the body's event_id).",
             "schema": {"type": "string", "maxLength": 200}},
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY}}},
        "responses": {"200": {"description": "Recorded, recognised as a redelivery, or {\"ignored\": reason}."}},
    },
}


class Config(ClientConfig):
    type: Literal["order_webhook"]
    secret: str = Field(min_length=1, description="Shared secret of the X-Signature HMAC-SHA256 (hex) over the raw body.")
    signature_tolerance: Duration = Field(
        timedelta(minutes=5), gt=timedelta(0),
        description="A signed timestamp (X-Signature: t=...,sha256=...) further than this from the gateway's clock "
                    "is refused with 401.",
    )
    require_signed_timestamp: bool = Field(
        False, description="Refuse X-Signature without a signed timestamp (the plain sha256= form can be replayed).",
    )
    _key: bytes = PrivateAttr(b"")

    def model_post_init(self, context: Any, /) -> None:
        self._key = self.secret.encode("utf-8")


def parse(raw: RawRequest, config: Config) -> ClientResult:
    check_signature(raw, config)
    payload = _orders.json_object(raw.body)

    kind = payload.get("event")
    if not isinstance(kind, str) or not kind.strip():
        raise BadRequest(400, "event is required", field="event")
    event_id = _orders.text(payload, "event_id", "event_id")
    key = raw.headers.get("idempotency-key", "").strip() or event_id
    request_key = f"order_webhook:{key}" if key else None
    if kind not in EVENTS:
        return ClientResult.ignore("unknown_event", request_key)
    order_id = _orders.required_text(payload, "order_id", "order_id")
    moment = _orders.timestamp(payload.get("updated_at"), "updated_at") or raw.received_at
    currency = _orders.currency(payload.get("currency"), "currency", required=kind in PURCHASES)
    common = _common(payload, event_id)

    event: Event
    if kind in PURCHASES:
        value = _orders.money(payload.get("order_value"), "order_value", required=True)
        event = _orders.purchase(order_id, moment, value, currency, **common)
    elif kind in REFUNDS:
        status = payload.get("refund_status", "succeeded")
        if status not in REFUND_STATUSES:
            raise BadRequest(400, f"refund_status must be one of {', '.join(sorted(REFUND_STATUSES))}",
                             field="refund_status")
        if status == "failed":
            return ClientResult.ignore("refund_failed", request_key)
        amount = _orders.money(payload.get("refund_amount"), "refund_amount", required=kind != "full_refund")
        retained = _orders.money(payload.get("retained_value"), "retained_value")
        refund_id = _orders.text(payload, "refund_id", "refund_id")
        if refund_id is None and status == "pending":
            raise BadRequest(400, "refund_id is required for a pending refund", field="refund_id")
        returned = payload.get("items_returned")
        if returned is not None and not isinstance(returned, list):
            raise BadRequest(400, "items_returned must be a list", field="items_returned")
        event = _orders.refund(
            order_id, moment, amount, currency, refund_id or _orders.body_digest(raw.body),
            full=kind == "full_refund", retained_value=retained, pending=status == "pending",
            total=_orders.money(payload.get("order_value"), "order_value"), exchange_rate=_rate(payload),
            items=_orders.items(returned or [], id_keys=("sku", "item_id")), **common,
        )
    else:
        event = _orders.cancellation(order_id, moment, currency,
                                     total=_orders.money(payload.get("order_value"), "order_value"), **common)
    return ClientResult([event], status=200, request_key=request_key)


def check_signature(raw: RawRequest, config: Config) -> None:
    """``sha256=<hex>`` over the body, or ``t=<unix>,sha256=<hex>`` over ``"<t>." + body`` within the tolerance.

    The timestamped form is Stripe's
    (https://docs.stripe.com/webhooks#verify-manually): several ``sha256=``
    entries may be given (a secret being rotated) and one must match.
    """
    header = raw.headers.get("x-signature")
    if not header or not header.strip():
        raise BadRequest(401, "missing signature", field=_SIGNATURE)
    if not header.strip().lower().startswith("t="):
        if config.require_signed_timestamp:
            raise BadRequest(401, "signed timestamp required", field=_SIGNATURE)
        _orders.check_hex_signature(raw.body, config._key, header, _SIGNATURE)
        return
    sent_at: str | None = None
    digests: list[bytes] = []
    for part in header.split(","):
        name, eq, value = part.strip().partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq:
            raise BadRequest(401, "invalid signature", field=_SIGNATURE)
        if name == "t":
            if sent_at is not None or not value.isascii() or not value.isdigit() or len(value) > _MAX_TIMESTAMP_DIGITS:
                raise BadRequest(401, "invalid signature", field=_SIGNATURE)
            sent_at = value
        elif name == "sha256":
            digests.append(value.lower().encode("ascii", "replace"))
    if sent_at is None or not digests:
        raise BadRequest(401, "invalid signature", field=_SIGNATURE)
    expected = hmac.new(config._key, sent_at.encode() + b"." + raw.body, hashlib.sha256).hexdigest().encode()
    if not any(hmac.compare_digest(given, expected) for given in digests):
        raise BadRequest(401, "invalid signature", field=_SIGNATURE)
    if abs(raw.received_at.timestamp() - int(sent_at)) > config.signature_tolerance.total_seconds():
        raise BadRequest(401, "signature timestamp outside the tolerance", field=_SIGNATURE)


def _rate(payload: Mapping[str, Any]) -> Any:
    rate = _orders.money(payload.get("exchange_rate"), "exchange_rate")
    if rate is not None and rate == 0:
        raise BadRequest(400, "exchange_rate must be more than 0", field="exchange_rate")
    return rate


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
