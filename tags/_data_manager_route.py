"""The Data Manager API route: ``POST {data_manager_base}/v1/events:ingest``, fail-fast, and request status later.

The API "uses a fast-fail model. If a request contains structural errors or
if any record fails validation for a required field, the entire request
fails, and the API does not process any of the data in that request." The
answer is a google.rpc.Status: ``error.status`` (INVALID_ARGUMENT, ...),
``error.code`` (the HTTP status) and ``details[]`` holding an ``ErrorInfo``
(``reason``: an ``ErrorReason`` such as INVALID_FORMAT) and a ``BadRequest``
whose ``fieldViolations[].field`` is a path such as
``events[3].adIdentifiers.gclid``.
Ref: https://developers.google.com/data-manager/api/devguides/concepts/understand-errors
Ref: https://developers.google.com/data-manager/api/reference/rest/v1/BadRequest
Ref: https://developers.google.com/data-manager/api/reference/rpc/google.ads.datamanager.v1#errorreason

So one bad event would hold up 1,999 good ones. ``ingest`` removes the
events the field violations name (each gets Google's reason) and sends the
rest again at once; an invalid request that names no event is split in
halves until the bad event is alone. A request-level error (credentials,
permission, quota, a bad destination) applies to every event.

An accepted request is processed later: the answer is ``{"requestId": ...}``
and ``GET /v1/requestStatus:retrieve?requestId=`` says, per destination,
PROCESSING, SUCCESS, PARTIAL_SUCCESS or FAILED with error counts by
``ProcessingErrorReason`` ("Request status is only available for
approximately 50 days", REQUEST_TOO_OLD).
Ref: https://developers.google.com/data-manager/api/reference/rest/v1/requestStatus/retrieve
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

import aiohttp
import orjson
from prometheus_client import Counter

from gateway.sender import OutgoingRequest, RequestStatus
from tags._data_manager import INGEST_PATH, STATUS_PATH, ingest_body
from tags._google_ads_answers import GoogleError, duration, header_seconds, short, status_code
from tags._google_ads_api import post_json
from tags._google_oauth import DATA_MANAGER_SCOPE, GoogleOAuth, OAuthPaused, TokenUnavailable

REQUESTS = Counter(
    "gateway_data_manager_requests", "Data Manager API requests by method and HTTP status.", ["method", "status"]
)

_EVENT_FIELD = re.compile(r"(?:^|\.)events\[(\d+)\]")
_STATES = {"SUCCESS": "success", "PROCESSING": "processing", "PARTIAL_SUCCESS": "partial_success",
           "FAILED": "failed"}


@dataclass(slots=True)
class Ingested:
    """What sending a list of events came to: accepted requests, and errors by event index."""

    accepted: list[tuple[str, list[int]]] = field(default_factory=list)  # (requestId, event indexes)
    failed: dict[int, GoogleError] = field(default_factory=dict)


class DataManagerRoute:
    def __init__(self, config: Any, oauth: GoogleOAuth, observe: Callable[[OutgoingRequest], None] | None) -> None:
        self.config = config
        self.oauth = oauth
        self.observe = observe
        self.base = config.data_manager_base

    def request(self, destination: dict[str, Any], events: list[dict[str, Any]], token: str) -> OutgoingRequest:
        body = ingest_body(destination, events, self.config.validate_only)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        return OutgoingRequest("POST", self.base + INGEST_PATH, headers, orjson.dumps(body))

    async def ingest(self, session: aiohttp.ClientSession, destination: dict[str, Any],
                     events: list[dict[str, Any]]) -> Ingested:
        """Send the events, dropping those Google names as invalid and resending the rest, until none is left."""
        out = Ingested()
        queue: list[list[int]] = [list(range(len(events)))]
        budget = 2 * len(events) + 4  # every round removes an event or halves a group: this bounds the requests
        while queue and budget > 0:
            group = queue.pop(0)
            if not group:
                continue
            budget -= 1
            answer = await self._post(session, destination, [events[i] for i in group])
            if isinstance(answer, str):
                out.accepted.append((answer, group))
                continue
            error, named = answer
            if named:
                for local, event_error in named.items():
                    out.failed[group[local]] = event_error
                queue.insert(0, [index for local, index in enumerate(group) if local not in named])
            elif _about_the_events(error) and len(group) > 1:
                half = len(group) // 2
                queue[0:0] = [group[:half], group[half:]]
            elif _about_the_events(error):  # the bad event, alone at last
                out.failed[group[0]] = error
            else:  # about the request (credentials, quota, the destination): every event left shares it
                for index in group + [i for rest in queue for i in rest]:
                    out.failed[index] = error
                queue.clear()
        for index in (i for rest in queue for i in rest):  # only if the budget ran out, which it should not
            out.failed[index] = GoogleError("bisect_budget_exhausted", "the request was split too often")
        return out

    async def _post(self, session: aiohttp.ClientSession, destination: dict[str, Any],
                    events: list[dict[str, Any]]) -> str | tuple[GoogleError, dict[int, GoogleError]]:
        """The requestId of an accepted request, or the error and the errors of the events it names."""
        answer = await self._call(session, "ingest", lambda token: self.request(destination, events, token))
        if isinstance(answer, GoogleError):
            return answer, {}
        status, payload, headers = answer
        if status == 200 and isinstance(payload, dict):
            request_id = payload.get("requestId")
            return request_id if isinstance(request_id, str) and request_id else "(no requestId)"
        return request_error(status, payload, headers, len(events))

    async def retrieve_status(self, session: aiohttp.ClientSession, request_id: str) -> RequestStatus | None:
        """The request's status (per destination, folded into one), or None when Google could not say now."""
        url = f"{self.base}{STATUS_PATH}?requestId={quote(request_id, safe='')}"
        answer = await self._call(session, "requestStatus", lambda token: OutgoingRequest(
            "GET", url, {"Authorization": f"Bearer {token}"}, b""))
        if isinstance(answer, GoogleError):
            return None
        status, payload, headers = answer
        if status == 200 and isinstance(payload, dict):
            return status_of(payload)
        error, _ = request_error(status, payload, headers, 0)
        if error.code in ("REQUEST_TOO_OLD", "INVALID_REQUEST_ID", "NOT_FOUND"):
            return RequestStatus("unknown", errors={error.code: 0})
        return None

    async def _call(self, session: aiohttp.ClientSession, method: str,
                    build: Callable[[str], OutgoingRequest]) -> GoogleError | tuple[int, Any, dict[str, str]]:
        stale: str | None = None
        for _ in range(2):
            try:
                token = await self.oauth.token(session, DATA_MANAGER_SCOPE, stale)
            except OAuthPaused:
                return GoogleError(self.oauth.paused_reason or "invalid_grant", self.oauth.paused_message())
            except TokenUnavailable as exc:
                return GoogleError(exc.code, exc.message)
            request = build(token)
            if self.observe is not None and method == "ingest":
                self.observe(request)
            try:
                status, payload, headers = await post_json(session, request)
            except asyncio.TimeoutError:
                return GoogleError("timeout", "no answer within delivery.request_timeout")
            except aiohttp.ClientError as exc:
                return GoogleError("connection_error", type(exc).__name__)
            REQUESTS.labels(method, str(status)).inc()
            if status == 401 and stale is None:
                stale = token  # refresh once and try again
                continue
            return status, payload, headers
        return status, payload, headers


