"""A fake Google Ads API and OAuth token endpoint, strict like the real ones, on 127.0.0.1.

    async with FakeGoogleAds() as fake:          # in a test, on the test's own loop
        ...  # api_base=fake.url, token_url=fake.token_url, credentials from fake.credentials
        fake.fail_rows({2: "CLICK_NOT_FOUND"})  # the next upload: row 2 fails
        fake.fail_next(429, retry_delay=30)     # the next upload: RESOURCE_EXHAUSTED
        fake.expire_tokens()                    # every access token issued so far is expired
        fake.revoke()                           # the refresh token now answers invalid_grant

    python -m tests.fakes.google_ads --port 8091  # for trying the gateway without an account

What it checks, as Google does: a Bearer token its token endpoint
(``tests/fakes/google_oauth.py``, which a fake Data Manager API may share)
issued for the adwords scope and that has not expired (401 UNAUTHENTICATED,
403 for a token without the scope), the ``login-customer-id`` format (the
``developer-token`` header is ignored: tokens were sunset on 2026-09-09), and the body, parsed with the google-ads
package's protobuf messages for the version in the path and
``ignore_unknown_fields=False``: an unknown or misspelt field is a 400
INVALID_ARGUMENT, as Google's JSON transcoding answers. Per row it checks
resource names, the ``yyyy-mm-dd hh:mm:ss+hh:mm`` times, click ids, hashed
identifiers (64 lowercase hex characters), caller ids (E.164) and the
adjustment rules, and it de-duplicates like Google: the same order id
(DUPLICATE_ORDER_ID in one request, ORDER_ID_ALREADY_IN_USE later) and the
same click + time + action (DUPLICATE_CLICK_CONVERSION_IN_REQUEST,
CLICK_CONVERSION_ALREADY_EXISTS). Adjustments find their conversion among the
click conversions it accepted and those added with ``add_conversion``; any
other is CONVERSION_NOT_FOUND.

Answers are built as the google-ads protobuf messages and turned into JSON by
``json_format.MessageToDict``, so their shape is the REST shape: ``results[]``
echoing each accepted row (an empty object for a failed one) and
``partialFailureError`` with a packed ``GoogleAdsFailure`` whose errors carry
``errorCode``, ``message`` and ``location.fieldPathElements``.
Ref: https://developers.google.com/google-ads/api/docs/best-practices/partial-failures
Ref: https://developers.google.com/google-ads/api/rest/overview (errors as google.rpc.Status)
Ref: https://developers.google.com/identity/protocols/oauth2/web-server#offline (refreshing a token)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import LoopbackServer
from tests.fakes.google_oauth import ADS_API_SCOPE, TokenIssuer
from google.protobuf import any_pb2, json_format

_VERSIONS = ("v23", "v24", "v25", "v26")
_UPLOAD_PATH = re.compile(r"^/(v\d+)/customers/([^/:]+):(upload\w+)$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
_ACTION = re.compile(r"^customers/(\d+)/conversionActions/(\d+)$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CUSTOMER = re.compile(r"^\d{10}$")

# REST method -> (kind, request message, list field (JSON), list field (proto), result message)
_METHODS = {
    "uploadClickConversions": ("click", "conversion_upload_service", "UploadClickConversionsRequest", "conversions",
                               "conversions", "UploadClickConversionsResponse"),
    "uploadCallConversions": ("call", "conversion_upload_service", "UploadCallConversionsRequest", "conversions",
                              "conversions", "UploadCallConversionsResponse"),
    "uploadConversionAdjustments": ("adjustment", "conversion_adjustment_upload_service",
                                    "UploadConversionAdjustmentsRequest", "conversionAdjustments",
                                    "conversion_adjustments", "UploadConversionAdjustmentsResponse"),
}
# The enum a row error is looked up in first, by kind.
_OWN_ENUM = {"click": "conversion_upload_error", "call": "conversion_upload_error",
             "adjustment": "conversion_adjustment_upload_error"}
_MESSAGES = {
    "CLICK_NOT_FOUND": "The email address or phone number for this event can't be matched to a click.",
    "UNPARSEABLE_GCLID": "The imported gclid could not be decoded.",
    "EXPIRED_EVENT": "The imported event can't be recorded because its click occurred before this conversion's "
                     "click-through window.",
    "CONVERSION_PRECEDES_EVENT": "The imported event has a conversion_date_time that precedes the click.",
    "CLICK_CONVERSION_ALREADY_EXISTS": "The imported event has the same click and conversion_date_time as an "
                                       "existing conversion.",
    "ORDER_ID_ALREADY_IN_USE": "The imported event includes an order ID that was previously recorded, so the "
                               "event was not processed.",
    "CONVERSION_NOT_FOUND": "The conversion for this conversion action and conversion identifier can't be found.",
    "INTERNAL_ERROR": "An internal error has occurred.",
    "CONCURRENT_MODIFICATION": "Multiple requests were attempting to modify the same resource at once. Retry the request.",
    "RESOURCE_EXHAUSTED": "Too many requests. Retry in 30 seconds.",
}

CREDENTIALS = {
    "developer_token": "test-developer-token",
    "client_id": "test-client-id.apps.googleusercontent.com",
    "client_secret": "test-client-secret",
    "refresh_token": "test-refresh-token",
}
_OAUTH_KEYS = ("client_id", "client_secret", "refresh_token")


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload request as received, and the HTTP status it got."""

    method: str  # uploadClickConversions, ...
    version: str
    customer_id: str
    headers: dict[str, str]
    body: Any
    status: int
    rows: int


