"""JSON beacon: ``POST /collect`` for ``navigator.sendBeacon`` and ``fetch``.

The body is one event object in the event model's own keys, or
``{"events": [...]}``. The internal fields (``source``, ``order``,
``adjustment``) are the gateway's: an event that sets one gets a 400 naming
it, since anyone can post here. ``sendBeacon`` cannot set a JSON content type without
triggering a CORS preflight, so pages send ``text/plain``; both are parsed as
JSON. An optional ``timestamp`` (ISO 8601, or unix milliseconds as
JavaScript's ``Date.now()`` gives) says when the event happened; without it
the time of receipt is used. Click ids the event does not name itself are
read from its ``page_location``, as the GA4 client reads them from ``dl``.

Browsers enforce CORS: the allow-list is checked on the preflight and on the
request itself, so a page on another origin gets 403 rather than a silent
success. Requests without an ``Origin`` header (servers, curl) are accepted.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

import msgspec
import orjson
from pydantic import Field

from clients._click_ids import click_ids
from clients._time import from_unix_ms, parse_iso
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.consent import consent_from_mapping
from gateway.cookies import read_cookies
from gateway.errors import BadRequest
from gateway.event import EVENT_FIELDS, INTERNAL_FIELDS, Event, invalid_field

# Anyone on the internet can send these: events from here never change an order's value (gateway.ledger).
AUTHENTICATED = False
ROUTES = [("POST", "/collect"), ("OPTIONS", "/collect")]

_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_CONSENT_STATE = {"type": "string", "enum": ["granted", "denied"]}
_ADDRESS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {k: _STRING for k in ("first_name", "last_name", "street", "city", "region", "postal_code", "country",
                                         "sha256_first_name", "sha256_last_name", "sha256_street")},
}
# One event in the event model's own keys; a key the model does not know goes to ``extra``.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_name"],
    "additionalProperties": True,
    "not": {"anyOf": [{"required": [name]} for name in INTERNAL_FIELDS],
            "description": "source, order and adjustment are set by the gateway, never by a request."},
    "properties": {
        "event_name": {"type": "string", "minLength": 1, "maxLength": 200},
        "timestamp": {"description": "ISO 8601 with an offset, or unix milliseconds; between 1970 and 2100. "
                                     "Default: the time of receipt.",
                      "oneOf": [{"type": "string", "format": "date-time"},
                                {"type": "integer", "minimum": 0, "maximum": 4102444799999}]},
        **{k: _STRING for k in ("client_id", "user_id", "event_id", "ip_override", "user_agent", "page_location",
                                "page_referrer", "page_title", "language", "screen_resolution", "transaction_id",
                                "gclid", "gbraid", "wbraid", "fbclid", "fbc", "fbp")},
        "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        "value": _NUMBER, "tax": _NUMBER, "shipping": _NUMBER,
        "items": {"type": "array", "items": {"type": "object"}},
        "user_data": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **{k: _STRING for k in ("email_address", "phone_number", "sha256_email_address", "sha256_phone_number",
                                        "gender", "date_of_birth", "external_id")},
                "address": _ADDRESS,
            },
        },
        "user_properties": {"type": "object"},
        "consent": {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: _CONSENT_STATE for k in ("ad_storage", "analytics_storage", "ad_user_data",
                                                        "ad_personalization")},
        },
        "extra": {"type": "object", "description": "Anything else; objects and lists nest 32 levels deep at most."},
    },
}
_PAYLOAD = {
    "oneOf": [
        EVENT_SCHEMA,
        {"type": "object", "required": ["events"], "additionalProperties": False,
         "properties": {"events": {"type": "array", "minItems": 1, "items": EVENT_SCHEMA}}},
    ]
}
_ORIGIN = {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string", "format": "uri"},
           "description": "A browser's origin; it must be in allowed_origins. Requests without one (servers) are accepted."}

# The OpenAPI operations of this client (served at /openapi.json by gateway.openapi).
OPENAPI: dict[str, dict[str, Any]] = {
    "POST /collect": {
        "operationId": "json_beacon_collect",
        "summary": "One event, or {\"events\": [...]}, from navigator.sendBeacon or fetch",
        "parameters": [_ORIGIN],
        "requestBody": {
            "required": True,
            "description": "JSON; sendBeacon sends it as text/plain to avoid a CORS preflight, and that is parsed as JSON too.",
            "content": {"application/json": {"schema": _PAYLOAD}, "text/plain": {"schema": {"type": "string"}}},
        },
        "responses": {"204": {"description": "Accepted: the events' deliveries are stored before this answer."}},
    },
    "OPTIONS /collect": {
        "operationId": "json_beacon_preflight",
        "summary": "CORS preflight",
        "parameters": [
            {**_ORIGIN, "required": True},
            {"name": "Access-Control-Request-Method", "in": "header", "required": False,
             "schema": {"type": "string", "enum": ["POST"]}},
        ],
        "responses": {"204": {"description": "The origin is allowed; the CORS headers say what it may send."}},
    },
}

_CONTENT_TYPES = frozenset({"application/json", "text/plain"})
_COOKIES = frozenset({"_fbp", "_fbc"})
_PREFLIGHT_MAX_AGE = "86400"
# Objects and lists inside one event, at most. Deeper data has no use in any
# tag, and the outbox serialises items with orjson, which stops at 255 levels.
MAX_DEPTH = 32


class Config(ClientConfig):
    type: Literal["json_beacon"]
    allowed_origins: list[str] = Field(
        default_factory=list,
        description='Origins (scheme://host[:port]) allowed to post from a browser; ["*"] allows any.',
    )

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins


def _cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _parse_timestamp(value: Any, path: str) -> datetime:
    if isinstance(value, bool):
        raise BadRequest(400, "timestamp must be ISO 8601 or unix milliseconds", field=path)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise BadRequest(400, "timestamp out of range", field=path)
        return from_unix_ms(value, path, "timestamp")
    if isinstance(value, str):
        return parse_iso(value, path, name="timestamp", not_iso="timestamp must be ISO 8601 or unix milliseconds")
    raise BadRequest(400, "timestamp must be ISO 8601 or unix milliseconds", field=path)


# The event's numbers, which beacons have always been able to send as text (" 5", "1_000") or as true/false:
# read as Python's float() reads them, as the pydantic model did before the event model was a msgspec Struct
# (msgspec takes plain numeric text only), so that a page that sends them is not refused now.
_LAX_NUMBERS = ("value", "tax", "shipping")


def _lax_number(value: str | bool) -> float | str:
    """The number ``value`` reads as; text that is no number stays text, for ``Event.from_data`` to refuse."""
    if isinstance(value, str) and not value.isascii():
        return value  # float() reads other scripts' digits, pydantic did not
    try:
        return float(value)
    except ValueError:
        return value  # type: ignore[return-value] - only text fails


def _depth(value: Any) -> int:
    """How many objects and lists are nested in ``value`` at its deepest point (iterative: no recursion limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _build_event(obj: Any, path: str, raw: RawRequest, cookies: dict[str, str]) -> Event:
    if not isinstance(obj, dict):
        raise BadRequest(400, "an event must be a JSON object", field=path)
    if _depth(obj) > MAX_DEPTH:
        raise BadRequest(400, f"an event may nest objects and lists {MAX_DEPTH} levels deep at most", field=path)
    data: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        if key in INTERNAL_FIELDS:
            raise BadRequest(400, f"{key} is set by the gateway, never by a request", field=f"{path}.{key}")
        if key in EVENT_FIELDS and key not in ("timestamp", "consent", "extra"):
            data[key] = value
        elif key not in ("timestamp", "consent", "extra"):
            extra[key] = value
    if isinstance(obj.get("extra"), dict):
        extra.update(obj["extra"])
    elif "extra" in obj:
        raise BadRequest(400, "extra must be an object", field=f"{path}.extra")
    data["extra"] = extra
    data["timestamp"] = _parse_timestamp(obj["timestamp"], f"{path}.timestamp") if "timestamp" in obj else raw.received_at
    if "consent" in obj and obj["consent"] is not None:
        data["consent"] = consent_from_mapping(obj["consent"], f"{path}.consent")
    for name in _LAX_NUMBERS:
        number = data.get(name)
        if isinstance(number, (str, bool)):
            data[name] = _lax_number(number)
    data.setdefault("user_agent", raw.headers.get("user-agent"))
    data.setdefault("ip_override", raw.client_ip)
    location = data.get("page_location")
    if isinstance(location, str):
        for name, value in click_ids(location).items():  # ids the beacon names itself win
            data.setdefault(name, value)
    if "_fbp" in cookies:
        data.setdefault("fbp", cookies["_fbp"])
    if "_fbc" in cookies:
        data.setdefault("fbc", cookies["_fbc"])
    try:
        return Event.from_data(data)
    except msgspec.ValidationError as exc:  # the first problem found, named by its field, never its value
        loc, problem = invalid_field(exc)
        raise BadRequest(400, "invalid event", detail=[{"field": ".".join([path, *loc]), "problem": problem}]) from None


def parse(raw: RawRequest, config: Config) -> ClientResult:
    origin = raw.headers.get("origin")
    if raw.method == "OPTIONS":
        if origin is None or not config.origin_allowed(origin):
            raise BadRequest(403, "origin not allowed", field="headers.origin")
        headers = _cors_headers(origin)
        headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        headers["Access-Control-Allow-Headers"] = "Content-Type"
        headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
        return ClientResult(events=[], status=204, headers=headers)

    if origin is not None and not config.origin_allowed(origin):
        raise BadRequest(403, "origin not allowed", field="headers.origin")
    content_type = raw.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _CONTENT_TYPES:
        raise BadRequest(415, "content type must be application/json or text/plain", field="headers.content-type")
    if not raw.body.strip():
        raise BadRequest(400, "empty body", field="body")
    try:
        payload = orjson.loads(raw.body)
    except orjson.JSONDecodeError:
        raise BadRequest(400, "body is not valid JSON", field="body") from None

    cookies = read_cookies(raw.headers.get("cookie"), _COOKIES)
    if isinstance(payload, dict) and "events" in payload:
        batch = payload["events"]
        if not isinstance(batch, list) or not batch:
            raise BadRequest(400, "events must be a non-empty list", field="events")
        events = [_build_event(obj, f"events[{i}]", raw, cookies) for i, obj in enumerate(batch)]
    else:
        events = [_build_event(payload, "body", raw, cookies)]
    headers = _cors_headers(origin) if origin is not None else {}
    return ClientResult(events=events, status=204, headers=headers)
