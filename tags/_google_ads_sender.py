"""The google_ads destination: batched uploads to the Google Ads REST API, with OAuth and partial failure.

One request per batch: ``POST {api_base}/{api_version}/customers/{id}:uploadClickConversions``
(or ``:uploadCallConversions``, ``:uploadConversionAdjustments``) with up to
2000 rows and ``partialFailure: true``, so one bad row does not sink the
other 1999. The batch key (``{customer_id}:{click|call|adjustment}``, set by
the tags) says which.
Ref: https://developers.google.com/google-ads/api/docs/best-practices/partial-failures

Reading the answer, row by row: a row without an error is delivered. Errors
come in ``partialFailureError.details[]`` (a ``GoogleAdsFailure``), each with
``location.fieldPathElements[0] = {"fieldName": "conversions", "index": N}``
naming its row; the tables in ``tags/_google_ads.py`` decide delivered (the
conversion is already there), retry or permanent. A whole-request error
(HTTP 4xx/5xx with ``{"error": {...}}``) applies to every row.

Rows that Google would call duplicates of each other (same order id, or the
same click, time and action) are sent once; the twin gets the same result.

OAuth: an access token from the refresh token, cached until shortly before it
expires, refreshed by one caller while the others wait, and once more on a
401. ``invalid_grant`` (the refresh token was revoked, or belongs to an OAuth
app in testing mode, whose refresh tokens last 7 days) cannot heal on its
own: sending stops for the destination (``paused`` is true, items stay in the
outbox, ``gateway_destination_paused`` is 1) until valid credentials are
configured and the gateway is restarted.
Ref: https://developers.google.com/identity/protocols/oauth2#expiration

In ``dry_run`` the exact request is recorded (credentials masked) and every
row counts as delivered; no OAuth call is made.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import metrics, sender
from gateway.delivery import Result
from gateway.durations import Duration
from gateway.sender import OutgoingRequest, PendingItem, SenderContext
from gateway.tag import TagConfig
from tags._google_ads import (
    ALREADY_THERE,
    ALREADY_THERE_ON_RETRY,
    DEFAULT_API_BASE,
    DEFAULT_API_VERSION,
    DEFAULT_RETRY_HORIZON,
    DEFAULT_TOKEN_URL,
    DESTINATION,
    HORIZON_RETRY_BASE,
    MAX_ROWS_PER_REQUEST,
    RETRY_WITHIN_HORIZON,
    TRANSIENT,
    UPLOADS,
    WAIT_THEN_RETRY,
    customer_id_digits,
    split_batch_key,
)

log = logging.getLogger("gateway.google_ads")

ROWS = Counter(
    "gateway_google_ads_rows",
    "Google Ads upload rows by kind (click, call, adjustment), outcome and Google's error code.",
    ["kind", "outcome", "code"],
)
REQUESTS = Counter(
    "gateway_google_ads_requests", "Google Ads upload requests by kind and HTTP status.", ["kind", "status"]
)

MESSAGE_CHARS = 300
# Errors whose whole-request status says "these credentials will not work until someone changes them".
# Ref: https://datatracker.ietf.org/doc/html/rfc6749#section-5.2
_PAUSING_OAUTH_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
_DEBUG_ENABLED_LAST_VERSION = 20  # debugEnabled left UploadClickConversionsRequest in v21


class Config(BaseModel):
    """The ``destinations.google_ads`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["live", "dry_run"] = Field(
        "live", description="live uploads; dry_run records the exact requests instead and makes no OAuth call."
    )
    api_base: str = Field(DEFAULT_API_BASE, description="Base URL of the Google Ads API (a fake's URL in tests).")
    api_version: str = Field(DEFAULT_API_VERSION, description="API version in the request path, e.g. v26; pin it.")
    token_url: str = Field(DEFAULT_TOKEN_URL, description="Google's OAuth 2.0 token endpoint.")
    developer_token: str = Field("", repr=False, validate_default=True,
                                 description="Google Ads API developer token (developer-token header).")
    client_id: str = Field("", validate_default=True, description="OAuth client id.")
    client_secret: str = Field("", repr=False, validate_default=True, description="OAuth client secret.")
    refresh_token: str = Field(
        "", repr=False, validate_default=True,
        description="OAuth refresh token with the https://www.googleapis.com/auth/adwords scope.",
    )
    login_customer_id: str = Field(
        "", description="Manager account id when uploading through a manager (login-customer-id header); 10 digits."
    )
    validate_only: bool = Field(False, description="Ask Google to validate without recording anything (validateOnly).")
    debug_enabled: bool = Field(
        False, description="debugEnabled for click conversions; exists in API versions up to v20 only."
    )
    job_id: int | None = Field(
        None, ge=1, lt=2**31, description="jobId sent with click conversions and adjustments, for Google's diagnostics."
    )
    flush_interval: Duration = Field(
        timedelta(seconds=10), description="How long an incomplete batch may wait to fill before it is sent."
    )
    max_batch_size: int = Field(
        MAX_ROWS_PER_REQUEST, ge=1, le=MAX_ROWS_PER_REQUEST, description="Rows per upload request (Google allows 2000)."
    )

    @field_validator("api_base", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError("must be an http:// or https:// URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"v\d{1,3}", value):
            raise ValueError("must look like v26")
        return value

    @field_validator("developer_token", "client_id", "client_secret", "refresh_token")
    @classmethod
    def _credential(cls, value: str, info: Any) -> str:
        value = value.strip()
        if not value and info.data.get("mode", "live") == "live":
            raise ValueError("must be set in live mode (it may be empty only with mode: dry_run)")
        return value

    @field_validator("login_customer_id", mode="before")
    @classmethod
    def _login_customer_id(cls, value: object) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        return customer_id_digits(value)

    @field_validator("debug_enabled")
    @classmethod
    def _debug_enabled(cls, value: bool, info: Any) -> bool:
        version = info.data.get("api_version")
        if value and version is not None and int(version[1:]) > _DEBUG_ENABLED_LAST_VERSION:
            raise ValueError(f"debugEnabled was removed from the API in v21; {version} has no such field")
        return value


@dataclass(frozen=True, slots=True)
class _Error:
    """One Google error: its code (the enum value, e.g. CLICK_NOT_FOUND) and message."""

    code: str
    message: str | None = None
    retry_after: float | None = None
    status: int | None = None  # HTTP status, for whole-request errors


class _Paused(Exception):
    pass


class _TokenUnavailable(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(code)


class Sender(sender.Sender):
    destination = DESTINATION

    def __init__(self, config: Config, tags: list[TagConfig], ctx: SenderContext) -> None:
        super().__init__(config, tags, ctx)
        self.max_batch_size = config.max_batch_size
        self.flush_interval = config.flush_interval.total_seconds()
        self._horizons: dict[str, timedelta] = {
            tag.name: tag.retry_horizon for tag in tags if isinstance(getattr(tag, "retry_horizon", None), timedelta)
        }
        self._base_headers = {"developer-token": config.developer_token, "Content-Type": "application/json"}
        if config.login_customer_id:
            self._base_headers["login-customer-id"] = config.login_customer_id
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_refresh_at: datetime | None = None
        self._token_lock = asyncio.Lock()
        self._paused_reason: str | None = None

    async def start(self) -> None:
        if self._session is None and self.config.mode == "live":
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.ctx.request_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def paused(self, batch_key: str) -> bool:
        return self._paused_reason is not None

    # -- one batch ---------------------------------------------------------------------------

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        parsed = split_batch_key(batch_key)
        if parsed is None:
            return [Result.permanent("bad_batch_key", "expected {customer_id}:{click|call|adjustment}")] * len(items)
        customer_id, kind = parsed
        rows, row_of = _dedupe(kind, items)

        if self.config.mode == "dry_run":  # no OAuth: the token is a placeholder, masked in the record anyway
            request = self._request(customer_id, kind, rows, token="dry-run")
            await self.ctx.record_dry_run(self.destination, batch_key, request, len(rows))
            results = [Result.delivered("dry_run")] * len(items)
        elif self._paused_reason is not None:
            results = [self._paused_result()] * len(items)
        else:
            errors = await self._upload(customer_id, kind, rows)
            firsts: dict[int, Result] = {}
            results = []
            for item, row in zip(items, row_of):
                if row not in firsts:  # a twin gets the same result as the row that was sent
                    error = errors if isinstance(errors, _Error) else errors.get(row)
                    firsts[row] = self._classify(error, item)
                results.append(firsts[row])
        for result in results:
            ROWS.labels(kind, result.outcome, result.code or "").inc()
        return results

    def _request(self, customer_id: str, kind: str, rows: list[dict[str, Any]], token: str) -> OutgoingRequest:
        method, list_field, _ = UPLOADS[kind]
        body: dict[str, Any] = {list_field: rows, "partialFailure": True}
        if self.config.validate_only:
            body["validateOnly"] = True
        if self.config.debug_enabled and kind == "click":
            body["debugEnabled"] = True
        if self.config.job_id is not None and kind != "call":  # UploadCallConversionsRequest has no jobId
            body["jobId"] = self.config.job_id
        url = f"{self.config.api_base}/{self.config.api_version}/customers/{customer_id}:{method}"
        headers = {**self._base_headers, "Authorization": f"Bearer {token}"}
        return OutgoingRequest("POST", url, headers, orjson.dumps(body))

    async def _upload(self, customer_id: str, kind: str, rows: list[dict[str, Any]]) -> _Error | dict[int, _Error]:
        """Errors by row index, or one error for the whole request."""
        stale: str | None = None
        for _ in range(2):
            try:
                token = await self._access_token(stale)
            except _Paused:
                return _Error(self._paused_reason or "invalid_grant", self._paused_message())
            except _TokenUnavailable as exc:
                return _Error(exc.code, exc.message)
            request = self._request(customer_id, kind, rows, token)
            if self.ctx.observe is not None:
                self.ctx.observe(request)
            try:
                status, payload, headers = await self._post(request)
            except asyncio.TimeoutError:
                return _Error("timeout", "no answer within delivery.request_timeout")
            except aiohttp.ClientError as exc:
                return _Error("connection_error", type(exc).__name__)
            REQUESTS.labels(kind, str(status)).inc()
            if status == 401 and stale is None:
                stale = token  # refresh once and try again
                continue
            break
        if status == 200 and isinstance(payload, dict):
            return _row_errors(payload, UPLOADS[kind][2], len(rows))
        return _request_error(status, payload, headers)

    async def _post(self, request: OutgoingRequest) -> tuple[int, Any, dict[str, str]]:
        if self._session is None:
            raise RuntimeError("google_ads sender used before start()")
        async with self._session.post(request.url, headers=request.headers, data=request.body) as response:
            raw = await response.read()
            try:
                payload = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                payload = None
            return response.status, payload, dict(response.headers)

    def _classify(self, error: _Error | None, item: PendingItem) -> Result:
        if error is None:
            return Result.delivered("validate_only" if self.config.validate_only else None)
        code, message = error.code, error.message
        if code in _PAUSING_OAUTH_ERRORS:
            return Result.retry(code, message)
        if code in ALREADY_THERE or (code in ALREADY_THERE_ON_RETRY and item.attempts > 0):
            return Result.delivered(code)
        if code in RETRY_WITHIN_HORIZON:
            horizon = self._horizons.get(item.tag, DEFAULT_RETRY_HORIZON)
            left = (item.created_at + horizon - self.ctx.now()).total_seconds()
            if left <= 0:
                return Result.permanent(code, message)
            wait = HORIZON_RETRY_BASE.total_seconds() * 2 ** min(item.attempts, 20)
            return Result.retry(code, message, min(left, wait))
        if code in WAIT_THEN_RETRY:
            return Result.retry(code, message, WAIT_THEN_RETRY[code].total_seconds())
        if code in TRANSIENT or code in ("timeout", "connection_error", "bad_response", "oauth_unavailable") \
                or (error.status is not None and (error.status in (408, 429) or error.status >= 500)):
            return Result.retry(code, message, error.retry_after)
        return Result.permanent(code, message)

    # -- OAuth -----------------------------------------------------------------------------------

    async def _access_token(self, stale: str | None = None) -> str:
        """A valid access token; ``stale`` is one Google just refused (a 401), so it is not reused."""
        token = self._fresh(stale)
        if token is not None:
            return token
        async with self._token_lock:  # one refresh in flight; the others wait and reuse its token
            token = self._fresh(stale)
            if token is not None:
                return token
            if self._paused_reason is not None:
                raise _Paused()
            token, expires_in = await self._refresh()
            margin = min(300.0, expires_in / 10)
            self._token = token
            self._token_refresh_at = self.ctx.now() + timedelta(seconds=max(0.0, expires_in - margin))
            return token

    def _fresh(self, stale: str | None) -> str | None:
        token, until = self._token, self._token_refresh_at
        if token is None or token == stale or until is None or self.ctx.now() >= until:
            return None
        return token

    async def _refresh(self) -> tuple[str, float]:
        if self._session is None:
            raise RuntimeError("google_ads sender used before start()")
        form = {
            "grant_type": "refresh_token",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "refresh_token": self.config.refresh_token,
        }
        try:
            async with self._session.post(self.config.token_url, data=form) as response:
                status = response.status
                raw = await response.read()
        except asyncio.TimeoutError:
            metrics.TOKEN_REFRESHES.labels(self.destination, "error").inc()
            raise _TokenUnavailable("oauth_unavailable", "the token endpoint did not answer in time") from None
        except aiohttp.ClientError as exc:
            metrics.TOKEN_REFRESHES.labels(self.destination, "error").inc()
            raise _TokenUnavailable("oauth_unavailable", f"token endpoint: {type(exc).__name__}") from None
        try:
            payload = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        token = payload.get("access_token")
        if status == 200 and isinstance(token, str) and token:
            expires_in = payload.get("expires_in")
            metrics.TOKEN_REFRESHES.labels(self.destination, "ok").inc()
            return token, float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600.0
        error = payload.get("error") if isinstance(payload.get("error"), str) else None
        if error in _PAUSING_OAUTH_ERRORS:
            metrics.TOKEN_REFRESHES.labels(self.destination, error).inc()
            self._pause(error, payload.get("error_description"))
            raise _Paused()
        metrics.TOKEN_REFRESHES.labels(self.destination, "error").inc()
        detail = f"token endpoint answered HTTP {status}" + (f" {error}" if error else "")
        raise _TokenUnavailable("oauth_unavailable", detail)

    def _pause(self, reason: str, description: object) -> None:
        self._paused_reason = reason
        metrics.DESTINATION_PAUSED.labels(self.destination, reason).set(1)
        log.error(
            "google_ads: the token endpoint refused the OAuth credentials (%s%s); sending is paused and items stay "
            "in the outbox. Create a new refresh token (an OAuth app in 'Testing' status issues tokens that expire "
            "after 7 days; publish it to avoid that), update the google_ads credentials and restart the gateway.",
            reason, f": {str(description)[:120]}" if isinstance(description, str) and description else "",
            extra={"destination": self.destination, "reason": reason},
        )

    def _paused_message(self) -> str:
        return f"sending paused: OAuth {self._paused_reason}; fix the credentials and restart"

    def _paused_result(self) -> Result:
        return Result.retry(self._paused_reason or "invalid_grant", self._paused_message())


# -- request rows ---------------------------------------------------------------------------------

def _dedupe(kind: str, items: list[PendingItem]) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows to send, each once, and for every item the index of its row.

    Google's own duplicate rules: an order id is unique per conversion action
    (DUPLICATE_ORDER_ID); a click and conversion time per action
    (DUPLICATE_CLICK_CONVERSION_IN_REQUEST); a call likewise; an adjustment by
    its conversion, type and adjustment time (DUPLICATE_ADJUSTMENT_IN_REQUEST),
    an enhancement by order id (DUPLICATE_ENHANCEMENT_IN_REQUEST).
    """
    rows: list[dict[str, Any]] = []
    index: dict[Any, int] = {}
    row_of: list[int] = []
    for item in items:
        key = _identity(kind, item.item)
        at = index.get(key)
        if at is None:
            at = index[key] = len(rows)
            rows.append(item.item)
        row_of.append(at)
    return rows, row_of


def _identity(kind: str, row: dict[str, Any]) -> Any:
    action = row.get("conversionAction")
    if kind == "click":
        if row.get("orderId"):
            return ("order", action, row["orderId"])
        for name in ("gclid", "gbraid", "wbraid"):
            if row.get(name):
                return (name, action, row[name], row.get("conversionDateTime"))
    elif kind == "call":
        return ("call", action, row.get("callerId"), row.get("callStartDateTime"), row.get("conversionDateTime"))
    elif kind == "adjustment":
        if row.get("adjustmentType") == "ENHANCEMENT":
            return ("enhancement", action, row.get("orderId"))
        pair = row.get("gclidDateTimePair") or {}
        return (row.get("adjustmentType"), action, row.get("orderId"), pair.get("gclid"),
                pair.get("conversionDateTime"), row.get("adjustmentDateTime"))
    return ("row", orjson.dumps(row, option=orjson.OPT_SORT_KEYS))


# -- reading answers ----------------------------------------------------------------------------------

def _row_errors(payload: dict[str, Any], list_field: str, row_count: int) -> dict[int, _Error]:
    """Errors of a 200 answer by row; an error without a row index applies to every row."""
    failure = payload.get("partialFailureError")
    by_row: dict[int, _Error] = {}
    if not isinstance(failure, dict):
        return by_row
    unplaced: list[_Error] = []
    for error in _google_errors(failure):
        parsed = _error_of(error)
        row = _row_index(error, list_field)
        if row is None or not 0 <= row < row_count:
            unplaced.append(parsed)
        elif row not in by_row or _worse(parsed, by_row[row]):
            by_row[row] = parsed
    if not unplaced and not by_row:  # a failure Status without GoogleAdsFailure details
        unplaced.append(_Error(_status_code(failure, "PARTIAL_FAILURE"), _short(failure.get("message"))))
    for parsed in unplaced:
        for row in range(row_count):
            if row not in by_row:
                by_row[row] = parsed
    return by_row


def _request_error(status: int, payload: Any, headers: dict[str, str]) -> _Error:
    error = payload.get("error") if isinstance(payload, dict) else None
    retry_after = _header_seconds(headers)
    if not isinstance(error, dict):
        code = "bad_response" if status == 200 else f"http_{status}"
        return _Error(code, f"HTTP {status}", retry_after, status)
    details = _google_errors(error)
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            retry_after = _duration(detail.get("retryDelay")) or retry_after
    if details:
        first = _error_of(details[0])
        return _Error(first.code, first.message, first.retry_after or retry_after, status)
    return _Error(_status_code(error, f"http_{status}"), _short(error.get("message")), retry_after, status)


def _google_errors(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``errors`` of every GoogleAdsFailure in a google.rpc.Status's details."""
    found = []
    for detail in status.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(".errors.GoogleAdsFailure"):
            found.extend(e for e in detail.get("errors") or () if isinstance(e, dict))
    return found


def _error_of(error: dict[str, Any]) -> _Error:
    codes = error.get("errorCode")
    code = "UNKNOWN"
    if isinstance(codes, dict) and codes:
        code = str(next(iter(codes.values())))
    details = error.get("details")
    retry_after = None
    if isinstance(details, dict) and isinstance(details.get("quotaErrorDetails"), dict):
        retry_after = _duration(details["quotaErrorDetails"].get("retryDelay"))
    # ``message`` is Google's text; ``trigger`` (the offending value) is left out: it may be personal data.
    return _Error(code, _short(error.get("message")), retry_after)


def _row_index(error: dict[str, Any], list_field: str) -> int | None:
    location = error.get("location")
    elements = location.get("fieldPathElements") if isinstance(location, dict) else None
    if not elements or not isinstance(elements[0], dict):
        return None
    first = elements[0]
    if first.get("fieldName") not in (list_field, "conversions", "conversionAdjustments", "conversion_adjustments"):
        return None
    index = first.get("index", 0)
    return index if isinstance(index, int) else None


_RANK = {"delivered": 0, "retry": 1, "permanent": 2}


def _worse(new: _Error, old: _Error) -> bool:
    """Of two errors for one row, the one that is harder to recover from wins."""
    return _rank(new.code) > _rank(old.code)


def _rank(code: str) -> int:
    if code in ALREADY_THERE or code in ALREADY_THERE_ON_RETRY:
        return _RANK["delivered"]
    if code in TRANSIENT or code in WAIT_THEN_RETRY or code in RETRY_WITHIN_HORIZON:
        return _RANK["retry"]
    return _RANK["permanent"]


def _status_code(status: dict[str, Any], fallback: str) -> str:
    value = status.get("status")
    return value if isinstance(value, str) and value else fallback


def _duration(value: object) -> float | None:
    """A protobuf Duration in JSON (``"30s"``, ``"1.5s"``) as seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            seconds = float(value[:-1])
        except ValueError:
            return None
        return seconds if seconds >= 0 else None
    return None


def _header_seconds(headers: dict[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after" and value.strip().isdigit():
            return float(value.strip())
    return None


def _short(message: object) -> str | None:
    if not isinstance(message, str) or not message:
        return None
    text = " ".join(message.split())
    return text[:MESSAGE_CHARS]