@dataclass(slots=True)
class _Failure:
    status: int
    retry_delay: float | None = None
    code: str | None = None


@dataclass(slots=True)
class _State:
    accepted: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"click": [], "call": [], "adjustment": []})
    orders: set[tuple[str, str]] = field(default_factory=set)
    clicks: set[tuple[str, str, str, datetime]] = field(default_factory=set)
    calls: set[tuple[str, str, datetime, datetime]] = field(default_factory=set)
    # conversions adjustments can find: (action id, order id) and (action id, gclid, conversion time)
    conversions_by_order: dict[tuple[str, str], datetime | None] = field(default_factory=dict)
    conversions_by_click: set[tuple[str, str, datetime]] = field(default_factory=set)
    retracted: set[tuple[Any, ...]] = field(default_factory=set)
    enhanced: set[tuple[Any, ...]] = field(default_factory=set)
    restatements: set[tuple[Any, ...]] = field(default_factory=set)


class FakeGoogleAds(LoopbackServer):
    def __init__(
        self,
        *,
        expires_in: int = 3599,
        login_customer_id: str | None = None,
        accepted_conversions_exist: bool = True,
        port: int = 0,
        issuer: TokenIssuer | None = None,
        **credentials: str,
    ) -> None:
        self.credentials = CREDENTIALS | credentials
        self.issuer = issuer or TokenIssuer({k: self.credentials[k] for k in _OAUTH_KEYS}, expires_in=expires_in)
        self.expires_in = expires_in
        self.login_customer_id = login_customer_id  # when set, uploads must carry exactly this header
        self.accepted_conversions_exist = accepted_conversions_exist
        self.port = port
        self.uploads: list[Upload] = []
        self._request_ids = itertools.count(1)
        self._failures: deque[_Failure] = deque()
        self._row_failures: deque[dict[int, str]] = deque()
        self._value_failures: dict[str, str] = {}
        self._state = _State()
        self._runner: web.AppRunner | None = None

    # -- addresses -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The api_base to configure."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    # -- what it received -------------------------------------------------------------------------

    @property
    def accepted(self) -> dict[str, list[dict[str, Any]]]:
        """Rows recorded, by kind (click, call, adjustment), in the order they were accepted."""
        return self._state.accepted

    # -- scripting --------------------------------------------------------------------------------

    @property
    def token_requests(self) -> int:
        return len(self.issuer.requests)

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on (as if an hour had passed)."""
        self.issuer.expire_tokens()

    def revoke(self, error: str = "invalid_grant") -> None:
        """The refresh token is no longer accepted: the token endpoint answers ``error``."""
        self.issuer.revoke(error)

    def fail_next(self, status: int, count: int = 1, *, retry_delay: float | None = None, code: str | None = None) -> None:
        """The next ``count`` uploads fail as a whole: 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE, ..."""
        self._failures.extend(_Failure(status, retry_delay, code) for _ in range(count))

    def fail_rows(self, rows: dict[int, str]) -> None:
        """In the next upload, the rows at these indexes fail with these error codes (e.g. CLICK_NOT_FOUND)."""
        self._row_failures.append(dict(rows))

    def fail_value(self, value: str, code: str) -> None:
        """Every row whose gclid, gbraid, wbraid or order id is ``value`` fails with ``code``."""
        self._value_failures[value] = code

    def add_conversion(self, action: str, *, order_id: str | None = None, gclid: str | None = None,
                       conversion_date_time: str | None = None) -> None:
        """A conversion adjustments can find: by order id, or by gclid and conversion time."""
        action_id = _action_id(action) or action
        when = _parse_time(conversion_date_time) if conversion_date_time else None
        if order_id is not None:
            self._state.conversions_by_order[(action_id, order_id)] = when
        if gclid is not None and when is not None:
            self._state.conversions_by_click.add((action_id, gclid, when))

    # -- lifecycle --------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/token", self.issuer.handle)
        app.router.add_get("/fake/accepted", self._show_accepted)
        app.router.add_route("*", "/{tail:.*}", self._api)
        return app


    async def _show_accepted(self, request: web.Request) -> web.Response:
        return web.json_response(self._state.accepted)

    # -- the API -------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        match = _UPLOAD_PATH.match(request.path)
        if request.method != "POST" or match is None or match.group(3) not in _METHODS:
            return _rpc_error(404, "NOT_FOUND", "The requested URL was not found on this server.")
        version, customer_id, method = match.groups()
        body_bytes = await request.read()
        headers = dict(request.headers)
        try:
            body = orjson.loads(body_bytes)
        except orjson.JSONDecodeError:
            body = None
        status, answer = self._upload(version, customer_id, method, headers, body)
        rows = len(body.get(_METHODS[method][3]) or []) if isinstance(body, dict) else 0
        self.uploads.append(Upload(method, version, customer_id, headers, body, status, rows))
        return web.Response(status=status, body=orjson.dumps(answer), content_type="application/json")

    def _upload(self, version: str, customer_id: str, method: str, headers: dict[str, str],
                body: Any) -> tuple[int, Any]:
        if version not in _VERSIONS:
            return 404, _rpc_body(404, "NOT_FOUND", "The requested URL was not found on this server.")
        kind, module_name, request_name, list_json, list_proto, response_name = _METHODS[method]
        errors_module = _module(version, "errors.types.errors")

        refused = self.issuer.check(_header(headers, "authorization"), ADS_API_SCOPE)
        if refused is not None:
            return refused[0], _rpc_body(*refused)
        login = _header(headers, "login-customer-id")
        if login is not None and not _CUSTOMER.match(login):
            return 400, self._failure_body(version, 400, "INVALID_ARGUMENT", "header_error", "INVALID_LOGIN_CUSTOMER_ID",
                                           "The login customer ID could not be validated.")
        if self.login_customer_id is not None and login != self.login_customer_id:
            return 403, self._failure_body(version, 403, "PERMISSION_DENIED", "authorization_error",
                                           "USER_PERMISSION_DENIED", "User doesn't have permission to access customer. "
                                           "Note: If you're accessing a client customer, the manager's customer id "
                                           "must be set in the 'login-customer-id' header.")
        if not _CUSTOMER.match(customer_id):
            return 400, self._failure_body(version, 400, "INVALID_ARGUMENT", "request_error", "INVALID_CUSTOMER_ID",
                                           "Invalid customer ID.")
        content_type = _header(headers, "content-type") or ""
        if not content_type.startswith("application/json") or not isinstance(body, dict):
            return 400, _rpc_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")

        request_type = getattr(_module(version, f"services.types.{module_name}"), request_name).pb()
        try:
            json_format.ParseDict(body, request_type(), ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            message = "Invalid JSON payload received. " + " ".join(str(exc).split())
            return 400, _rpc_body(400, "INVALID_ARGUMENT", message, [{
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"description": message}],
            }])

        if self._failures:
            failure = self._failures.popleft()
            return failure.status, self._scripted_failure(version, failure)
        if body.get("partialFailure") is not True:
            return 400, self._failure_body(version, 400, "INVALID_ARGUMENT", "partial_failure_error",
                                           "PARTIAL_FAILURE_MODE_REQUIRED",
                                           "The partial failure field was false in the request.")
        rows = body.get(list_json) or []
        if len(rows) > 2000:
            code = "TOO_MANY_ADJUSTMENTS_IN_REQUEST" if kind == "adjustment" else "TOO_MANY_CONVERSIONS_IN_REQUEST"
            return 400, self._failure_body(version, 400, "INVALID_ARGUMENT", _OWN_ENUM[kind], code,
                                           "Upload fewer than 2001 events in a single request.")
        if not rows:
            return 400, self._failure_body(version, 400, "INVALID_ARGUMENT", "field_error", "REQUIRED_NONEMPTY_LIST",
                                           "The field must not be empty.", [(list_proto, None)])

        validate_only = bool(body.get("validateOnly"))
        scripted = self._row_failures.popleft() if self._row_failures else {}
        failure = errors_module.GoogleAdsFailure.pb()()
        failure.request_id = self._request_id()
        response = getattr(_module(version, f"services.types.{module_name}"), response_name).pb()()
        seen: set[Any] = set()
        accepted: list[tuple[int, dict[str, Any], Any]] = []
        for index, row in enumerate(rows):
            code, path = scripted.get(index), None
            if code is None:
                code = self._value_failure(row)
            if code is None:
                code, path, key = self._check_row(kind, row, customer_id, seen)
            result = response.results.add()
            if code is not None:
                self._add_error(failure, kind, code, [(list_proto, index)] + ([(path, None)] if path else []))
                continue
            accepted.append((index, row, key))
            if not validate_only:
                json_format.ParseDict(_result_of(kind, row), result, ignore_unknown_fields=True)
        if validate_only:
            del response.results[:]
        else:
            for _, row, key in accepted:
                self._remember(kind, row, key)
        if "jobId" in body and kind != "call":
            response.job_id = int(body["jobId"])
        elif kind != "call":
            response.job_id = 2**31 + next(self._request_ids)
        if failure.errors:
            status = response.partial_failure_error
            status.code = 3  # google.rpc.Code.INVALID_ARGUMENT
            status.message = ", ".join(f"{e.message.rstrip('.')}, at {list_proto}[{e.location.field_path_elements[0].index}]"
                                       for e in failure.errors)[:2000]
            packed = status.details.add()
            packed.Pack(failure)
        return 200, json_format.MessageToDict(response)

    # -- rows -----------------------------------------------------------------------------------------

    def _check_row(self, kind: str, row: dict[str, Any], customer_id: str, seen: set[Any]
                   ) -> tuple[str | None, str | None, Any]:
        """(error code, field, dedupe key) for one row; the code is None when Google would accept it."""
        action = _action_id(row.get("conversionAction"))
        if action is None:
            return "RESOURCE_NAME_MALFORMED", "conversion_action", None
        if kind == "click":
            return self._check_click(row, action, seen)
        if kind == "call":
            return self._check_call(row, action, seen)
        return self._check_adjustment(row, action, seen)

    def _check_click(self, row: dict[str, Any], action: str, seen: set[Any]) -> tuple[str | None, str | None, Any]:
        when = _parse_time(row.get("conversionDateTime"))
        if when is None:
            return "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET", "conversion_date_time", None
        ids = [name for name in ("gclid", "gbraid", "wbraid") if row.get(name)]
        if "gbraid" in ids and "wbraid" in ids:
            return "GBRAID_WBRAID_BOTH_SET", "wbraid", None
        if len(ids) > 1:
            return "VALUE_MUST_BE_UNSET", ids[1], None
        identifiers = row.get("userIdentifiers") or []
        problem = _check_identifiers(identifiers, allowed=("hashedEmail", "hashedPhoneNumber"))
        if problem:
            return problem, "user_identifiers", None
        if not ids and not identifiers:
            return "REQUIRED", "gclid", None
        order = row.get("orderId")
        if order:
            key: Any = ("order", action, order)
            if key in seen:
                return "DUPLICATE_ORDER_ID", "order_id", None
            if (action, order) in self._state.orders:
                return "ORDER_ID_ALREADY_IN_USE", "order_id", None
            seen.add(key)
        if ids:
            click = ("click", action, row[ids[0]], when)
            if click in seen:
                return "DUPLICATE_CLICK_CONVERSION_IN_REQUEST", ids[0], None
            if (action, ids[0], row[ids[0]], when) in self._state.clicks:
                return "CLICK_CONVERSION_ALREADY_EXISTS", ids[0], None
            seen.add(click)
        return None, None, (action, order, ids[0] if ids else None, row[ids[0]] if ids else None, when)

    def _check_call(self, row: dict[str, Any], action: str, seen: set[Any]) -> tuple[str | None, str | None, Any]:
        caller = row.get("callerId")
        if not isinstance(caller, str) or not _E164.match(caller):
            return "UNPARSEABLE_CALLERS_PHONE_NUMBER", "caller_id", None
        started = _parse_time(row.get("callStartDateTime"))
        if started is None:
            return "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET", "call_start_date_time", None
        when = _parse_time(row.get("conversionDateTime"))
        if when is None:
            return "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET", "conversion_date_time", None
        if when < started:
            return "CONVERSION_PRECEDES_CALL", "conversion_date_time", None
        key = (action, caller, started, when)
        if ("call",) + key in seen:
            return "DUPLICATE_CALL_CONVERSION_IN_REQUEST", "caller_id", None
        if key in self._state.calls:
            return "CALL_CONVERSION_ALREADY_EXISTS", "caller_id", None
        seen.add(("call",) + key)
        return None, None, key

    def _check_adjustment(self, row: dict[str, Any], action: str, seen: set[Any]
                          ) -> tuple[str | None, str | None, Any]:
        kind = row.get("adjustmentType")
        order = row.get("orderId")
        pair = row.get("gclidDateTimePair")
        adjusted_at = _parse_time(row.get("adjustmentDateTime"))
        if "adjustmentDateTime" in row and adjusted_at is None:
            return "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET", "adjustment_date_time", None
        if kind not in ("RETRACTION", "RESTATEMENT", "ENHANCEMENT"):
            return "INVALID_ENUM_VALUE", "adjustment_type", None
        if kind != "ENHANCEMENT" and order and pair:
            return "GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET", "order_id", None
        if kind == "ENHANCEMENT" and not order:
            return "MISSING_ORDER_ID_FOR_WEBPAGE", "order_id", None
        if kind == "RESTATEMENT" and (row.get("restatementValue") or {}).get("adjustedValue") is None:
            return "REQUIRED", "restatement_value", None
        if kind == "RETRACTION" and "restatementValue" in row:
            return "VALUE_MUST_BE_UNSET", "restatement_value", None
        identifiers = row.get("userIdentifiers") or []
        if kind != "ENHANCEMENT" and identifiers:
            return "UNSUPPORTED_USER_IDENTIFIER", "user_identifiers", None
        if kind == "ENHANCEMENT":
            if not identifiers:
                return "REQUIRED_NONEMPTY_LIST", "user_identifiers", None
            problem = _check_identifiers(identifiers, allowed=("hashedEmail", "hashedPhoneNumber", "addressInfo"))
            if problem:
                return problem, "user_identifiers", None
        if kind != "ENHANCEMENT" and adjusted_at is None:
            return "REQUIRED", "adjustment_date_time", None

        conversion_time: datetime | None
        if order:
            identity: tuple[Any, ...] = (action, "order", order)
            found = (action, order) in self._state.conversions_by_order
            conversion_time = self._state.conversions_by_order.get((action, order))
        else:
            gclid = (pair or {}).get("gclid")
            conversion_time = _parse_time((pair or {}).get("conversionDateTime"))
            if not gclid or conversion_time is None:
                return "REQUIRED", "gclid_date_time_pair", None
            identity = (action, "click", gclid, conversion_time)
            found = (action, gclid, conversion_time) in self._state.conversions_by_click
        if not found:
            return "CONVERSION_NOT_FOUND", "order_id" if order else "gclid_date_time_pair", None
        if conversion_time is not None and adjusted_at is not None and adjusted_at < conversion_time:
            return "ADJUSTMENT_PRECEDES_CONVERSION", "adjustment_date_time", None
        if kind == "ENHANCEMENT":
            if ("enhancement",) + identity in seen:
                return "DUPLICATE_ENHANCEMENT_IN_REQUEST", "order_id", None
            if identity in self._state.enhanced:
                return "CONVERSION_ALREADY_ENHANCED", "order_id", None
            seen.add(("enhancement",) + identity)
            return None, None, identity
        if identity in self._state.retracted:
            return "CONVERSION_ALREADY_RETRACTED", "adjustment_type", None
        duplicate = (kind, identity, adjusted_at)
        if duplicate in seen:
            return "DUPLICATE_ADJUSTMENT_IN_REQUEST", "adjustment_date_time", None
        if kind == "RESTATEMENT" and (identity, adjusted_at) in self._state.restatements:
            return "RESTATEMENT_ALREADY_EXISTS", "adjustment_date_time", None
        seen.add(duplicate)
        return None, None, identity

    def _remember(self, kind: str, row: dict[str, Any], key: Any) -> None:
        self._state.accepted[kind].append(row)
        if kind == "click":
            action, order, id_name, id_value, when = key
            if order:
                self._state.orders.add((action, order))
            if id_name:
                self._state.clicks.add((action, id_name, id_value, when))
            if self.accepted_conversions_exist:
                if order:
                    self._state.conversions_by_order[(action, order)] = when
                if id_name == "gclid":
                    self._state.conversions_by_click.add((action, id_value, when))
        elif kind == "call":
            self._state.calls.add(key)
        elif row.get("adjustmentType") == "RETRACTION":
            self._state.retracted.add(key)
        elif row.get("adjustmentType") == "ENHANCEMENT":
            self._state.enhanced.add(key)
        else:
            self._state.restatements.add((key, _parse_time(row.get("adjustmentDateTime"))))

    def _value_failure(self, row: dict[str, Any]) -> str | None:
        for name in ("gclid", "gbraid", "wbraid", "orderId"):
            value = row.get(name)
            if isinstance(value, str) and value in self._value_failures:
                return self._value_failures[value]
        return None

    # -- error bodies -----------------------------------------------------------------------------------

    def _request_id(self) -> str:
        return f"fake-request-{next(self._request_ids)}"

    def _add_error(self, failure: Any, kind: str, code: str, path: list[tuple[str, int | None]],
                   message: str | None = None, retry_delay: float | None = None) -> None:
        error = failure.errors.add()
        category = _category(failure, kind, code)
        setattr(error.error_code, category, error.error_code.DESCRIPTOR.fields_by_name[category]
                .enum_type.values_by_name[code].number)
        error.message = message or _MESSAGES.get(code) or f"{code.replace('_', ' ').capitalize()}."
        for name, index in path:
            element = error.location.field_path_elements.add()
            element.field_name = name
            if index is not None:
                element.index = index
        if retry_delay is not None:
            error.details.quota_error_details.rate_scope = 2  # ACCOUNT
            error.details.quota_error_details.rate_name = "Number of operations per account"
            error.details.quota_error_details.retry_delay.FromNanoseconds(int(retry_delay * 1e9))

    def _failure_body(self, version: str, http: int, status: str, category: str, code: str, message: str,
                      path: list[tuple[str, int | None]] | None = None, retry_delay: float | None = None) -> Any:
        failure = _module(version, "errors.types.errors").GoogleAdsFailure.pb()()
        failure.request_id = self._request_id()
        self._add_error(failure, category, code, path or [], message, retry_delay)
        packed = any_pb2.Any()
        packed.Pack(failure)
        return _rpc_body(http, status, message if http != 400 else "Request contains an invalid argument.",
                         [json_format.MessageToDict(packed)])

    def _scripted_failure(self, version: str, failure: _Failure) -> Any:
        if failure.status == 429:
            return self._failure_body(version, 429, "RESOURCE_EXHAUSTED", "quota_error", failure.code or "RESOURCE_EXHAUSTED",
                                      "Resource has been exhausted (e.g. check quota).",
                                      retry_delay=30.0 if failure.retry_delay is None else failure.retry_delay)
        if failure.status >= 500:
            name = "UNAVAILABLE" if failure.status == 503 else "INTERNAL"
            code = failure.code or ("TRANSIENT_ERROR" if failure.status == 503 else "INTERNAL_ERROR")
            return self._failure_body(version, failure.status, name, "internal_error", code,
                                      "Internal error encountered.")
        if failure.code is not None:
            return self._failure_body(version, failure.status, "INVALID_ARGUMENT", "request_error", failure.code,
                                      "Request contains an invalid argument.")
        return _rpc_body(failure.status, "FAILED_PRECONDITION", "Scripted failure.")


# -- helpers -----------------------------------------------------------------------------------------

def _module(version: str, name: str) -> ModuleType:
    return importlib.import_module(f"google.ads.googleads.{version}.{name}")


def _category(failure: Any, kind_or_category: str, code: str) -> str:
    """The ErrorCode oneof field that has ``code``: the kind's own enum first, then any other."""
    fields = failure.DESCRIPTOR.fields_by_name["errors"].message_type.fields_by_name["error_code"] \
        .message_type.fields_by_name
    first = _OWN_ENUM.get(kind_or_category, kind_or_category)
    order = [first] + ["internal_error", "quota_error", "database_error", "field_error", "date_error",
                       "request_error", "collection_size_error"] + sorted(fields)
    for name in order:
        field_ = fields.get(name)
        if field_ is not None and field_.enum_type is not None and code in field_.enum_type.values_by_name:
            return name
    raise ValueError(f"no Google Ads error enum has {code}")


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _action_id(value: Any) -> str | None:
    match = _ACTION.match(value) if isinstance(value, str) else None
    return match.group(2) if match else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _TIME.match(value):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S%z")
    except ValueError:
        return None


