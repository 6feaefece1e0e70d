"""JSON beacon: ``POST /collect`` for ``navigator.sendBeacon`` and ``fetch``.

The body is one event object in the event model's own keys, or
``{"events": [...]}``. ``sendBeacon`` cannot set a JSON content type without
triggering a CORS preflight, so pages send ``text/plain``; both are parsed as
JSON. An optional ``timestamp`` (ISO 8601, or unix milliseconds as
JavaScript's ``Date.now()`` gives) says when the event happened; without it
the time of receipt is used.

Browsers enforce CORS: the allow-list is checked on the preflight and on the
request itself, so a page on another origin gets 403 rather than a silent
success. Requests without an ``Origin`` header (servers, curl) are accepted.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationError

from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway.consent import consent_from_mapping
from gateway.cookies import read_cookies
from gateway.errors import BadRequest
from gateway.event import EVENT_FIELDS, Event

ROUTES = [("POST", "/collect"), ("OPTIONS", "/collect")]

_CONTENT_TYPES = frozenset({"application/json", "text/plain"})
_COOKIES = frozenset({"_fbp", "_fbc"})
_PREFLIGHT_MAX_AGE = "86400"


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
        if not math.isfinite(value) or not 0 <= value < 253402300800000:
            raise BadRequest(400, "timestamp out of range", field=path)
        return datetime.fromtimestamp(value / 1000, timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(400, "timestamp must be ISO 8601 or unix milliseconds", field=path) from None
        if parsed.tzinfo is None:
            raise BadRequest(400, "timestamp needs a time zone offset", field=path)
        return parsed.astimezone(timezone.utc)
    raise BadRequest(400, "timestamp must be ISO 8601 or unix milliseconds", field=path)


def _build_event(obj: Any, path: str, raw: RawRequest, cookies: dict[str, str]) -> Event:
    if not isinstance(obj, dict):
        raise BadRequest(400, "an event must be a JSON object", field=path)
    data: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
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
    data.setdefault("user_agent", raw.headers.get("user-agent"))
    data.setdefault("ip_override", raw.client_ip)
    if "_fbp" in cookies:
        data.setdefault("fbp", cookies["_fbp"])
    if "_fbc" in cookies:
        data.setdefault("fbc", cookies["_fbc"])
    try:
        return Event.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join([path, *(str(p) for p in err["loc"])]), "problem": err["msg"]}
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise BadRequest(400, "invalid event", detail=problems) from None


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
