"""A fake Google Analytics 4: gtag.js hits at /g/collect, the Measurement Protocol and its validation server.

    async with FakeGA4(api_secrets={"G-ABC123XYZ": "test-secret"}) as ga:
        ...                                 # point destinations.ga4.collect_base at ga.url
        assert ga.events("G-ABC123XYZ") == [...]

Written from Google's pages, not from the gateway's code:

- ``/g/collect`` (GET or POST) takes gtag.js's wire format: the query string
  holds what every event shares, each body line (``\\r\\n`` or ``\\n``) is
  one event whose parameters override the query's, a POST without a body is
  one event. Google answers 204 to whatever it received and drops what is
  wrong without a word, so the fake answers 204 too and keeps, per hit, the
  problems its checks find; tests assert there are none. The checks are the
  ones Google documents for its validation server, applied to the wire
  form: ``v=2``, a ``tid``, a ``cid``, and an ``en`` that follows the event
  naming rules (https://support.google.com/analytics/answer/13316687: starts
  with a letter, letters, digits and underscores, at most 40 characters),
  and GA4's collection limits (https://support.google.com/analytics/answer/9267744):
  at most 25 event parameters with names of at most 40 characters and text
  values of at most 100 (``page_location`` 1000, ``page_referrer`` 420,
  ``page_title`` 300), numbers in ``epn.*``, at most 25 user properties with
  names of at most 24 and values of at most 36 characters, 200 items.
- ``/mp/collect`` takes the Measurement Protocol's JSON
  (https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference)
  with ``measurement_id`` and ``api_secret`` in the query, answers 204 to
  anything, and keeps the events only when the secret is the stream's and
  the validation below finds nothing, as GA4 drops the rest silently.
- ``/debug/mp/collect`` is the validation server
  (https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events):
  it records nothing and answers 200 with ``{"validationMessages": [...]}``,
  each ``{fieldPath, description, validationCode}`` with Google's codes
  (VALUE_INVALID, VALUE_REQUIRED, NAME_INVALID, NAME_RESERVED,
  VALUE_OUT_OF_BOUNDS, EXCEEDED_MAX_ENTITIES, NAME_DUPLICATED). It checks
  ``client_id``, at most 25 events, event names (rules above, and the names
  and prefixes reserved for the protocol), at most 25 parameters per event
  with valid, unreserved names of at most 40 characters and text values of
  at most 100, user properties, a ``timestamp_micros`` at most 72 hours old
  and not in the future, and, for revenue events (``purchase``, ``refund``),
  a ``transaction_id`` and a 3-letter ``currency`` beside ``value``.

``fail_next(status, times, retry_after=...)`` answers the next requests with
that status before anything is read, as an overloaded Google front end does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from tests.fakes._server import LoopbackServer

MAX_EVENT_PARAMS = 25
MAX_PARAM_NAME = 40
MAX_PARAM_VALUE = 100
LONG_VALUES = {"dl": 1000, "dr": 420, "dt": 300}
MAX_USER_PROPERTIES = 25
MAX_USER_PROPERTY_NAME = 24
MAX_USER_PROPERTY_VALUE = 36
MAX_ITEMS = 200
MAX_MP_EVENTS = 25
MAX_MP_BODY = 130 * 1024
MAX_BACKDATE = timedelta(hours=72)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TID = re.compile(r"^G-[A-Z0-9]{4,12}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Ref - https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events ("Reserved names")
RESERVED_EVENT_NAMES = frozenset({
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward", "adunit_exposure",
    "app_background", "app_clear_data", "app_exception", "app_remove", "app_store_refund",
    "app_store_subscription_cancel", "app_store_subscription_convert", "app_store_subscription_renew",
    "app_update", "app_upgrade", "dynamic_link_app_open", "dynamic_link_app_update", "dynamic_link_first_open",
    "error", "firebase_campaign", "firebase_in_app_message_action", "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression", "first_open", "first_visit", "in_app_purchase", "notification_dismiss",
    "notification_foreground", "notification_open", "notification_receive", "os_update", "session_start",
    "session_start_with_rollout", "user_engagement",
})
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_PARAM_NAMES = frozenset({"firebase_conversion"})
RESERVED_USER_PROPERTIES = frozenset({"first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id",
                                      "first_open_after_install"})
REVENUE_EVENTS = frozenset({"purchase", "refund"})


@dataclass(frozen=True, slots=True)
class Hit:
    """One /g/collect request: its events (query and line merged, decoded), user agent and what is wrong with it."""

    method: str
    query: dict[str, str]
    events: list[dict[str, str]]
    user_agent: str | None
    problems: list[str]


@dataclass(frozen=True, slots=True)
class MPRequest:
    measurement_id: str
    debug: bool
    body: Any
    messages: list[dict[str, str]]
    kept: bool


@dataclass
class _Failure:
    status: int
    retry_after: str | None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class FakeGA4(LoopbackServer):
    def __init__(self, api_secrets: dict[str, str] | None = None, now: Callable[[], datetime] = _utcnow) -> None:
        self.api_secrets = dict(api_secrets or {})
        self.now = now
        self.hits: list[Hit] = []
        self.mp_requests: list[MPRequest] = []
        self.answered: list[int] = []  # every status answered, failures included
        self._failures: list[_Failure] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self._failures.extend(_Failure(status, retry_after) for _ in range(times))

    def events(self, measurement_id: str | None = None) -> list[dict[str, str]]:
        """Every /g/collect event received, in order (for one measurement id, when given)."""
        return [e for hit in self.hits for e in hit.events if measurement_id is None or e.get("tid") == measurement_id]

    def problems(self) -> list[str]:
        return [p for hit in self.hits for p in hit.problems]

    def mp_events(self, measurement_id: str) -> list[dict[str, Any]]:
        """Measurement Protocol events GA4 kept for the stream, each with its request's fields beside it."""
        out = []
        for request in self.mp_requests:
            if request.kept and request.measurement_id == measurement_id:
                shared = {k: v for k, v in request.body.items() if k != "events"}
                out.extend({**shared, **event} for event in request.body["events"])
        return out

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("GET", "/g/collect", self._collect)
        app.router.add_route("POST", "/g/collect", self._collect)
        app.router.add_post("/mp/collect", self._mp)
        app.router.add_post("/debug/mp/collect", self._mp)
        return app

    def _failure(self) -> web.Response | None:
        if not self._failures:
            return None
        failure = self._failures.pop(0)
        self.answered.append(failure.status)
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
        return web.Response(status=failure.status, text="Service Unavailable", headers=headers)

    # -- /g/collect ---------------------------------------------------------------------------

    async def _collect(self, request: web.Request) -> web.Response:
        failed = self._failure()
        if failed is not None:
            return failed
        query = dict(parse_qsl(request.query_string, keep_blank_values=True))
        body = (await request.read()).decode("utf-8") if request.method == "POST" else ""
        lines = [dict(parse_qsl(line, keep_blank_values=True)) for line in re.split(r"\r?\n", body) if line.strip()]
        events = [{**query, **line} for line in lines] or [query]
        problems = [f"event {i}: {p}" for i, event in enumerate(events) for p in _hit_problems(event)]
        self.hits.append(Hit(request.method, query, events, request.headers.get("User-Agent"), problems))
        self.answered.append(204)
        return web.Response(status=204)

    # -- the Measurement Protocol ----------------------------------------------------------------

    async def _mp(self, request: web.Request) -> web.Response:
        failed = self._failure()
        if failed is not None:
            return failed
        debug = request.path.startswith("/debug/")
        measurement_id = request.query.get("measurement_id", "")
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        messages = _mp_messages(body, len(raw), self.now())
        kept = (not debug and not messages and bool(measurement_id)
                and self.api_secrets.get(measurement_id) == request.query.get("api_secret"))
        self.mp_requests.append(MPRequest(measurement_id, debug, body, messages, kept))
        if debug:
            self.answered.append(200)
            return web.json_response({"validationMessages": messages})
        self.answered.append(204)
        return web.Response(status=204)


