"""The Google Ads API route: ``POST {api_base}/{api_version}/customers/{id}:upload...`` with partial failure.

One request per batch, up to 2000 rows and ``partialFailure: true``, so one
bad row does not sink the other 1999. Since 2026-06-15 Google refuses
``UploadClickConversions`` from developers who did not import between
December 2025 and May 2026 (CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE); this
route stays for accounts Google still allowlists (``api: google_ads_api``)
and, on the Data Manager route, for the adjustments the Data Manager API
does not cover (retractions, enhancements, restatements without an order id).
Ref: https://developers.google.com/ads/blog/posts/2026/05/changes-to-offline-click-conversion
Ref: https://developers.google.com/google-ads/api/docs/best-practices/partial-failures

The ``developer-token`` header is sent only when one is configured: tokens
were sunset on 2026-09-09 and the servers ignore the header; API access
belongs to the Cloud project that owns the OAuth client.
Ref: https://developers.google.com/google-ads/api/docs/api-policy/developer-token
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import aiohttp
import orjson
from prometheus_client import Counter

from gateway.sender import OutgoingRequest, PendingItem
from tags._google_ads import DATA_MANAGER_EXTRAS, UPLOADS
from tags._google_ads_answers import GoogleError, request_error, row_errors
from tags._google_oauth import ADS_API_SCOPE, GoogleOAuth, OAuthPaused, TokenUnavailable

REQUESTS = Counter(
    "gateway_google_ads_requests", "Google Ads upload requests by kind and HTTP status.", ["kind", "status"]
)


class AdsApiRoute:
    """Builds and sends one upload request for the Google Ads API and reads its answer by row."""

    def __init__(self, config: Any, oauth: GoogleOAuth, observe: Callable[[OutgoingRequest], None] | None) -> None:
        self.config = config
        self.oauth = oauth
        self.observe = observe
        self.headers = {"Content-Type": "application/json"}
        if config.developer_token:
            self.headers["developer-token"] = config.developer_token
        if config.login_customer_id:
            self.headers["login-customer-id"] = config.login_customer_id

    def request(self, customer_id: str, kind: str, rows: list[dict[str, Any]], token: str) -> OutgoingRequest:
        method, list_field, _ = UPLOADS[kind]
        body: dict[str, Any] = {list_field: [ads_row(row) for row in rows], "partialFailure": True}
        if self.config.validate_only:
            body["validateOnly"] = True
        if self.config.debug_enabled and kind == "click":
            body["debugEnabled"] = True
        if self.config.job_id is not None and kind != "call":  # UploadCallConversionsRequest has no jobId
            body["jobId"] = self.config.job_id
        url = f"{self.config.api_base}/{self.config.api_version}/customers/{customer_id}:{method}"
        return OutgoingRequest("POST", url, {**self.headers, "Authorization": f"Bearer {token}"}, orjson.dumps(body))

    async def upload(self, session: aiohttp.ClientSession, customer_id: str, kind: str,
                     rows: list[dict[str, Any]]) -> GoogleError | dict[int, GoogleError]:
        """Errors by row index, or one error for the whole request."""
        stale: str | None = None
        for _ in range(2):
            try:
                token = await self.oauth.token(session, ADS_API_SCOPE, stale)
            except OAuthPaused:
                return GoogleError(self.oauth.paused_reason or "invalid_grant", self.oauth.paused_message())
            except TokenUnavailable as exc:
                return GoogleError(exc.code, exc.message)
            request = self.request(customer_id, kind, rows, token)
            if self.observe is not None:
                self.observe(request)
            try:
                status, payload, headers = await post_json(session, request)
            except asyncio.TimeoutError:
                return GoogleError("timeout", "no answer within delivery.request_timeout")
            except aiohttp.ClientError as exc:
                return GoogleError("connection_error", type(exc).__name__)
            REQUESTS.labels(kind, str(status)).inc()
            if status == 401 and stale is None:
                stale = token  # refresh once and try again
                continue
            break
        if status == 200 and isinstance(payload, dict):
            return row_errors(payload, UPLOADS[kind][2], len(rows))
        return request_error(status, payload, headers)


def ads_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as the Google Ads API takes it: without what only the Data Manager API reads."""
    if DATA_MANAGER_EXTRAS in row:
        return {k: v for k, v in row.items() if k != DATA_MANAGER_EXTRAS}
    return row


async def post_json(session: aiohttp.ClientSession, request: OutgoingRequest) -> tuple[int, Any, dict[str, str]]:
    """Send one request; its status, its JSON body (None when it has none or it is not JSON) and its headers."""
    async with session.request(request.method, request.url, headers=request.headers,
                               data=request.body or None) as response:
        raw = await response.read()
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        return response.status, payload, dict(response.headers)


def dedupe(kind: str, items: list[PendingItem]) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows to send, each once, and for every item the index of its row.

    Google's own duplicate rules: an order id is unique per conversion action
    (DUPLICATE_ORDER_ID); a click and conversion time per action
    (DUPLICATE_CLICK_CONVERSION_IN_REQUEST); a call likewise; an adjustment by
    its conversion, type and adjustment time (DUPLICATE_ADJUSTMENT_IN_REQUEST),
    an enhancement by order id (DUPLICATE_ENHANCEMENT_IN_REQUEST). The Data
    Manager API treats a second event with the same transaction id as an
    adjustment of the first, so sending twins once matters there too.
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
    elif kind in ("adjustment", "restatement"):
        if row.get("adjustmentType") == "ENHANCEMENT":
            return ("enhancement", action, row.get("orderId"))
        pair = row.get("gclidDateTimePair") or {}
        return (row.get("adjustmentType"), action, row.get("orderId"), pair.get("gclid"),
                pair.get("conversionDateTime"), row.get("adjustmentDateTime"))
    return ("row", orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
