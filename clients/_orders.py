"""What the order clients share: signatures, JSON bodies, money, times, and the events they all build.

Every order system speaks its own dialect, but the events that leave its
client are the same, so triggers and tags see one vocabulary:

- ``purchase`` (once per order: the ledger keeps one copy; the order
  system's is the total every refund is a share of),
- ``refund`` with ``value`` = the refunded amount (positive) and
  ``order.refund_id`` = a stable id for this refund (``order.full_refund``
  when the order system says so, ``order.retained_value`` when it reports
  one, for the ledger to compare with its own arithmetic,
  ``order.refund_pending`` while its money has not moved),
- ``order_cancelled``;

each with ``transaction_id`` = the order id. The gateway stamps them
``source.authenticated``, since these clients verify a signature; that
stamp, not anything in the body, is what lets them change an order.

Signatures are checked over the raw body with ``hmac.compare_digest`` before
anything in the body is read. A missing or wrong signature is a 401 and
nothing is stored. Error messages name the field, never its value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import orjson

from clients._time import parse_iso
from gateway.consent import consent_from_mapping
from gateway.errors import BadRequest
from gateway.event import CONSENT_SIGNALS, Address, Consent, Event, UserData, invalid_field
from gateway.identity import clean

CLICK_IDS = ("gclid", "gbraid", "wbraid")
_MAX_AMOUNT = Decimal("1e12")
_SIGNALS = frozenset(CONSENT_SIGNALS)

# JSON Schema pieces the order clients' OpenAPI descriptions share.
MONEY_SCHEMA: dict[str, Any] = {
    "oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": "^[0-9]{1,12}(\\.[0-9]{1,6})?$"}],
    "description": "A non-negative amount below 10^12, a JSON number or decimal text.",
}
TEXT_SCHEMA: dict[str, Any] = {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}
CONSENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {k: {"type": "string", "enum": ["granted", "denied"]} for k in CONSENT_SIGNALS},
}


# -- signatures ----------------------------------------------------------------------------------


def _digest(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


def check_hex_signature(body: bytes, secret: bytes, header: str | None, field: str, prefix: str = "sha256=") -> None:
    """``<prefix><hex HMAC-SHA256 of body>``, compared in constant time."""
    if not header:
        raise BadRequest(401, "missing signature", field=field)
    given = header.strip()
    if given[: len(prefix)].lower() != prefix:
        raise BadRequest(401, "invalid signature", field=field)
    expected = _digest(secret, body).hex().encode()
    if not hmac.compare_digest(given[len(prefix):].lower().encode("ascii", "replace"), expected):
        raise BadRequest(401, "invalid signature", field=field)


def check_base64_signature(body: bytes, secret: bytes, header: str | None, field: str) -> None:
    """A base64 HMAC-SHA256 of body (Shopify, WooCommerce), compared in constant time."""
    if not header:
        raise BadRequest(401, "missing signature", field=field)
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(401, "invalid signature", field=field) from None
    if not hmac.compare_digest(given, _digest(secret, body)):
        raise BadRequest(401, "invalid signature", field=field)


# -- reading bodies ------------------------------------------------------------------------------


def json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest(400, "empty body", field="body")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest(400, "body is not valid JSON", field="body") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, "body must be a JSON object", field="body")
    return payload


def text(obj: Mapping[str, Any], key: str, field: str, *, required: bool = False) -> str | None:
    """A string or number field as trimmed text; None when absent or blank."""
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRequest(400, f"{field} is required", field=field)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(400, f"{field} must be a string", field=field)
    return str(value).strip()


def required_text(obj: Mapping[str, Any], key: str, field: str) -> str:
    value = text(obj, key, field, required=True)
    if value is None:  # text() raised already; this keeps the type exact
        raise BadRequest(400, f"{field} is required", field=field)
    return value


def money(value: Any, field: str, *, required: bool = False) -> Decimal | None:
    """A non-negative amount from a JSON number or a decimal string ("31.93")."""
    if value is None or value == "":
        if required:
            raise BadRequest(400, f"{field} is required", field=field)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(400, f"{field} must be a number", field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(400, f"{field} must be a finite number", field=field)
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise BadRequest(400, f"{field} must be a number", field=field) from None
    if not amount.is_finite() or abs(amount) >= _MAX_AMOUNT:
        raise BadRequest(400, f"{field} is out of range", field=field)
    if amount < 0:
        raise BadRequest(400, f"{field} must not be negative", field=field)
    return amount


def currency(value: Any, field: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise BadRequest(400, f"{field} is required", field=field)
        return None
    if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
        raise BadRequest(400, f"{field} must be a three-letter currency code", field=field)
    return value.strip().upper()


def timestamp(value: Any, field: str, *, naive_is_utc: bool = False) -> datetime | None:
    """An ISO 8601 time as UTC, between 1970 and 2100.

    One without an offset is accepted only where the sender documents UTC (``*_gmt``).
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(400, f"{field} must be an ISO 8601 time", field=field)
    return parse_iso(value, field, naive_is_utc=naive_is_utc)