def _hit_problems(event: dict[str, str]) -> list[str]:
    problems = []
    if event.get("v") != "2":
        problems.append("v must be 2")
    if not _TID.match(event.get("tid", "")):
        problems.append("tid is not a measurement id")
    if not event.get("cid"):
        problems.append("cid is required")
    name = event.get("en", "")
    if not name:
        problems.append("en is required")
    elif len(name) > 40 or not _NAME.match(name):
        problems.append("en must start with a letter and hold at most 40 letters, digits and underscores")
    custom = [k for k in event if k.startswith(("ep.", "epn."))]
    if len(custom) > MAX_EVENT_PARAMS:
        problems.append(f"more than {MAX_EVENT_PARAMS} event parameters")
    for key in custom:
        name = key.split(".", 1)[1]
        if len(name) > MAX_PARAM_NAME or not _NAME.match(name):
            problems.append(f"{key}: invalid parameter name")
        if key.startswith("epn.") and not _NUMBER.match(event[key]):
            problems.append(f"{key}: not a number")
        if key.startswith("ep.") and len(event[key]) > MAX_PARAM_VALUE:
            problems.append(f"{key}: longer than {MAX_PARAM_VALUE} characters")
    for key, limit in LONG_VALUES.items():
        if len(event.get(key, "")) > limit:
            problems.append(f"{key}: longer than {limit} characters")
    properties = [k for k in event if k.startswith(("up.", "upn."))]
    if len(properties) > MAX_USER_PROPERTIES:
        problems.append(f"more than {MAX_USER_PROPERTIES} user properties")
    for key in properties:
        name = key.split(".", 1)[1]
        if len(name) > MAX_USER_PROPERTY_NAME or len(event[key]) > MAX_USER_PROPERTY_VALUE:
            problems.append(f"{key}: user property name or value too long")
    if sum(1 for k in event if re.fullmatch(r"pr\d+", k)) > MAX_ITEMS:
        problems.append(f"more than {MAX_ITEMS} items")
    return problems