def _check_identifiers(identifiers: list[Any], allowed: tuple[str, ...]) -> str | None:
    if len(identifiers) > 5:
        return "TOO_MANY"
    for entry in identifiers:
        kinds = [k for k in entry if k != "userIdentifierSource"]
        if len(kinds) != 1 or kinds[0] not in allowed:
            return "UNSUPPORTED_USER_IDENTIFIER"
        value = entry[kinds[0]]
        if kinds[0] == "addressInfo":
            hashed = [value.get(k) for k in ("hashedFirstName", "hashedLastName", "hashedStreetAddress") if k in value]
            if any(not isinstance(h, str) or not _HASH.match(h) for h in hashed):
                return "INVALID_USER_IDENTIFIER"
        elif not isinstance(value, str) or not _HASH.match(value):
            return "INVALID_USER_IDENTIFIER"
    return None


def _result_of(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    if kind == "click":
        keep = ("gclid", "gbraid", "wbraid", "conversionAction", "conversionDateTime", "userIdentifiers")
    elif kind == "call":
        keep = ("callerId", "callStartDateTime", "conversionAction", "conversionDateTime")
    else:
        keep = ("gclidDateTimePair", "orderId", "conversionAction", "adjustmentDateTime", "adjustmentType")
    return {k: row[k] for k in keep if k in row}


def _rpc_body(http: int, status: str, message: str, details: list[Any] | None = None) -> Any:
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _rpc_error(http: int, status: str, message: str) -> web.Response:
    return web.json_response(_rpc_body(http, status, message), status=http)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake Google Ads API and OAuth server.")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args(argv)

    async def run() -> None:
        fake = await FakeGoogleAds(port=args.port).start()
        print(f"fake Google Ads API on {fake.url} (OAuth token endpoint {fake.token_url})", flush=True)
        print(f"  GOOGLE_ADS_API_BASE={fake.url} GOOGLE_OAUTH_TOKEN_URL={fake.token_url}", flush=True)
        for name, value in fake.credentials.items():
            print(f"  GOOGLE_ADS_{name.upper()}={value}", flush=True)
        print(f"  accepted rows: GET {fake.url}/fake/accepted", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