def stable_id(*parts: object) -> str:
    """A short digest: the same refund reported twice gets the same id."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def body_digest(body: bytes) -> str:
    """The identity of a signed body: an identical redelivery or replay is the same change.

    Only the body counts, never a header: a header is not signed (an
    attacker replaying a captured body can set it to anything), and a
    signed timestamp changes with every delivery of the same change.
    """
    return "body:" + hashlib.sha256(body).hexdigest()[:32]


# -- identifiers, consent, people ----------------------------------------------------------------


def named_values(entries: Any, field: str, name_key: str, value_key: str) -> dict[str, Any]:
    """``[{"name": "gclid", "value": "..."}]`` (Shopify note_attributes, WooCommerce meta_data) as a dict.

    Names are compared without a leading underscore and in lower case, so
    WooCommerce's hidden ``_gclid`` meta reads like ``gclid``; the first entry
    of a name wins.
    """
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise BadRequest(400, f"{field} must be a list", field=field)
    out: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        name = entry.get(name_key)
        if isinstance(name, str):
            out.setdefault(name.strip().lstrip("_").lower(), entry.get(value_key))
    return out


def consent_from_named(values: Mapping[str, Any], field: str) -> Consent:
    """The four Consent Mode signals among named values (note attributes, meta data), when present."""
    signals = {k: v for k, v in values.items() if k in _SIGNALS}
    return consent_from_mapping(signals, field) if signals else Consent()


def click_ids_from_named(values: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in CLICK_IDS:
        value = clean(values.get(name)) if isinstance(values.get(name), str) else None
        if value is not None:
            found[name] = value
    return found


def user_data(
    *, email: Any = None, phone: Any = None, first_name: Any = None, last_name: Any = None, street: Any = None,
    city: Any = None, region: Any = None, postal_code: Any = None, country: Any = None,
) -> UserData | None:
    """Raw customer fields as ``user_data``; the tags normalise and hash them, consent may remove them."""
    def keep(value: Any) -> str | None:
        return clean(value) if isinstance(value, str) else None

    address = Address(
        first_name=keep(first_name), last_name=keep(last_name), street=keep(street), city=keep(city),
        region=keep(region), postal_code=keep(postal_code), country=keep(country),
    )
    has_address = any(v is not None for v in msgspec.structs.astuple(address))
    data = UserData(email_address=keep(email), phone_number=keep(phone), address=address if has_address else None)
    return data if any(v is not None for v in msgspec.structs.astuple(data)) else None


# -- the events ----------------------------------------------------------------------------------


def order_event(event_name: str, order_id: str, moment: datetime, **fields: Any) -> Event:
    """An order event: ``transaction_id`` = order id, and ``fields``, validated (``order`` given as a mapping)."""
    data = {k: v for k, v in fields.items() if v is not None}
    try:
        return Event.from_data({"event_name": event_name, "transaction_id": order_id, "timestamp": moment, **data})
    except msgspec.ValidationError as exc:  # a bug in a client, not the sender's fault: never echo values
        loc, _ = invalid_field(exc)
        raise BadRequest(400, "invalid order event", detail={"fields": [".".join(loc)]}) from None


def _order_data(**values: Any) -> dict[str, Any] | None:
    """``OrderData``'s fields that apply, as a mapping ``order_event`` validates (``refund_id`` not empty, ...)."""
    return {k: v for k, v in values.items() if v is not None} or None


def purchase(
    order_id: str, moment: datetime, value: Decimal | None, currency_code: str | None, *, placed_on_web: bool = False,
    **fields: Any,
) -> Event:
    order = _order_data(placed_on_web=placed_on_web or None)
    return order_event("purchase", order_id, moment, value=_float(value), currency=currency_code, order=order, **fields)


def refund(
    order_id: str, moment: datetime, amount: Decimal | None, currency_code: str | None, refund_id: str, *,
    full: bool = False, retained_value: Decimal | None = None, pending: bool = False, total: Decimal | None = None,
    exchange_rate: Decimal | None = None, backstop: bool = False, **fields: Any,
) -> Event:
    order = _order_data(refund_id=refund_id, full_refund=full or None, retained_value=_float(retained_value),
                        refund_pending=pending or None, total=_float(total), exchange_rate=_float(exchange_rate),
                        backstop=backstop or None)
    fields.setdefault("event_id", refund_id)
    return order_event("refund", order_id, moment, value=_float(amount), currency=currency_code, order=order, **fields)


def cancellation(
    order_id: str, moment: datetime, currency_code: str | None, *, total: Decimal | None = None, backstop: bool = False,
    **fields: Any,
) -> Event:
    fields.setdefault("event_id", f"cancel:{order_id}")
    order = _order_data(total=_float(total), backstop=backstop or None)
    return order_event("order_cancelled", order_id, moment, currency=currency_code, order=order, **fields)


def items(entries: Iterable[Mapping[str, Any]], *, id_keys: tuple[str, ...], name_key: str | None = None) -> list[dict[str, Any]] | None:
    """Line items as GA4-style items (``item_id``, ``item_name``, ``quantity``, ``price``); unreadable ones are left out."""
    out = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        item_id = next((str(entry[k]) for k in id_keys if isinstance(entry.get(k), (str, int)) and str(entry[k]).strip()), None)
        if item_id is None:
            continue
        item: dict[str, Any] = {"item_id": item_id}
        if name_key and isinstance(entry.get(name_key), str):
            item["item_name"] = entry[name_key]
        quantity = entry.get("quantity")
        if isinstance(quantity, int) and not isinstance(quantity, bool):
            item["quantity"] = quantity
        try:
            price = money(entry.get("price"), "price")
        except BadRequest:
            price = None
        if price is not None:
            item["price"] = float(price)
        out.append(item)
    return out or None


def _float(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)
