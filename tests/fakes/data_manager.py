"""A fake Data Manager API (``events:ingest``, ``requestStatus:retrieve``) and OAuth endpoint on 127.0.0.1.

    async with FakeDataManager() as fake:          # data_manager_base=fake.url, token_url=fake.token_url
        fake.fail_event("bad-gclid", "INVALID_FORMAT")   # events with that gclid or transaction id fail validation
        fake.fail_unplaced("ORD-7")                       # ... fail without saying which event (no field path)
        fake.fail_next(429, retry_delay=30)               # the next request fails as a whole
        fake.fail_processing("ORD-9", "PROCESSING_ERROR_REASON_INVALID_CLICK")  # accepted, fails later
        fake.processing_rounds = 1                        # requestStatus says PROCESSING once before the outcome

    python -m tests.fakes.data_manager --port 8092        # for trying the gateway without an account

What it checks, as Google does: a Bearer token of the shared issuer with the
datamanager scope (401, or 403 ACCESS_TOKEN_SCOPE_INSUFFICIENT), a JSON body
that the ``google-ads-datamanager`` protos parse with unknown fields refused
(400 "Invalid JSON payload received."), then Google's rules for Google Ads
offline conversions (``tests/tags/data_manager_schema.problems``) and the
scripted failures. It fails fast like the real API: one invalid event and
nothing of the request is kept; the answer is a google.rpc.Status with an
``ErrorInfo`` (``reason`` an ErrorReason, ``domain``
``datamanager.googleapis.com``) and a ``BadRequest`` whose field violations
name ``events[N]...`` with their own ``reason``.
Ref: https://developers.google.com/data-manager/api/devguides/concepts/understand-errors
Ref: https://developers.google.com/data-manager/api/reference/rest/v1/BadRequest

An accepted request answers ``{"requestId": ...}``; its events are kept by
conversion action and transaction id. An event whose transaction id the
action has already recorded is an adjustment: its value and currency replace
the recorded ones and the conversion count does not grow.
Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/conversion-adjustments
``requestStatus:retrieve`` answers a ``RetrieveRequestStatusResponse``
built with the package's own message and ``MessageToDict``: per destination
``requestStatus``, ``eventsIngestionStatus.recordCount`` and, for failed
records, ``errorInfo.errorCounts[]`` by ``ProcessingErrorReason``.
Ref: https://developers.google.com/data-manager/api/reference/rest/v1/requestStatus/retrieve
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from google.ads.datamanager_v1.types import ingestion_service
from google.protobuf import json_format

from tests.fakes._server import LoopbackServer
from tests.fakes.google_oauth import DATA_MANAGER_SCOPE, TokenIssuer
from tests.tags.data_manager_schema import SchemaError, parse, problems

DOMAIN = "datamanager.googleapis.com"
_DESCRIPTIONS = {
    "REQUIRED_FIELD_MISSING": "A required field is missing.",
    "INVALID_FORMAT": "The field has an invalid format.",
    "INVALID_SHA256_FORMAT": "The value is not a valid SHA-256 hash.",
    "NO_IDENTIFIERS_PROVIDED": "The event has no identifiers.",
    "TOO_MANY_EVENTS": "Too many events in the request.",
}


@dataclass(frozen=True, slots=True)
class Received:
    """One request as received, with the HTTP status it got."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass(slots=True)
class _Accepted:
    destination: dict[str, Any]
    events: list[dict[str, Any]]
    reads: int = 0


@dataclass(slots=True)
class Conversion:
    """A conversion as the fake Google Ads account records it."""

    event: dict[str, Any]
    value: float | None
    currency: str | None
    adjustments: list[dict[str, Any]] = field(default_factory=list)


