"""WooCommerce webhooks: ``POST /webhooks/woocommerce`` for the order topics.

References: https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks (delivery, headers),
https://woocommerce.github.io/woocommerce-rest-api-docs/#order-properties (the payload: an order
exactly as the REST API returns it), https://woocommerce.github.io/woocommerce-rest-api-docs/v3.html#orders
(the legacy API v3's order), and ``WC_Webhook::deliver`` / ``deliver_ping`` / ``build_payload`` in
WooCommerce.

- ``X-WC-Webhook-Signature`` is the base64 HMAC-SHA256 of the raw body with
  the webhook's secret; compared in constant time before the body is read.
- ``X-WC-Webhook-Delivery-ID`` is the request key, so a delivery sent twice
  is a no-op that still gets 200.
- Saving a webhook makes WooCommerce post a ping: the form body
  ``webhook_id=N``, with neither signature nor topic. It must get a 200 or
  the webhook is not saved; it is answered and nothing is stored.
- ``X-WC-Webhook-Topic``: ``order.created`` and ``order.updated`` carry the
  whole order, and what it means depends on its ``status``:
  ``purchase_statuses`` (processing, completed) -> ``purchase`` (the ledger
  keeps one per order, however often the order is saved); ``cancelled`` ->
  ``order_cancelled``; ``refunded`` -> a full refund of what its refunds do
  not already cover. Refunds come as WooCommerce reports them: every entry of
  the order's ``refunds`` (``total`` is negative text, e.g. ``"-10.00"``) is a
  ``refund`` with the id ``woocommerce:<refund id>``, so the ledger applies
  each once, whichever update brings it. ``order.deleted`` and
  ``order.restored`` change no conversion and are answered without events;
  any other topic is acknowledged with 200 ``{"ignored": "unsupported_topic"}``
  (WooCommerce disables a webhook after 5 failed deliveries in a row).
- A webhook created on the legacy API (API version ``legacy_v3``) delivers
  what ``WC_API_Orders::get_order`` returns: the order wrapped as
  ``{"order": {...}}``, in the legacy API's names (``created_at`` and
  ``updated_at`` in UTC, ``billing_address``, ``customer_ip``,
  ``order_number``, ``order_meta``) and without its refunds (a ``refunded``
  order is a full refund of its total). It is read into the current shape.
- Every refund event carries the order's ``total``, so the ledger knows the
  base even when it saw the purchase only from the browser.
- The order id is the order's ``id`` (or its ``number`` with
  ``order_id_field: number``): the browser's purchase hit must send the same
  as ``transaction_id``.
- Times: ``date_*_gmt`` carry no offset but are UTC. The conversion time is
  ``date_paid_gmt`` (else ``date_created_gmt``); a refund's time is the
  order's ``date_modified_gmt``, since refund entries carry none.
- The click id is in ``meta_data`` under ``_gclid`` / ``gclid`` (``gbraid``,
  ``wbraid`` alike), which a plugin or snippet must store at checkout;
  consent likewise under keys named like the four Consent Mode signals.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal, Mapping

from pydantic import Field, PrivateAttr

from clients import _orders
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.errors import BadRequest
from gateway.event import Event

# Every request that makes events is signed with the client's secret: its events may change an order.
AUTHENTICATED = True
ROUTES = [("POST", "/webhooks/woocommerce")]

ORDER_TOPICS = frozenset({"order.created", "order.updated"})
QUIET_TOPICS = frozenset({"order.deleted", "order.restored"})
_PING = re.compile(rb"^webhook_id=\d{1,20}$")

_MONEY, _TEXT = _orders.MONEY_SCHEMA, _orders.TEXT_SCHEMA
_GMT = {"type": "string", "description": "UTC, ISO 8601 without an offset, e.g. 2026-04-23T12:31:09"}
_ORDER = {
    "type": "object",
    "required": ["id", "status"],
    "description": "The order exactly as WooCommerce's REST API returns it.",
    "properties": {
        "id": _TEXT, "number": _TEXT, "status": {"type": "string"},
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"}, "total": _MONEY,
        "date_paid_gmt": _GMT, "date_created_gmt": _GMT, "date_modified_gmt": _GMT,
        "meta_data": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}, "value": {}}}},
        "billing": {"type": "object"},
        "refunds": {"type": "array", "items": {"type": "object", "required": ["id", "total"], "properties": {
            "id": _TEXT, "total": {"type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,6})?$"}}}},
        "line_items": {"type": "array", "items": {"type": "object"}},
        "customer_ip_address": {"type": "string"}, "customer_user_agent": {"type": "string"},
    },
}

# The OpenAPI operations of this client (served at /openapi.json by gateway.openapi).
OPENAPI: dict[str, dict[str, Any]] = {
    "POST /webhooks/woocommerce": {
        "operationId": "woocommerce_webhook",
        "summary": "A WooCommerce order webhook, or the ping sent when a webhook is saved",
        "parameters": [
            {"name": "X-WC-Webhook-Signature", "in": "header", "required": False,
             "description": "Base64 HMAC-SHA256 of the raw body with the webhook's secret; required on every "
                            "delivery except the ping (a form body webhook_id=N).",
             "schema": {"type": "string", "pattern": "^[A-Za-z0-9+/]{43}=$"}},
            {"name": "X-WC-Webhook-Topic", "in": "header", "required": False,
             "description": "order.created and order.updated are read; any other is acknowledged without events.",
             "schema": {"type": "string", "example": "order.updated"}},
            {"name": "X-WC-Webhook-Delivery-ID", "in": "header", "required": False,
             "description": "The same for a delivery sent twice: the second is a no-op that answers 200.",
             "schema": {"type": "string", "maxLength": 200}},
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"anyOf": [_ORDER, {
                    "type": "object", "required": ["order"], "description": "A legacy API v3 webhook's order.",
                    "properties": {"order": {"type": "object"}}}]}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["webhook_id"],
                                                                 "properties": {"webhook_id": {"type": "integer", "minimum": 0}}}},
            },
        },
        "responses": {"200": {"description": "Recorded, a ping, or recognised as a redelivery."}},
    },
}


class Config(ClientConfig):
    type: Literal["woocommerce"]
    secret: str = Field(min_length=1, description="The webhook's secret (the key of X-WC-Webhook-Signature).")
    purchase_statuses: list[str] = Field(
        default_factory=lambda: ["processing", "completed"],
        description="Order statuses that count as a purchase (add on-hold to count orders awaiting a bank transfer).",
    )
    order_id_field: Literal["id", "number"] = Field(
        "id", description="Which order field is the transaction id the browser's purchase hit sends: id or number."
    )
    _key: bytes = PrivateAttr(b"")
    _purchase: frozenset[str] = PrivateAttr(frozenset())

    def model_post_init(self, context: Any, /) -> None:
        self._key = self.secret.encode("utf-8")
        self._purchase = frozenset(self.purchase_statuses)


def parse(raw: RawRequest, config: Config) -> ClientResult:
    topic = raw.headers.get("x-wc-webhook-topic", "").strip()
    if not topic and "x-wc-webhook-signature" not in raw.headers and _PING.match(raw.body.strip()):
        return ClientResult([], status=200)
    _orders.check_base64_signature(
        raw.body, config._key, raw.headers.get("x-wc-webhook-signature"), "headers.x-wc-webhook-signature"
    )
    delivery_id = raw.headers.get("x-wc-webhook-delivery-id", "").strip()
    request_key = f"woocommerce:{delivery_id}" if delivery_id else None
    if topic in QUIET_TOPICS:
        return ClientResult([], status=200, request_key=request_key)
    if topic not in ORDER_TOPICS:
        return ClientResult.ignore("unsupported_topic", request_key)
    payload = _orders.json_object(raw.body)
    if "id" not in payload and isinstance(payload.get("order"), Mapping):
        payload = legacy_order(payload["order"])
    return ClientResult(_events(payload, raw, config), status=200, request_key=request_key)


# The legacy API v3's order keys -> the REST API's (WC_API_Orders::get_order).
_LEGACY_KEYS = {"id": "id", "order_number": "number", "status": "status", "currency": "currency", "total": "total",
                "created_at": "date_created_gmt", "updated_at": "date_modified_gmt", "billing_address": "billing",
                "customer_ip": "customer_ip_address", "customer_user_agent": "customer_user_agent",
                "line_items": "line_items"}


def legacy_order(order: Mapping[str, Any]) -> dict[str, Any]:
    """A legacy API order (``{"order": {...}}``'s inside) in the REST API's shape that ``_events`` reads.

    Its times are UTC with a ``Z``, which ``date_*_gmt`` accepts; it has no
    paid date, so the conversion time is its creation; its meta data, when a
    filter adds it, is an object (``order_meta``) rather than a list.
    """
    out: dict[str, Any] = {new: order[old] for old, new in _LEGACY_KEYS.items() if old in order}
    meta = order.get("order_meta")
    if isinstance(meta, Mapping):
        out["meta_data"] = [{"key": k, "value": v} for k, v in meta.items()]
    return out


def _events(order: Mapping[str, Any], raw: RawRequest, config: Config) -> list[Event]:
    order_id = _orders.required_text(order, config.order_id_field, config.order_id_field)
    status = _orders.required_text(order, "status", "status")
    currency = _orders.currency(order.get("currency"), "currency")
    total = _orders.money(order.get("total"), "total")
    meta = _orders.named_values(order.get("meta_data"), "meta_data", "key", "value")
    fields: dict[str, Any] = {
        **_orders.click_ids_from_named(meta),
        "consent": _orders.consent_from_named(meta, "meta_data"),
        "user_data": _billing(order.get("billing")),
    }
    for key, name in (("customer_ip_address", "ip_override"), ("customer_user_agent", "user_agent")):
        value = order.get(key)
        if isinstance(value, str) and value.strip():
            fields[name] = value.strip()
    changed = _orders.timestamp(order.get("date_modified_gmt"), "date_modified_gmt", naive_is_utc=True) or raw.received_at

    events: list[Event] = []
    if status in config._purchase:
        if total is None or currency is None:
            raise BadRequest(400, "total and currency are required", field="total" if total is None else "currency")
        moment = (_orders.timestamp(order.get("date_paid_gmt"), "date_paid_gmt", naive_is_utc=True)
                  or _orders.timestamp(order.get("date_created_gmt"), "date_created_gmt", naive_is_utc=True)
                  or raw.received_at)
        lines = order.get("line_items")
        items = _orders.items(lines if isinstance(lines, list) else [], id_keys=("sku", "product_id"), name_key="name")
        events.append(_orders.purchase(order_id, moment, total, currency, items=items, **fields))

    refunded = Decimal(0)
    refunds = order.get("refunds")
    if refunds is not None and not isinstance(refunds, list):
        raise BadRequest(400, "refunds must be a list", field="refunds")
    reported = []
    for i, entry in enumerate(refunds or []):
        if not isinstance(entry, Mapping):
            raise BadRequest(400, "a refund must be an object", field=f"refunds[{i}]")
        refund_id = _orders.required_text(entry, "id", f"refunds[{i}].id")
        reported.append((_id_order(refund_id), refund_id, _refund_total(entry.get("total"), f"refunds[{i}].total")))
    for _, refund_id, amount in sorted(reported):  # WooCommerce lists the newest first; apply the oldest first
        refunded += amount
        events.append(_orders.refund(order_id, changed, amount, currency, f"woocommerce:{refund_id}", total=total,
                                     **fields))

    if status == "refunded":
        rest = None if total is None else total - refunded
        if not refunds or (rest is not None and rest > 0):
            events.append(_orders.refund(order_id, changed, rest, currency, f"woocommerce:{order_id}:refunded",
                                         full=True, total=total, **fields))
    elif status == "cancelled":
        events.append(_orders.cancellation(order_id, changed, currency, total=total, **fields))
    return events


def _id_order(refund_id: str) -> tuple[int, str]:
    return (int(refund_id), "") if refund_id.isdigit() else (2**63, refund_id)


def _refund_total(value: Any, field: str) -> Decimal:
    """A refund entry's ``total``: WooCommerce writes it negative ("-10.00"); the amount is its size."""
    if isinstance(value, str) and value.strip().startswith("-"):
        value = value.strip()[1:]
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        value = -value
    amount = _orders.money(value, field, required=True)
    if amount is None:  # money() raised already
        raise BadRequest(400, f"{field} is required", field=field)
    return amount


def _billing(billing: Any) -> Any:
    if not isinstance(billing, Mapping):
        return None
    return _orders.user_data(
        email=billing.get("email"), phone=billing.get("phone"), first_name=billing.get("first_name"),
        last_name=billing.get("last_name"), street=billing.get("address_1"), city=billing.get("city"),
        region=billing.get("state"), postal_code=billing.get("postcode"), country=billing.get("country"),
    )