def _message(path: str, description: str, code: str) -> dict[str, str]:
    return {"fieldPath": path, "description": description, "validationCode": code}


def _mp_messages(body: Any, size: int, now: datetime) -> list[dict[str, str]]:
    if size > MAX_MP_BODY:
        return [_message("", f"The request body is larger than {MAX_MP_BODY} bytes.", "VALUE_OUT_OF_BOUNDS")]
    if not isinstance(body, dict):
        return [_message("", "The request body is not a JSON object.", "VALUE_INVALID")]
    messages = []
    if not isinstance(body.get("client_id"), str) or not body.get("client_id"):
        messages.append(_message("client_id", "client_id is required for a web stream.", "VALUE_REQUIRED"))
    stamp = body.get("timestamp_micros")
    if stamp is not None:
        if not isinstance(stamp, int) or isinstance(stamp, bool):
            messages.append(_message("timestamp_micros", "timestamp_micros must be a number.", "VALUE_INVALID"))
        elif stamp < (now - MAX_BACKDATE).timestamp() * 1_000_000:
            messages.append(_message("timestamp_micros", "Events can be backdated up to 72 hours.", "VALUE_OUT_OF_BOUNDS"))
        elif stamp > (now + timedelta(minutes=1)).timestamp() * 1_000_000:
            messages.append(_message("timestamp_micros", "timestamp_micros is in the future.", "VALUE_INVALID"))
    messages += _user_property_messages(body.get("user_properties"))
    events = body.get("events")
    if not isinstance(events, list) or not events:
        messages.append(_message("events", "events is required.", "VALUE_REQUIRED"))
        return messages
    if len(events) > MAX_MP_EVENTS:
        messages.append(_message("events", f"A request can have at most {MAX_MP_EVENTS} events.", "EXCEEDED_MAX_ENTITIES"))
    for index, event in enumerate(events):
        messages += _event_messages(event, f"events[{index}]")
    return messages