class FakeDataManager(LoopbackServer):
    def __init__(self, *, port: int = 0, issuer: TokenIssuer | None = None) -> None:
        self.port = port
        self.issuer = issuer or TokenIssuer()
        self.received: list[Received] = []
        self.events: list[dict[str, Any]] = []  # every event of every accepted request, in order
        self.conversions: dict[tuple[str, str], Conversion] = {}  # (conversion action, transaction id)
        self.processing_rounds = 0
        self._requests: dict[str, _Accepted] = {}
        self._ids = itertools.count(1)
        self._event_failures: dict[str, str] = {}
        self._unplaced: set[str] = set()
        self._processing_failures: dict[str, str] = {}
        self._failures: deque[tuple[int, float | None]] = deque()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def ingests(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("events:ingest")]

    # -- scripting ----------------------------------------------------------------------------------

    def fail_event(self, value: str, reason: str = "INVALID_FORMAT") -> None:
        """Events whose click id or transaction id is ``value`` fail validation with ``reason``."""
        self._event_failures[value] = reason

    def fail_unplaced(self, value: str) -> None:
        """Events with this click id or transaction id make the request fail without a field path."""
        self._unplaced.add(value)

    def fail_next(self, status: int, count: int = 1, *, retry_delay: float | None = None) -> None:
        self._failures.extend((status, retry_delay) for _ in range(count))

    def fail_processing(self, value: str, reason: str) -> None:
        """Accepted events with this click id or transaction id fail during processing, with ``reason``."""
        self._processing_failures[value] = reason

    def add_conversion(self, action_id: str, transaction_id: str, value: float, currency: str) -> None:
        """A conversion recorded otherwise (the Google tag, an earlier upload) that an adjustment can match."""
        self.conversions[(action_id, transaction_id)] = Conversion({}, value, currency)

    # -- the API -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/token", self.issuer.handle)
        app.router.add_post("/v1/events:ingest", self._ingest)
        app.router.add_get("/v1/requestStatus:retrieve", self._status)
        app.router.add_get("/fake/events", self._show)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, "NOT_FOUND", "The requested URL was not found on this server.")

    async def _show(self, request: web.Request) -> web.Response:
        return web.json_response(self.events)

    async def _ingest(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        status, answer = self._answer_ingest(dict(request.headers), body)
        self.received.append(Received("POST", request.path, dict(request.headers), body, status))
        return web.Response(status=status, body=orjson.dumps(answer), content_type="application/json")

    def _answer_ingest(self, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        refused = self.issuer.check(_header(headers, "authorization"), DATA_MANAGER_SCOPE)
        if refused is not None:
            details = [_error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", "googleapis.com")] if refused[0] == 403 else []
            return refused[0], _body(*refused, details)
        if not (_header(headers, "content-type") or "").startswith("application/json") or not isinstance(body, dict):
            return 400, _body(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        try:
            parse(body)
        except SchemaError as exc:
            message = "Invalid JSON payload received. " + " ".join(str(exc).split())
            return 400, _body(400, "INVALID_ARGUMENT", message, [
                {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"description": message}]}])
        if self._failures:
            status, delay = self._failures.popleft()
            return status, _scripted(status, delay)
        found = problems(body) + self._scripted_problems(body.get("events") or [])
        if found:
            if any(path is None for path, _ in found):
                return 400, _body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                                  [_error_info("INVALID_ARGUMENT")])
            violations = [{"field": path, "description": _DESCRIPTIONS.get(reason, reason.replace("_", " ").capitalize()
                                                                               + "."), "reason": reason}
                          for path, reason in found]
            return 400, _body(400, "INVALID_ARGUMENT", "Request contains an invalid argument.",
                              [_error_info(found[0][1]),
                               {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}])
        request_id = f"fake-dm-request-{next(self._ids):04d}"
        if body.get("validateOnly"):
            return 200, {"requestId": request_id}
        destination, events = body["destinations"][0], body["events"]
        self._requests[request_id] = _Accepted(destination, events)
        for event in events:
            self._record(destination, event)
        return 200, {"requestId": request_id}

    def _scripted_problems(self, events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        for n, event in enumerate(events):
            values = _values(event)
            if values & self._unplaced:
                out.append((None, "INVALID_ARGUMENT"))
            for value in values:
                if value in self._event_failures:
                    place = "adIdentifiers.gclid" if value == (event.get("adIdentifiers") or {}).get("gclid") \
                        else "transactionId"
                    out.append((f"events[{n}].{place}", self._event_failures[value]))
        return out

    def _record(self, destination: dict[str, Any], event: dict[str, Any]) -> None:
        self.events.append(event)
        if _values(event) & set(self._processing_failures):
            return  # it fails during processing: nothing is recorded
        key = (str(destination["productDestinationId"]), str(event.get("transactionId", "")))
        known = self.conversions.get(key) if event.get("transactionId") else None
        if known is None:
            if event.get("transactionId"):
                self.conversions[key] = Conversion(event, event.get("conversionValue"), event.get("currency"))
            return
        known.value = event.get("conversionValue", known.value)  # "overwritten", count unchanged
        known.currency = event.get("currency", known.currency)
        known.adjustments.append(event)

    async def _status(self, request: web.Request) -> web.Response:
        refused = self.issuer.check(request.headers.get("Authorization"), DATA_MANAGER_SCOPE)
        if refused is not None:
            return web.json_response(_body(*refused), status=refused[0])
        request_id = request.query.get("requestId", "")
        self.received.append(Received("GET", request.path_qs, dict(request.headers), None, 200))
        accepted = self._requests.get(request_id)
        if accepted is None:
            return web.json_response(_body(400, "INVALID_ARGUMENT", "The request ID is invalid.",
                                           [_error_info("INVALID_REQUEST_ID")]), status=400)
        accepted.reads += 1
        per = ingestion_service.RetrieveRequestStatusResponse.pb()()
        status = per.request_status_per_destination.add()
        json_format.ParseDict(accepted.destination, status.destination)
        status.events_ingestion_status.record_count = len(accepted.events)
        if accepted.reads <= self.processing_rounds:
            status.request_status = status.RequestStatus.Value("PROCESSING")
        else:
            failures: dict[str, int] = {}
            for event in accepted.events:
                for value in _values(event) & set(self._processing_failures):
                    reason = self._processing_failures[value]
                    failures[reason] = failures.get(reason, 0) + 1
            failed = sum(failures.values())
            state = "SUCCESS" if not failed else "FAILED" if failed >= len(accepted.events) else "PARTIAL_SUCCESS"
            status.request_status = status.RequestStatus.Value(state)
            for reason, count in failures.items():
                entry = status.error_info.error_counts.add()
                entry.reason = entry.DESCRIPTOR.fields_by_name["reason"].enum_type.values_by_name[reason].number
                entry.record_count = count
        return web.json_response(json_format.MessageToDict(per))


def _values(event: dict[str, Any]) -> set[str]:
    ad = event.get("adIdentifiers") or {}
    return {str(v) for v in (event.get("transactionId"), ad.get("gclid"), ad.get("gbraid"), ad.get("wbraid")) if v}


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _error_info(reason: str, domain: str = DOMAIN) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}


def _body(http: int, status: str, message: str, details: list[Any] | None = None) -> Any:
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _scripted(status: int, delay: float | None) -> Any:
    if status == 429:
        return _body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", [
            _error_info("RESOURCE_EXHAUSTED"),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{30 if delay is None else delay}s"}])
    if status >= 500:
        name = "UNAVAILABLE" if status == 503 else "INTERNAL"
        return _body(status, name, "Internal error encountered.", [_error_info("INTERNAL_ERROR")])
    if status == 403:
        return _body(403, "PERMISSION_DENIED", "The caller does not have permission.", [_error_info("PERMISSION_DENIED")])
    return _body(status, "FAILED_PRECONDITION", "Scripted failure.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake Data Manager API and OAuth server.")
    parser.add_argument("--port", type=int, default=8092)
    args = parser.parse_args(argv)

    async def run() -> None:
        fake = await FakeDataManager(port=args.port).start()
        print(f"fake Data Manager API on {fake.url} (OAuth token endpoint {fake.token_url})", flush=True)
        print(f"  GOOGLE_DATA_MANAGER_API_BASE={fake.url} GOOGLE_OAUTH_TOKEN_URL={fake.token_url}", flush=True)
        for name, value in fake.issuer.credentials.items():
            print(f"  GOOGLE_ADS_{name.upper()}={value}", flush=True)
        print(f"  events received: GET {fake.url}/fake/events", flush=True)
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
