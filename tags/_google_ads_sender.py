"""The google_ads destination: its config, which API each upload goes to, and reading the outcome per item.

Two routes (``api``):

- ``data_manager`` (the default): click conversions, enhanced conversions for
  leads, call conversions and restatements named by order id go to the Data
  Manager API (``tags/_data_manager_route.py``); retractions, enhancements
  and restatements named by gclid and time, which it does not take, go to
  the Google Ads API's ``ConversionAdjustmentUploadService``
  (``tags/_google_ads_api.py``), which the 2026 announcements did not close.
  Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/upgrade (conversion adjustments)
- ``google_ads_api``: everything to the Google Ads API, for accounts Google
  still allowlists for ``UploadClickConversions``.

The batch key (``{customer_id}:{click|call|adjustment|restatement}``, set by
the tags) says what a batch holds; the route table below says where it goes.
OAuth (``tags/_google_oauth.py``) asks for the scope of the API it calls; no
developer token is needed (sunset 2026-09-09), one is sent only when set.

Rows that Google would call duplicates of each other are sent once; the twin
gets the same result. Google's codes decide each item's outcome with the
tables in ``tags/_google_ads.py`` (delivered, retry, permanent, skipped,
superseded). Data Manager requests are processed after they are accepted:
each ``requestId`` is handed to ``SenderContext.record_request`` and its
status is fetched later (``request_status``, called by
``gateway.vendor_requests``).

In ``dry_run`` the exact requests are recorded (credentials masked) and every
row counts as delivered; no OAuth call is made.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import sender
from gateway.delivery import Result
from gateway.durations import Duration
from gateway.sender import PendingItem, RequestStatus, SenderContext, SentRequest
from gateway.tag import TagConfig
from tags._data_manager import DEFAULT_DATA_MANAGER_BASE, MAX_EVENTS_PER_REQUEST, action_id_of, destination, event_of
from tags._data_manager_route import DataManagerRoute
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
    SKIPPED,
    SUPERSEDED,
    TRANSIENT,
    WAIT_THEN_RETRY,
    customer_id_digits,
    split_batch_key,
)
from tags._google_ads_answers import GoogleError
from tags._google_ads_api import AdsApiRoute, dedupe
from tags._google_oauth import PAUSING_OAUTH_ERRORS, GoogleOAuth

log = logging.getLogger("gateway.google_ads")

ROWS = Counter(
    "gateway_google_ads_rows",
    "Google Ads upload rows by kind (click, call, adjustment, restatement), API, outcome and Google's error code.",
    ["kind", "api", "outcome", "code"],
)

Api = Literal["data_manager", "google_ads_api"]
# Where each kind of row goes on each route.
ROUTES: dict[str, dict[str, Api]] = {
    "data_manager": {"click": "data_manager", "call": "data_manager", "restatement": "data_manager",
                     "adjustment": "google_ads_api"},
    "google_ads_api": {"click": "google_ads_api", "call": "google_ads_api", "restatement": "google_ads_api",
                       "adjustment": "google_ads_api"},
}
_DEBUG_ENABLED_LAST_VERSION = 20  # debugEnabled left UploadClickConversionsRequest in v21
# Data Manager reasons that clear on their own. Ref: the ErrorReason enum (google.ads.datamanager.v1).
_DATA_MANAGER_TRANSIENT = frozenset({"INTERNAL_ERROR", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
# "The conversion action was created too recently": like the Ads API's TOO_RECENT_CONVERSION_ACTION (6 hours).
_DATA_MANAGER_WAIT = {"CONVERSION_ACTION_TOO_RECENTLY_CREATED": timedelta(hours=6)}


class Config(BaseModel):
    """The ``destinations.google_ads`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["live", "dry_run"] = Field(
        "live", description="live uploads; dry_run records the exact requests instead and makes no OAuth call."
    )
    api: Api = Field(
        "data_manager",
        description="data_manager (default; the only way in for offline conversions since 2026-06-15) or "
        "google_ads_api (for accounts Google still allowlists for UploadClickConversions).",
    )
    data_manager_base: str = Field(DEFAULT_DATA_MANAGER_BASE, description="Base URL of the Data Manager API.")
    api_base: str = Field(DEFAULT_API_BASE, description="Base URL of the Google Ads API (adjustments it alone takes).")
    api_version: str = Field(DEFAULT_API_VERSION, description="Google Ads API version in the request path; pin it.")
    token_url: str = Field(DEFAULT_TOKEN_URL, description="Google's OAuth 2.0 token endpoint.")
    developer_token: str = Field(
        "", repr=False,
        description="Optional. Developer tokens were sunset on 2026-09-09; the developer-token header is sent only "
        "when one is set, and Google ignores it.",
    )
    client_id: str = Field("", validate_default=True, description="OAuth client id (of the Cloud project with the APIs enabled).")
    client_secret: str = Field("", repr=False, validate_default=True, description="OAuth client secret.")
    refresh_token: str = Field(
        "", repr=False, validate_default=True,
        description="OAuth refresh token granted https://www.googleapis.com/auth/datamanager (and "
        "https://www.googleapis.com/auth/adwords for retractions and enhancements, or for api: google_ads_api).",
    )
    login_customer_id: str = Field(
        "", description="Manager account id when uploading through a manager (loginAccount / login-customer-id); "
        "10 digits. Not needed when the OAuth user has access to the account itself.",
    )
    validate_only: bool = Field(False, description="Ask Google to validate without recording anything (validateOnly).")
    debug_enabled: bool = Field(
        False, description="debugEnabled for Google Ads API click conversions; exists in API versions up to v20 only."
    )
    job_id: int | None = Field(
        None, ge=1, lt=2**31, description="jobId sent with Google Ads API click conversions and adjustments."
    )
    flush_interval: Duration = Field(
        timedelta(seconds=10), description="How long an incomplete batch may wait to fill before it is sent."
    )
    max_batch_size: int = Field(
        MAX_ROWS_PER_REQUEST, ge=1, le=min(MAX_ROWS_PER_REQUEST, MAX_EVENTS_PER_REQUEST),
        description="Rows per request (both APIs allow 2000).",
    )

    @field_validator("api_base", "token_url", "data_manager_base")
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

    @field_validator("developer_token")
    @classmethod
    def _optional_token(cls, value: str) -> str:
        return value.strip()

    @field_validator("client_id", "client_secret", "refresh_token")
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


class Sender(sender.Sender):
    destination = DESTINATION

    def __init__(self, config: Config, tags: list[TagConfig], ctx: SenderContext) -> None:
        super().__init__(config, tags, ctx)
        self.max_batch_size = config.max_batch_size
        self.flush_interval = config.flush_interval.total_seconds()
        self._horizons: dict[str, timedelta] = {
            tag.name: tag.retry_horizon for tag in tags if isinstance(getattr(tag, "retry_horizon", None), timedelta)
        }
        self.oauth = GoogleOAuth(destination=self.destination, token_url=config.token_url, client_id=config.client_id,
                                 client_secret=config.client_secret, refresh_token=config.refresh_token, now=ctx.now)
        self.ads_api = AdsApiRoute(config, self.oauth, ctx.observe)
        self.data_manager = DataManagerRoute(config, self.oauth, ctx.observe)
        self._routes = ROUTES[config.api]
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None and self.config.mode == "live":
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.ctx.request_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def paused(self, batch_key: str) -> bool:
        return self.oauth.paused_reason is not None

    def route_of(self, kind: str) -> Api:
        return self._routes[kind]

    # -- one batch ---------------------------------------------------------------------------

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        parsed = split_batch_key(batch_key)
        if parsed is None:
            return [Result.permanent("bad_batch_key", "expected {customer_id}:{click|call|adjustment|restatement}")
                    ] * len(items)
        customer_id, kind = parsed
        api = self._routes[kind]
        rows, row_of = dedupe(kind, items)

        if self.config.mode == "dry_run":  # no OAuth: the token is a placeholder, masked in the record anyway
            for request in self._dry_run_requests(customer_id, kind, api, rows):
                await self.ctx.record_dry_run(self.destination, batch_key, request[0], request[1])
            results = [Result.delivered("dry_run")] * len(items)
        elif self.oauth.paused_reason is not None:
            results = [Result.retry(self.oauth.paused_reason, self.oauth.paused_message())] * len(items)
        else:
            session = self._live_session()
            if api == "data_manager":
                errors = await self._ingest(session, batch_key, customer_id, kind, rows, items, row_of)
            else:
                errors = await self.ads_api.upload(session, customer_id, kind, rows)
            firsts: dict[int, Result] = {}
            results = []
            for item, row in zip(items, row_of):
                if row not in firsts:  # a twin gets the same result as the row that was sent
                    error = errors if isinstance(errors, GoogleError) else errors.get(row)
                    firsts[row] = self._classify(error, item)
                results.append(firsts[row])
        for result in results:
            ROWS.labels(kind, api, result.outcome, result.code or "").inc()
        return results

    def _live_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("google_ads sender used before start()")
        return self._session

    def _dry_run_requests(self, customer_id: str, kind: str, api: Api, rows: list[dict[str, Any]]) -> list[Any]:
        if api == "google_ads_api":
            return [(self.ads_api.request(customer_id, kind, rows, token="dry-run"), len(rows))]
        out = []
        for action_id, indexes in _by_action(rows).items():
            events = [event_of(kind, rows[i]) for i in indexes]
            target = destination(customer_id, action_id, self.config.login_customer_id)
            out.append((self.data_manager.request(target, events, token="dry-run"), len(events)))
        return out

    async def _ingest(self, session: aiohttp.ClientSession, batch_key: str, customer_id: str, kind: str,
                      rows: list[dict[str, Any]], items: list[PendingItem], row_of: list[int]) -> dict[int, GoogleError]:
        """Rows to the Data Manager API, one destination (conversion action) per request; errors by row."""
        failed: dict[int, GoogleError] = {}
        for action_id, indexes in _by_action(rows).items():
            target = destination(customer_id, action_id, self.config.login_customer_id)
            ingested = await self.data_manager.ingest(session, target, [event_of(kind, rows[i]) for i in indexes])
            for local, error in ingested.failed.items():
                failed[indexes[local]] = error
            if self.config.validate_only:
                continue  # validated, not recorded: there is nothing to follow up
            for request_id, locals_ in ingested.accepted:
                sent_rows = {indexes[i] for i in locals_}
                keys = tuple(item.idempotency_key for item, row in zip(items, row_of) if row in sent_rows)
                await self._keep(SentRequest(self.destination, batch_key, request_id, keys, self.ctx.now()))
        return failed

    async def _keep(self, request: SentRequest) -> None:
        if self.ctx.record_request is None:
            return
        try:
            await self.ctx.record_request(request)
        except Exception as exc:  # noqa: BLE001 - the events were accepted; only the follow-up is lost
            log.warning("could not keep a Data Manager request id for its status check",
                        extra={"destination": self.destination, "request_id": request.request_id,
                               "error": type(exc).__name__})

    async def request_status(self, request_id: str) -> RequestStatus | None:
        if self.config.mode != "live" or self.oauth.paused_reason is not None:
            return None
        return await self.data_manager.retrieve_status(self._live_session(), request_id)

    def _classify(self, error: GoogleError | None, item: PendingItem) -> Result:
        if error is None:
            return Result.delivered("validate_only" if self.config.validate_only else None)
        code, message = error.code, error.message
        if code in PAUSING_OAUTH_ERRORS:
            return Result.retry(code, message)
        if code in ALREADY_THERE or (code in ALREADY_THERE_ON_RETRY and item.attempts > 0):
            return Result.delivered(code)
        if code in SKIPPED:
            return Result.skipped(code, message)
        if code in SUPERSEDED:
            return Result.superseded(code, message)
        if code in RETRY_WITHIN_HORIZON:
            horizon = self._horizons.get(item.tag, DEFAULT_RETRY_HORIZON)
            left = (item.created_at + horizon - self.ctx.now()).total_seconds()
            if left <= 0:
                return Result.permanent(code, message)
            wait = HORIZON_RETRY_BASE.total_seconds() * 2 ** min(item.attempts, 20)
            return Result.retry(code, message, min(left, wait))
        if code in WAIT_THEN_RETRY or code in _DATA_MANAGER_WAIT:
            return Result.retry(code, message, (WAIT_THEN_RETRY.get(code) or _DATA_MANAGER_WAIT[code]).total_seconds())
        if code in TRANSIENT or code in _DATA_MANAGER_TRANSIENT \
                or code in ("timeout", "connection_error", "bad_response", "oauth_unavailable") \
                or (error.status is not None and (error.status in (408, 429) or error.status >= 500)):
            return Result.retry(code, message, error.retry_after)
        return Result.permanent(code, message)


def _by_action(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indexes by conversion action id: a Data Manager destination is one conversion action."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[action_id_of(row)].append(index)
    return dict(groups)