def request_error(status: int, payload: Any, headers: dict[str, str],
                  event_count: int) -> tuple[GoogleError, dict[int, GoogleError]]:
    """A failed request's error, and an error for each event its field violations name (by index)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    retry_after = header_seconds(headers)
    if not isinstance(error, dict):
        return GoogleError(f"http_{status}", f"HTTP {status}", retry_after, status), {}
    reason: str | None = None
    violations: list[dict[str, Any]] = []
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(detail.get("reason"), str):
            reason = detail["reason"]
        elif kind.endswith("google.rpc.BadRequest"):
            violations.extend(v for v in detail.get("fieldViolations") or () if isinstance(v, dict))
        elif kind.endswith("google.rpc.RetryInfo"):
            retry_after = duration(detail.get("retryDelay")) or retry_after
    whole = GoogleError(reason or status_code(error, f"http_{status}"), short(error.get("message")), retry_after,
                        status)
    named: dict[int, GoogleError] = {}
    for violation in violations:
        match = _EVENT_FIELD.search(str(violation.get("field", "")))
        if match is None:
            return whole, {}  # a violation outside the events (a destination, the encoding): the whole request
        index = int(match.group(1))
        if 0 <= index < event_count and index not in named:
            code = violation.get("reason") if isinstance(violation.get("reason"), str) else whole.code
            named[index] = GoogleError(code, short(violation.get("description")) or whole.message, None, status)
    return whole, named


def _about_the_events(error: GoogleError) -> bool:
    """An INVALID_ARGUMENT that names no field: some event is bad, which one is found by halving."""
    return error.status == 400


def status_of(payload: dict[str, Any]) -> RequestStatus:
    """``RetrieveRequestStatusResponse`` folded into one status: the worst destination's state, counts summed."""
    order = ["success", "processing", "unknown", "partial_success", "failed"]
    state, records = "unknown", None
    errors: dict[str, int] = {}
    warnings: dict[str, int] = {}
    seen = False
    for per in payload.get("requestStatusPerDestination") or ():
        if not isinstance(per, dict):
            continue
        one = _STATES.get(str(per.get("requestStatus")), "unknown")
        state = one if not seen or order.index(one) > order.index(state) else state
        seen = True
        count = (per.get("eventsIngestionStatus") or {}).get("recordCount")
        if count is not None:
            records = max(records or 0, int(count))
        for target, info in ((errors, per.get("errorInfo")), (warnings, per.get("warningInfo"))):
            for entry in (info or {}).get("errorCounts" if target is errors else "warningCounts") or ():
                name = str(entry.get("reason", "UNSPECIFIED"))
                target[name] = target.get(name, 0) + int(entry.get("recordCount") or 0)
    return RequestStatus(state, records, errors, warnings)
