"""A fake Meta Graph API for the Conversions API: validates events as Meta documents, remembers what it took.

    async with MetaGraph(token="test-token", now=lambda: T0) as graph:
        ...                                   # point destinations.meta.api_base at graph.url
        graph.fail_next("rate_limit", times=2)
        assert graph.received_events("1234567890123456") == [...]

``POST /{version}/{pixel_id}/events`` takes ``{"data": [...], "access_token":
..., "test_event_code": ...}`` as JSON (or the same fields form-encoded, or
the token as a query parameter) and checks, in Meta's order: the token, then
every event. One bad event fails the whole request, as at Meta, with
Meta's error shape. Rules, from
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters:

- at most 1000 events; ``event_name``, ``event_time``, ``action_source`` and
  ``user_data`` required; ``event_time`` at most 7 days old (62 for
  ``physical_store``, subcode 2804003 as Meta answers) and at most a minute
  ahead (Meta does not document this one; our own message, no subcode);
- ``event_source_url`` and ``client_user_agent`` required for website events;
- ``em`` ... ``external_id`` must be SHA-256 hex (a string or a list);
  ``client_ip_address`` a real IP, ``fbc``/``fbp`` in their ``fb.1.<ms>.<...>``
  form and the user agent not a hash; at least one customer information
  parameter, and not only one of the combinations Meta calls invalid
  (subcode 2804050);
- a Purchase needs ``custom_data.value`` and ``currency``.

Accepted events are deduplicated per pixel on ``event_name`` + ``event_id``,
as Meta deduplicates browser and server events: the first one is kept and
later ones are counted in ``duplicates``. ``delay`` slows every answer down. ``fail_next`` makes the next
requests fail before any check: ``rate_limit`` (code 17 unless told,
optionally with ``X-Business-Use-Case-Usage``), ``token`` (code 190) or
``server`` (HTTP 500, code 2, transient).

Run it on its own for manual tests: ``python -m tests.fakes.meta_graph --port 8092``;
``GET /fake/accepted`` then shows what each pixel kept.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal

import orjson
from aiohttp import web

from tests.fakes._server import LoopbackServer

HASHED = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
UNHASHED = ("client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id", "fb_login_id", "lead_id",
            "anon_id", "madid", "page_id", "page_scoped_user_id", "ctwa_clid", "ig_account_id", "ig_sid")
ACTION_SOURCES = frozenset({"email", "website", "app", "phone_call", "chat", "physical_store", "system_generated",
                            "business_messaging", "other"})
EVENT_KEYS = frozenset({"event_name", "event_time", "event_id", "event_source_url", "action_source", "user_data",
                        "custom_data", "opt_out", "referrer_url", "data_processing_options",
                        "data_processing_options_country", "data_processing_options_state", "app_data",
                        "original_event_data", "customer_segmentation", "messaging_channel", "attribution_data"})
INVALID_ONLY = (  # best practices: "considered invalid if it only includes ... (or a subset thereof)"
    {"ct", "country", "st", "zp", "ge", "client_user_agent"}, {"db", "client_user_agent"}, {"fn", "ge"}, {"ln", "ge"},
)
MAX_EVENTS = 1000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FBC = re.compile(r"^fb\.\d\.\d{10,}\.\S+$")
_FBP = re.compile(r"^fb\.\d\.\d{10,}\.\d+(\.\S+)?$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


class Invalid(Exception):
    def __init__(self, message: str, subcode: int | None = None, title: str = "Invalid parameter") -> None:
        super().__init__(message)
        self.message, self.subcode, self.title = message, subcode, title


@dataclass(frozen=True, slots=True)
class Received:
    pixel_id: str
    version: str
    body: dict[str, Any]  # as sent, token included (so tests can see where it was)
    token_in: str  # "body", "form", "query" or "" when missing
    status: int
    answer: dict[str, Any]

    @property
    def events(self) -> list[Any]:
        data = self.body.get("data")
        return data if isinstance(data, list) else []


@dataclass(slots=True)
class _Failure:
    kind: Literal["rate_limit", "token", "server"]
    code: int
    retry_minutes: int | None


@dataclass(slots=True)
class Pixel:
    events: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (event_name, event_id) -> event
    without_id: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    test_event_codes: list[str] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class MetaGraph(LoopbackServer):
    def __init__(self, token: str = "test-token", now: Callable[[], datetime] = _utcnow) -> None:
        self.token = token
        self.now = now
        self.delay = 0.0  # seconds each answer takes
        self.requests: list[Received] = []
        self.pixels: dict[str, Pixel] = {}
        self._failures: deque[_Failure] = deque()
        self._traces = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, kind: Literal["rate_limit", "token", "server"], times: int = 1, *, code: int | None = None,
                  retry_minutes: int | None = None) -> None:
        """Fail the next ``times`` requests, before any check, the way Meta fails them."""
        default = {"rate_limit": 17, "token": 190, "server": 2}[kind]
        self._failures.extend(_Failure(kind, code or default, retry_minutes) for _ in range(times))

    def received_events(self, pixel_id: str) -> list[dict[str, Any]]:
        """Every event the pixel kept, in arrival order (duplicates dropped)."""
        pixel = self.pixels.get(pixel_id)
        return [] if pixel is None else [*pixel.events.values(), *pixel.without_id]

    def duplicates(self, pixel_id: str) -> int:
        pixel = self.pixels.get(pixel_id)
        return 0 if pixel is None else pixel.duplicates

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version}/{pixel_id}/events", self._events)
        app.router.add_get("/fake/accepted", self._accepted)
        return app


    # -- the endpoint ---------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.Response:
        version, pixel_id = request.match_info["version"], request.match_info["pixel_id"]
        body, token, token_in = await self._read(request)
        if self.delay:
            await asyncio.sleep(self.delay)

        def answer(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
            self.requests.append(Received(pixel_id, version, body, token_in, status, payload))
            return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json",
                                headers=headers)

        if self._failures:
            failure = self._failures.popleft()
            if failure.kind == "rate_limit":
                headers = {}
                if failure.retry_minutes is not None:
                    usage = {"1000000000": [{"type": "ads_management", "call_count": 100, "total_cputime": 30,
                                             "total_time": 40, "estimated_time_to_regain_access": failure.retry_minutes}]}
                    headers["X-Business-Use-Case-Usage"] = orjson.dumps(usage).decode()
                return answer(400, self._error(failure.code, "User request limit reached", is_transient=True), headers)
            if failure.kind == "token":
                return answer(400, self._error(failure.code, "Error validating access token: Session has expired.",
                                               subcode=463), {"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'})
            return answer(500, self._error(failure.code, "An unexpected error has occurred. Please retry your request later.",
                                           is_transient=True))
        if token != self.token:
            message = "Invalid OAuth access token - Cannot parse access token" if token else "An active access token must be used"
            return answer(400, self._error(190, message), {"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'})
        if not re.fullmatch(r"\d{6,20}", pixel_id):
            return answer(400, self._error(100, f"Unsupported post request. Object with ID '{pixel_id}' does not exist",
                                           subcode=33, error_type="GraphMethodException"))
        try:
            events = self._check_body(body)
        except Invalid as bad:
            return answer(400, self._error(100, "Invalid parameter", subcode=bad.subcode, title=bad.title,
                                           user_msg=bad.message))
        pixel = self.pixels.setdefault(pixel_id, Pixel())
        test_code = body.get("test_event_code")
        if isinstance(test_code, str):
            pixel.test_event_codes.append(test_code)
        for event in events:
            event_id = event.get("event_id")
            if event_id is None:
                pixel.without_id.append(event)
            elif (event["event_name"], event_id) in pixel.events:
                pixel.duplicates += 1
            else:
                pixel.events[(event["event_name"], event_id)] = event
        return answer(200, {"events_received": len(events), "messages": [], "fbtrace_id": self._trace()})

    async def _accepted(self, request: web.Request) -> web.Response:
        """What each pixel kept, for a look by hand: ``GET /fake/accepted``."""
        pixels = {pid: {"events": self.received_events(pid), "duplicates": p.duplicates, "test_event_codes": p.test_event_codes}
                  for pid, p in self.pixels.items()}
        return web.Response(body=orjson.dumps({"pixels": pixels}), content_type="application/json")

    async def _read(self, request: web.Request) -> tuple[dict[str, Any], str, str]:
        raw = await request.read()
        body: dict[str, Any] = {}
        token_in = ""
        if request.content_type == "application/json":
            try:
                parsed = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                parsed = {}
            body = parsed if isinstance(parsed, dict) else {}
        elif raw:
            form = dict(await request.post())
            body = {k: v for k, v in form.items() if isinstance(v, str)}
            if isinstance(body.get("data"), str):  # a form sends data as a JSON string
                try:
                    body["data"] = orjson.loads(body["data"])
                except orjson.JSONDecodeError:
                    pass
            token_in = "form" if "access_token" in body else ""
        token = body.get("access_token")
        if isinstance(token, str) and token:
            token_in = token_in or "body"
        elif request.query.get("access_token"):
            token, token_in = request.query["access_token"], "query"
        return body, token if isinstance(token, str) else "", token_in

    def _check_body(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise Invalid("The parameter data is required and must be a non-empty array")
        if len(data) > MAX_EVENTS:
            raise Invalid(f"You can send at most {MAX_EVENTS} events in one request")
        for event in data:
            validate_event(event, self.now())
        return data

    def _trace(self) -> str:
        self._traces += 1
        return f"FakeTrace{self._traces:06d}"

    def _error(self, code: int, message: str, *, subcode: int | None = None, title: str | None = None,
               user_msg: str | None = None, is_transient: bool = False, error_type: str = "OAuthException") -> dict[str, Any]:
        error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
        if subcode is not None:
            error["error_subcode"] = subcode
        error["is_transient"] = is_transient
        if title is not None:
            error["error_user_title"] = title
        if user_msg is not None:
            error["error_user_msg"] = user_msg
        error["fbtrace_id"] = self._trace()
        return {"error": error}


def validate_event(event: Any, now: datetime) -> None:
    """Raise ``Invalid`` for an event Meta would refuse; the rules are in the module's docstring."""
    if not isinstance(event, dict):
        raise Invalid("Each element of data must be an object")
    unknown = set(event) - EVENT_KEYS
    if unknown:
        raise Invalid(f"Unknown parameter {sorted(unknown)[0]}")
    name = event.get("event_name")
    if not isinstance(name, str) or not name:
        raise Invalid("The parameter event_name is required")
    when = event.get("event_time")
    if not isinstance(when, int) or isinstance(when, bool):
        raise Invalid("The parameter event_time is required and must be a unix timestamp")
    source = event.get("action_source")
    if source not in ACTION_SOURCES:
        raise Invalid("The parameter action_source is required and must be one of " + ", ".join(sorted(ACTION_SOURCES)))
    max_age = timedelta(days=62 if source == "physical_store" else 7)
    if when < (now - max_age).timestamp():
        raise Invalid(
            "The timestamp for this event is too far in the past. Events need to be sent from your server within "
            f"{max_age.days} days of when they occurred.", subcode=2804003, title="Event Timestamp Too Old")
    if when > (now + timedelta(minutes=1)).timestamp():
        raise Invalid("The timestamp for this event is in the future.", title="Event Timestamp In Future")
    if "event_id" in event and not isinstance(event["event_id"], str):
        raise Invalid("The parameter event_id must be a string")
    user_data = event.get("user_data")
    if not isinstance(user_data, dict):
        raise Invalid("The parameter user_data is required")
    _check_user_data(user_data)
    if source == "website":
        url = event.get("event_source_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise Invalid("event_source_url is required for website events and must be an http(s) URL")
        if not user_data.get("client_user_agent"):
            raise Invalid("client_user_agent is required for website events")
    custom = event.get("custom_data", {})
    if not isinstance(custom, dict):
        raise Invalid("custom_data must be an object")
    if name == "Purchase":
        value = custom.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Invalid("custom_data.value is required for Purchase events")
        if not isinstance(custom.get("currency"), str) or not _CURRENCY.match(custom["currency"]):
            raise Invalid("custom_data.currency is required for Purchase events and must be an ISO 4217 code")
    options = event.get("data_processing_options")
    if options is not None and (not isinstance(options, list) or any(o != "LDU" for o in options)):
        raise Invalid("data_processing_options may only hold LDU")
    for key in ("data_processing_options_country", "data_processing_options_state"):
        if key in event and (not isinstance(event[key], int) or isinstance(event[key], bool)):
            raise Invalid(f"{key} must be an integer")


def _check_user_data(user_data: dict[str, Any]) -> None:
    unknown = set(user_data) - set(HASHED) - set(UNHASHED)
    if unknown:
        raise Invalid(f"Unknown user_data parameter {sorted(unknown)[0]}")
    for key in HASHED:
        if key not in user_data:
            continue
        value = user_data[key]
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and _HEX64.match(v) for v in values):
            raise Invalid(f"user_data.{key} must be hashed with SHA-256 (64 lowercase hex characters)")
    ip = user_data.get("client_ip_address")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except (TypeError, ValueError):
            raise Invalid("client_ip_address must be a valid IPv4 or IPv6 address and never hashed") from None
    agent = user_data.get("client_user_agent")
    if agent is not None and (not isinstance(agent, str) or _HEX64.match(agent)):
        raise Invalid("client_user_agent must not be hashed")
    for key, pattern in (("fbc", _FBC), ("fbp", _FBP)):
        if key in user_data and (not isinstance(user_data[key], str) or not pattern.match(user_data[key])):
            raise Invalid(f"{key} must be the unhashed cookie value fb.<subdomain index>.<creation time>.<value>")
    present = {key for key, value in user_data.items() if value not in (None, "", [])}
    if not present:
        raise Invalid("user_data needs at least one customer information parameter", subcode=2804050,
                      title="Insufficient customer information")
    if any(present <= combination for combination in INVALID_ONLY):
        raise Invalid("These customer information parameters alone are not enough to match the event",
                      subcode=2804050, title="Insufficient customer information")


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake Meta Graph API (Conversions API) on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--token", default="test-token", help="the access token it accepts")
    args = parser.parse_args()
    graph = MetaGraph(token=args.token)
    print(f"fake Meta Graph API on http://127.0.0.1:{args.port}\n"
          f"  META_API_BASE=http://127.0.0.1:{args.port} META_ACCESS_TOKEN={args.token}\n"
          f"  accepted events: GET http://127.0.0.1:{args.port}/fake/accepted", flush=True)
    web.run_app(graph.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