def _event_messages(event: Any, path: str) -> list[dict[str, str]]:
    if not isinstance(event, dict):
        return [_message(path, "An event must be an object.", "VALUE_INVALID")]
    name = event.get("name")
    messages = []
    if not isinstance(name, str) or not name:
        return [_message(f"{path}.name", "Event name is required.", "VALUE_REQUIRED")]
    if len(name) > 40:
        messages.append(_message(f"{path}.name", "Event names can have at most 40 characters.", "VALUE_OUT_OF_BOUNDS"))
    if not _NAME.match(name):
        messages.append(_message(f"{path}.name", "Names must start with an alphabetic character.", "NAME_INVALID"))
    if name in RESERVED_EVENT_NAMES or name.startswith(RESERVED_PREFIXES):
        messages.append(_message(f"{path}.name", f"Event name {name} is reserved.", "NAME_RESERVED"))
    params = event.get("params", {})
    if not isinstance(params, dict):
        return messages + [_message(f"{path}.params", "params must be an object.", "VALUE_INVALID")]
    if len(params) > MAX_EVENT_PARAMS:
        messages.append(_message(f"{path}.params", "An event can have at most 25 parameters.", "EXCEEDED_MAX_ENTITIES"))
    for key, value in params.items():
        where = f"{path}.params.{key}"
        if len(key) > MAX_PARAM_NAME:
            messages.append(_message(where, "Parameter names can have at most 40 characters.", "VALUE_OUT_OF_BOUNDS"))
        if key in RESERVED_PARAM_NAMES or key.startswith(RESERVED_PREFIXES):
            messages.append(_message(where, f"Parameter name {key} is reserved.", "NAME_RESERVED"))
        elif not _NAME.match(key):
            messages.append(_message(where, "Parameter names must start with an alphabetic character.", "NAME_INVALID"))
        if isinstance(value, str) and len(value) > MAX_PARAM_VALUE:
            messages.append(_message(where, "Parameter values can have at most 100 characters.", "VALUE_OUT_OF_BOUNDS"))
    if name in REVENUE_EVENTS:
        if not params.get("transaction_id"):
            messages.append(_message(f"{path}.params.transaction_id", "transaction_id is required.", "VALUE_REQUIRED"))
        if "value" in params:
            if not isinstance(params["value"], (int, float)) or isinstance(params["value"], bool):
                messages.append(_message(f"{path}.params.value", "value must be a number.", "VALUE_INVALID"))
            currency = params.get("currency")
            if currency is None:
                messages.append(_message(f"{path}.params.currency", "currency is required with value.", "VALUE_REQUIRED"))
            elif not isinstance(currency, str) or not _CURRENCY.match(currency):
                messages.append(_message(f"{path}.params.currency", "currency must be an ISO 4217 code.", "VALUE_INVALID"))
        items = params.get("items", [])
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            messages.append(_message(f"{path}.params.items", "items must be a list of at most 200.", "VALUE_INVALID"))
    return messages


def _user_property_messages(properties: Any) -> list[dict[str, str]]:
    if properties is None:
        return []
    if not isinstance(properties, dict):
        return [_message("user_properties", "user_properties must be an object.", "VALUE_INVALID")]
    messages = []
    if len(properties) > MAX_USER_PROPERTIES:
        messages.append(_message("user_properties", "At most 25 user properties.", "EXCEEDED_MAX_ENTITIES"))
    for key, entry in properties.items():
        where = f"user_properties.{key}"
        if len(key) > MAX_USER_PROPERTY_NAME:
            messages.append(_message(where, "User property names can have at most 24 characters.", "VALUE_OUT_OF_BOUNDS"))
        if key in RESERVED_USER_PROPERTIES or key.startswith(RESERVED_PREFIXES):
            messages.append(_message(where, f"User property name {key} is reserved.", "NAME_RESERVED"))
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, str) and len(value) > MAX_USER_PROPERTY_VALUE:
            messages.append(_message(where, "User property values can have at most 36 characters.", "VALUE_OUT_OF_BOUNDS"))
    return messages
