"""The ``/debug`` page and its JSON API.

Mounted only when ``debug.enabled`` is set; otherwise every ``/debug`` path
is the app's ordinary 404. Every route but the static files and the login
form needs ``Authorization: Bearer <debug.token>`` or the login cookie
(``gateway.debug.auth``), and answers 401 without: the page with the login
form as its body, the API with a JSON error. The static files (the page's
script and style sheet) hold no data and are served to anyone once the
debugger is enabled, so the login form can use them.

The API only ever returns what the ring buffer holds (already masked) or
storage records masked on the way out: dead letters, dry-run records, the
order ledger's report. No response carries CORS headers, and every response
forbids caching, framing and inline script (a recorded event name is data
from the internet; the page renders it as text, never as HTML).

POSTs need ``Content-Type: application/json`` (the login form aside): a page
on another site can send that only after a CORS preflight, which these
routes never grant, and the SameSite=Strict cookie does not travel with a
cross-site request anyway.

    GET  /debug                                 the page (or the login form, 401)
    POST /debug/login, /debug/logout            set or clear the session cookie
    GET  /debug/static/{name}                   the page's script and style sheet
    GET  /debug/api/meta                        clients, tags, triggers, outcomes: the filters' choices
    GET  /debug/api/traces?client=&event=&tag=&outcome=&q=&known=&limit=
    GET  /debug/api/traces/{id}                 one request's whole path
    POST /debug/api/traces/{id}/resend          its events again, to dry-run destinations
    POST /debug/api/explain                     {"request": {...}} or {"trace_id": "..."}
    GET  /debug/api/dead-letters?limit=         POST /debug/api/dead-letters/replay {"ids": [...]}
    GET  /debug/api/dry-runs?last=              GET  /debug/api/orders/{order_id}
    GET  /debug/api/requests?last=              (vendor requests processed later, with their status)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.debug import actions, explain, masking
from gateway.debug.auth import COOKIE, COOKIE_PATH, SESSION_SECONDS, DebugAuth
from gateway.debug.recorder import Recorder
from gateway.debug.trace import Trace
from gateway.storage.base import StorageUnavailable
from gateway.vendor_requests import request_report

if TYPE_CHECKING:
    from gateway.app import Gateway

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {
    "debugger.js": "text/javascript; charset=utf-8",
    "debugger.css": "text/css; charset=utf-8",
}
OUTCOMES = ["delivered", "pending", "retry", "dead_letter", "rejected", "error", "dry_run", "none"]
MAX_LIST = 1000
MAX_EXPLAIN_BYTES = 1024 * 1024

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

Endpoint = Callable[[Request], Awaitable[Response]]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, default=str), status_code=status, media_type="application/json",
                    headers={**SECURITY_HEADERS, **(headers or {})})


def _error(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": error, "detail": detail}, headers)


def _html(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers={**SECURITY_HEADERS, **(headers or {})})


def _int(request: Request, name: str, default: int, high: int) -> int:
    value = request.query_params.get(name, "")
    return max(0, min(high, int(value))) if value.isdigit() else default


class DebugApp:
    """The debugger's endpoints over one gateway and its recorder."""

    def __init__(self, gateway: Gateway, recorder: Recorder, token: str) -> None:
        self.gateway = gateway
        self.recorder = recorder
        self.auth = DebugAuth(token)
        self.index = (STATIC_DIR / "index.html").read_bytes()
        self.login_page = (STATIC_DIR / "login.html").read_bytes()
        self.static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}

    # -- access ----------------------------------------------------------------------------------------

    def guarded(self, endpoint: Endpoint, *, page: bool = False) -> Endpoint:
        async def guard(request: Request) -> Response:
            if not self.auth.allowed(request):
                if page:
                    return _html(401, self.login_page, {"WWW-Authenticate": 'Bearer realm="gateway-debug"'})
                return _error(401, "unauthorized", None, {"WWW-Authenticate": 'Bearer realm="gateway-debug"'})
            if request.method == "POST":
                kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if kind != "application/json":
                    return _error(415, "content type must be application/json", {"field": "headers.content-type"})
            return await endpoint(request)

        return guard

    async def page(self, request: Request) -> Response:
        return _html(200, self.index)

    async def login(self, request: Request) -> Response:
        body = await request.body()
        token = parse_qs(body[:4096].decode("utf-8", "replace")).get("token", [""])[0]
        if not token or not self.auth.token_ok(token):
            failed = self.login_page.replace(b"<!--message-->", b"That token is not the debug token.")
            return _html(401, failed, {"WWW-Authenticate": 'Bearer realm="gateway-debug"'})
        response = RedirectResponse("/debug", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, self.auth.session_cookie(), max_age=SESSION_SECONDS, path=COOKIE_PATH,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/debug", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            return _error(404, "not found")
        return Response(self.static[name], media_type=STATIC_TYPES[name], headers=SECURITY_HEADERS)

    # -- traces ----------------------------------------------------------------------------------------

    async def meta(self, request: Request) -> Response:
        container = self.gateway.container
        return _json(200, {
            "clients": [c.config.type for c in container.clients],
            "tags": [t.config.name for t in container.tags],
            "triggers": sorted(container.triggers),
            "destinations": sorted({t.destination for t in container.tags}),
            "outcomes": OUTCOMES,
            "keep_last": self.recorder.buffer.keep,
        })

    async def traces(self, request: Request) -> Response:
        buffer = self.recorder.buffer
        known = request.query_params.get("known", "")
        if known.isdigit() and int(known) == buffer.last_seq:
            return _json(200, {"seq": buffer.last_seq, "unchanged": True})
        params = request.query_params
        limit = _int(request, "limit", 200, MAX_LIST)
        selected = []
        for trace in buffer.newest():
            if _matches(trace, params.get("client"), params.get("event"), params.get("tag"),
                        params.get("outcome"), (params.get("q") or "").strip()):
                selected.append(trace.summary())
                if len(selected) >= limit:
                    break
        return _json(200, {"seq": buffer.last_seq, "traces": selected, "kept": len(buffer), "keep_last": buffer.keep})

    def _trace(self, request: Request) -> Trace | None:
        return self.recorder.buffer.get(request.path_params["trace_id"])

    async def trace(self, request: Request) -> Response:
        trace = self._trace(request)
        if trace is None:
            return _error(404, "no such trace in memory", {"kept": len(self.recorder.buffer)})
        return _json(200, {**trace.to_json(), "explain_request": explain.spec_from_trace(trace)})

    async def resend(self, request: Request) -> Response:
        trace = self._trace(request)
        if trace is None:
            return _error(404, "no such trace in memory")
        if not trace.events:
            return _error(409, "this request built no events to resend")
        try:
            new = await actions.resend(self.gateway.container, self.recorder.buffer, self.gateway.storage, trace,
                                       self.gateway.now)
        except StorageUnavailable:
            return _error(503, "storage unavailable", None, {"Retry-After": "5"})
        return _json(200, new.to_json())

    async def explain(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_EXPLAIN_BYTES:
            return _error(413, f"request body larger than {MAX_EXPLAIN_BYTES} bytes", {"field": "body"})
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON", {"field": "body"})
        if isinstance(payload, dict) and isinstance(payload.get("trace_id"), str):
            recorded = self.recorder.buffer.get(payload["trace_id"])
            if recorded is None:
                return _error(404, "no such trace in memory", {"field": "trace_id"})
            spec: Any = explain.spec_from_trace(recorded)
        elif isinstance(payload, dict) and "request" in payload:
            spec = payload["request"]
        else:
            return _error(400, 'expected {"request": {...}} or {"trace_id": "..."}', {"field": "body"})
        try:
            result = await explain.explain(self.gateway.container, spec, now=self.gateway.now,
                                           consent=self.gateway.pipeline.consent)
        except explain.SpecError as exc:
            return _error(400, "invalid request description", {"problem": str(exc)})
        return _json(200, result.to_json())

    # -- storage ---------------------------------------------------------------------------------------

    async def dead_letters(self, request: Request) -> Response:
        try:
            letters = await self.gateway.storage.list_dead_letters(_int(request, "limit", 100, 1000))
        except StorageUnavailable:
            return _error(503, "storage unavailable", None, {"Retry-After": "5"})
        return _json(200, [
            {"id": d.id, "destination": d.destination, "tag": d.tag, "batch_key": d.batch_key,
             "idempotency_key": masking.mask_text(d.idempotency_key), "attempts": d.attempts, "code": d.code,
             "message": masking.mask_text(d.message) if d.message else None, "item": masking.mask_tree(d.item),
             "created_at": d.created_at, "failed_at": d.failed_at,
             "trace_id": _trace_id_of(self.recorder, d.idempotency_key)}
            for d in letters
        ])

    async def replay(self, request: Request) -> Response:
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON", {"field": "body"})
        ids = payload.get("ids") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            return _error(400, "ids must be a non-empty list of dead letter ids", {"field": "ids"})
        try:
            count = await self.gateway.storage.replay_dead_letters(ids, self.gateway.now())
        except StorageUnavailable:
            return _error(503, "storage unavailable", None, {"Retry-After": "5"})
        if count:
            self.gateway.wake_dispatcher()
        return _json(200, {"replayed": count})

    async def vendor_requests(self, request: Request) -> Response:
        """Requests a vendor accepted and processes later (Data Manager request ids), with what it said about them."""
        try:
            tracked = await self.gateway.storage.list_requests(_int(request, "last", 20, 500))
        except StorageUnavailable:
            return _error(503, "storage unavailable", None, {"Retry-After": "5"})
        return _json(200, [request_report(t) for t in tracked])

    async def dry_runs(self, request: Request) -> Response:
        try:
            records = await self.gateway.storage.list_dry_runs(_int(request, "last", 20, 500))
        except StorageUnavailable:
            return _error(503, "storage unavailable", None, {"Retry-After": "5"})
        return _json(200, [
            {"id": r.id, "destination": r.destination, "batch_key": r.batch_key, "items": r.item_count,
             "recorded_at": r.recorded_at, "request": masking.mask_outgoing(r.request)}
            for r in records
        ])

    async def order(self, request: Request) -> Response:
        from gateway.order_report import order_report  # the same report as `gateway orders show`

        try:
            history = await self.gateway.storage.order_history(request.path_params["order_id"])
        except StorageUnavailable:
            return _error(503, "storage unavailable", None, {"Retry-After": "5"})
        if history.order is None and not (history.held or history.deliveries or history.changes):
            return _error(404, "no such order in the ledger")
        return _json(200, masking.mask_tree(orjson.loads(orjson.dumps(order_report(history), default=str))))

    # -- the routes ------------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        g = self.guarded
        return [
            Route("/debug", g(self.page, page=True), methods=["GET"]),
            Route("/debug/login", self.login, methods=["POST"]),
            Route("/debug/logout", g(self.logout), methods=["POST"]),
            Route("/debug/static/{name}", self.static_file, methods=["GET"]),
            Route("/debug/api/meta", g(self.meta), methods=["GET"]),
            Route("/debug/api/traces", g(self.traces), methods=["GET"]),
            Route("/debug/api/traces/{trace_id}", g(self.trace), methods=["GET"]),
            Route("/debug/api/traces/{trace_id}/resend", g(self.resend), methods=["POST"]),
            Route("/debug/api/explain", g(self.explain), methods=["POST"]),
            Route("/debug/api/dead-letters", g(self.dead_letters), methods=["GET"]),
            Route("/debug/api/dead-letters/replay", g(self.replay), methods=["POST"]),
            Route("/debug/api/dry-runs", g(self.dry_runs), methods=["GET"]),
            Route("/debug/api/requests", g(self.vendor_requests), methods=["GET"]),
            Route("/debug/api/orders/{order_id}", g(self.order), methods=["GET"]),
        ]


def _matches(trace: Trace, client: str | None, event: str | None, tag: str | None, outcome: str | None, q: str) -> bool:
    if client and trace.client != client:
        return False
    if event and event not in trace.event_names():
        return False
    if tag and tag not in trace.tags_fired() and all(d.tag != tag for d in trace.deliveries.values()):
        return False
    if outcome and trace.outcome != outcome:
        return False
    return not q or trace.id.startswith(q) or q in trace.search_keys()


def _trace_id_of(recorder: Recorder, key: str) -> str | None:
    trace = recorder.buffer.by_key.get(key)
    return trace.id if trace is not None else None
