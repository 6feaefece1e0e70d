"""The application: one adapter for every client (``Gateway.handle``), plus health and metrics.

Collection requests reach ``Gateway.handle`` from the pure ASGI front in
``gateway.collect``; health, metrics, /openapi.json and /debug are Starlette
routes behind it. The request path is: read the body (bounded), resolve the client address,
``client.parse`` -> ``Pipeline.process`` -> ``storage.enqueue`` (one durable
commit, shared with concurrent requests by group commit) -> the client's
response, with the server-managed cookies (``gateway.first_party``) that the
request's consent allows, decided right after ``parse``. Delivery happens later, in the dispatcher; nothing after the commit
runs before the response.

A request with order events (a purchase, refund or cancellation with a
transaction id) takes the ledger's path instead: ``storage.record_orders``
reads the ledger rows of its orders, runs ``Ledger.run`` (ledger decisions,
then the pipeline) and writes the deliveries, the ledger changes and the
request key in the same transaction. A small task sweeps the held refunds
(``orders.sweep_interval``).

Backpressure: nothing on the request path grows with the load. Above
``MAX_INFLIGHT`` requests in progress a new one is answered 503 before its
body is read, so the bodies held in memory and the storage's commit queue
are bounded by that number; above ``storage.max_outbox_depth`` pending items
(refreshed every second off the request path, and counted up by each
commit in between) a request that would store something is answered 503,
so the outbox stops growing while a destination is down. Both answers carry
``Retry-After`` and a JSON body; nothing of such a request is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from gateway import metrics
from gateway.client import RawRequest
from gateway.collect import Answer, CollectionFront, Methods, json_answer, scope_headers
from gateway.config import ClientEntry, Container, load_container_file
from gateway.debug import attach as attach_debug, bind_ledger_step, install as install_debug, note_parsed
from gateway.dispatcher import Dispatcher, dry_run_recorder
from gateway.errors import BadRequest
from gateway.event import Event
from gateway.first_party import FirstPartyCookies
from gateway.ledger import LEDGER_DESTINATION, ORDER_NOT_FOUND, LedgerState, LedgerWrite, order_id_of
from gateway.netaddr import TrustedProxies
from gateway.openapi import build_openapi
from gateway.orders import Ledger
from gateway.pipeline import Pipeline
from gateway.sender import Sender, SenderContext
from gateway.storage import open_storage
from gateway.storage.base import Storage, StorageUnavailable
from tags import DESTINATIONS

log = logging.getLogger("gateway.app")

CONFIG_ENV = "GATEWAY_CONFIG"

# Collection requests in progress at once, per process. Each holds at most limits.max_body_bytes
# (64 KiB by default) and one entry in the storage's commit queue; past this they are refused.
MAX_INFLIGHT = 1024
DEPTH_REFRESH_SECONDS = 1.0
RETRY_AFTER_BUSY = "1"  # seconds: in-flight requests finish in milliseconds
RETRY_AFTER_STORAGE = "5"
RETRY_AFTER_OUTBOX_FULL = "30"  # the outbox drains at the destinations' pace, not ours
OVERLOAD_LOG_SECONDS = 10.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_answer(exc: BadRequest) -> Answer:
    return json_answer(exc.status, exc.body(), exc.headers)


class Overloaded(Exception):
    """The gateway cannot take this request now (not the caller's fault): a 503 with ``Retry-After``."""

    def __init__(self, error: str, retry_after: str, reason: str) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after = retry_after
        self.reason = reason  # inflight | outbox_full, in the answer's detail and the log line


_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def read_body(receive: Receive, method: str, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, "invalid Content-Length header", field="headers.content-length")
        if int(declared) > limit:
            raise BadRequest(413, f"request body larger than {limit} bytes", field="body")
        if declared == "0":
            return b""
    elif method in _BODYLESS_METHODS and "transfer-encoding" not in headers:
        return b""  # nothing follows the headers: no need to wait on the body channel
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The sender went away mid-body: nothing of it is used. The answer
            # is likely never read, but the request is counted as the 4xx it is.
            raise BadRequest(400, "request body incomplete: the client disconnected", field="body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"request body larger than {limit} bytes", field="body")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def build_senders(container: Container, storage: Storage, now: Callable[[], datetime]) -> dict[str, Sender]:
    ctx = SenderContext(
        record_dry_run=dry_run_recorder(storage, now),
        now=now,
        request_timeout=container.file.delivery.request_timeout.total_seconds(),
    )
    senders: dict[str, Sender] = {}
    for destination, module in DESTINATIONS.items():
        tags = [t.config for t in container.tags if t.destination == destination]
        if tags:
            senders[destination] = module.Sender(container.destinations.get(destination), tags, ctx)
    return senders


def click_tags_send_order_id(container: Container) -> dict[str, bool]:
    """Tag name -> send_order_id, for the tags that upload click conversions with that option."""
    out: dict[str, bool] = {}
    for tag in container.tags:
        send = getattr(tag.config, "send_order_id", None)
        if isinstance(send, bool):
            out[tag.config.name] = send
    return out


def log_ledger(write: LedgerWrite, client: str) -> None:
    """One line per ledger decision: order and change ids and a code, nothing personal."""
    for note in write.notes:
        level = logging.WARNING if note.what in ("retained_value_disagrees", "currency_mismatch") else logging.INFO
        log.log(level, "order ledger", extra={"client": client, "order_id": note.order_id,
                                               "change_id": note.change_id, "decision": note.what})


class Gateway:
    """The running pieces of one gateway process, built from one container."""

    def __init__(
        self,
        container: Container,
        *,
        storage: Storage | None = None,
        run_dispatcher: bool = True,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.container = container
        self.now = now
        self.pipeline = Pipeline(container)
        self.orders = container.file.orders
        self.ledger = Ledger(self.pipeline.process, click_tags_send_order_id(container), self.orders.hold_unknown_refunds)
        self.storage = storage or open_storage(container.file.storage)
        self.run_dispatcher = run_dispatcher
        self.dispatcher = Dispatcher(self.storage, build_senders(container, self.storage, now), container.file.delivery, now=now)
        self.limits = container.file.limits
        self.max_depth = container.file.storage.max_outbox_depth
        self.pending_estimate = 0
        self.max_inflight = MAX_INFLIGHT
        self.inflight = 0
        self._proxies = TrustedProxies(container.trusted_proxies)
        self.first_party = FirstPartyCookies(container.file.cookies, container.consent_defaults)
        self._requests = metrics.LabelCache(metrics.REQUESTS)
        self._events = metrics.LabelCache(metrics.EVENTS)
        self._overload_logged: dict[str, float] = {}  # reason -> when it was last logged (monotonic)
        self._depth_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self.debug = attach_debug(self)  # the /debug recorder, or None when debug.enabled is off

    async def start(self) -> None:
        await self.storage.open()
        self.pending_estimate = await self.storage.pending_count()
        if self.run_dispatcher:
            await self.dispatcher.start()
        self._depth_task = asyncio.create_task(self._watch_depth())
        self._sweep_task = asyncio.create_task(self._sweep_orders_loop())

    async def stop(self) -> None:
        for task in (self._depth_task, self._sweep_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.run_dispatcher:
            await self.dispatcher.stop()
        await self.storage.close()
        metrics.flush()

    async def _watch_depth(self) -> None:
        """Refresh the outbox depth used for backpressure, and hand buffered counts to the metrics, off the request path."""
        while True:
            await asyncio.sleep(DEPTH_REFRESH_SECONDS)
            metrics.flush()
            with contextlib.suppress(Exception):
                self.pending_estimate = await self.storage.pending_count()

    async def _sweep_orders_loop(self) -> None:
        interval = self.orders.sweep_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep_orders()
            except StorageUnavailable:
                metrics.STORAGE_ERRORS.labels("sweep_held").inc()
            except Exception as exc:  # noqa: BLE001 - the sweep must outlive any one failure
                log.error("order sweep failed", extra={"error": type(exc).__name__})

    async def sweep_orders(self) -> None:
        """Apply held changes whose order is known now, dead-letter expired ones, prune old orders."""
        now = self.now()
        sweep = await self.storage.sweep_held(now, lambda state: self.ledger.release(state, now), self.orders.retention)
        if sweep.released.deliveries:
            self.pending_estimate += len(sweep.released.deliveries)
            if self.run_dispatcher:
                self.dispatcher.wake()
        log_ledger(sweep.released, "sweep")
        if sweep.expired:
            metrics.DEAD_LETTERS.labels(LEDGER_DESTINATION, ORDER_NOT_FOUND).inc(sweep.expired)
            log.warning("held order changes expired", extra={"changes": sweep.expired, "code": ORDER_NOT_FOUND})
        if sweep.pruned:
            log.info("pruned orders past orders.retention", extra={"orders": sweep.pruned})

    async def handle(self, scope: Scope, receive: Receive, entry: ClientEntry, client_name: str) -> Answer:
        status = 500
        if self.inflight >= self.max_inflight:  # before the body is read: refusing must cost nothing
            self._requests.get(client_name, "503").inc()
            return self._overloaded(Overloaded("too many requests in progress, try again later", RETRY_AFTER_BUSY,
                                               "inflight"))
        self.inflight += 1
        try:
            answer = await self._handle(scope, receive, entry, client_name)
            status = answer.status
            return answer
        except BadRequest as exc:
            status = exc.status
            return error_answer(exc)
        except Overloaded as exc:
            status = 503
            return self._overloaded(exc)
        except StorageUnavailable as exc:
            status = 503
            metrics.STORAGE_ERRORS.labels("enqueue").inc()
            if self._log_due("storage_unavailable"):  # an outage would otherwise log a line per request
                log.error("storage cannot commit; answering 503", extra={"client": client_name, "error": str(exc)})
            return json_answer(503, {"error": "storage unavailable", "detail": None}, {"Retry-After": RETRY_AFTER_STORAGE})
        except Exception as exc:
            log.error("unexpected error", extra={"client": client_name, "error": type(exc).__name__}, exc_info=False)
            return json_answer(500, {"error": "internal error", "detail": None})
        finally:
            self.inflight -= 1
            self._requests.get(client_name, status).inc()

    def _log_due(self, reason: str) -> bool:
        """True at most once per OVERLOAD_LOG_SECONDS and reason: refusals are counted in metrics, logged sparingly."""
        now = time.monotonic()
        if now - self._overload_logged.get(reason, -OVERLOAD_LOG_SECONDS) < OVERLOAD_LOG_SECONDS:
            return False
        self._overload_logged[reason] = now
        return True

    def _overloaded(self, exc: Overloaded) -> Answer:
        if self._log_due(exc.reason):
            log.warning("answering 503", extra={"reason": exc.reason, "pending_estimate": self.pending_estimate,
                                                "inflight": self.inflight})
        detail = {"reason": exc.reason, "retry_after_seconds": int(exc.retry_after)}
        return json_answer(503, {"error": exc.error, "detail": detail}, {"Retry-After": exc.retry_after})

    async def _handle(self, scope: Scope, receive: Receive, entry: ClientEntry, client_name: str) -> Answer:
        method = scope["method"]
        headers = scope_headers(scope)
        body = await read_body(receive, method, headers, self.limits.max_body_bytes)
        peer = scope.get("client")
        raw = RawRequest(
            method=method,
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            client_ip=self._proxies.resolve(peer[0] if peer else None, headers.get("x-forwarded-for")),
            received_at=self.now(),
        )
        result = entry.module.parse(raw, entry.config)
        cookies = self.first_party.apply(raw, result.events) if client_name in self.first_party.clients else ()
        note_parsed(result, client_name)  # the debugger's trace, when one is being recorded
        if len(result.events) > self.limits.max_events_per_request:
            raise BadRequest(400, f"more than {self.limits.max_events_per_request} events in one request", field="body")
        for event in result.events:
            self._events.get(client_name, metrics.event_name_label(event.event_name)).inc()
        order_ids = [oid for oid in map(order_id_of, result.events) if oid is not None]
        if order_ids:
            await self._record_orders(result.events, order_ids, result.request_key, client_name)
        else:
            outcome = self.pipeline.process(result.events, client_name)
            if outcome.deliveries or result.request_key:
                self._check_depth()
                await self.storage.enqueue(outcome.deliveries, raw.received_at, result.request_key)
                self._enqueued(len(outcome.deliveries))
        return Answer(result.status, result.body, result.media_type, result.headers, cookies)

    async def _record_orders(self, events: list[Event], order_ids: list[str], request_key: str | None, client: str) -> None:
        """The ledger's path: read, decide, process and write in one storage transaction."""
        self._check_depth()
        now = self.now()

        def step(state: LedgerState) -> LedgerWrite:  # runs inside the storage's write transaction
            return self.ledger.run(events, client, state, now)

        write = await self.storage.record_orders(order_ids, bind_ledger_step(step), now, request_key)
        if write is None:
            log.info("redelivered request ignored", extra={"client": client, "orders": order_ids})
            return
        log_ledger(write, client)
        self._enqueued(len(write.deliveries))

    def _check_depth(self) -> None:
        if self.pending_estimate >= self.max_depth:
            raise Overloaded("outbox full, try again later", RETRY_AFTER_OUTBOX_FULL, "outbox_full")

    def _enqueued(self, count: int) -> None:
        self.pending_estimate += count
        if count and self.run_dispatcher:
            self.dispatcher.wake()


def create_app(
    container: Container,
    *,
    storage: Storage | None = None,
    run_dispatcher: bool = True,
    now: Callable[[], datetime] = utcnow,
) -> Starlette:
    gateway = Gateway(container, storage=storage, run_dispatcher=run_dispatcher, now=now)

    by_path: dict[str, Methods] = {}
    for entry in container.clients:
        name = entry.config.type
        for method, path in entry.module.ROUTES:
            by_path.setdefault(path, {})[method] = (entry, name)

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        storage_ok = await gateway.storage.ping()
        dispatcher_ok = gateway.dispatcher.alive or not gateway.run_dispatcher
        ok = storage_ok and dispatcher_ok
        return json_response(200 if ok else 503, {"storage": storage_ok, "dispatcher": dispatcher_ok})

    openapi_body = orjson.dumps(build_openapi(container))

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        message = "not found" if status == 404 else (getattr(exc, "detail", None) or "error")
        return json_response(status, {"error": message, "detail": None}, dict(getattr(exc, "headers", None) or {}))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        log.info("gateway started", extra={"clients": [c.config.type for c in container.clients],
                                           "tags": [t.config.name for t in container.tags]})
        try:
            yield
        finally:
            started = time.monotonic()
            await gateway.stop()
            log.info("gateway stopped", extra={"shutdown_seconds": round(time.monotonic() - started, 3)})

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.gateway = gateway
    install_debug(app, gateway)  # /debug when enabled
    # Outermost: the collection routes never reach Starlette's router (see gateway/collect.py).
    app.add_middleware(CollectionFront, gateway=gateway, routes=by_path)
    return app


def app_from_env() -> Starlette:
    """uvicorn factory: the container path comes from GATEWAY_CONFIG (set by ``gateway serve``)."""
    from gateway.logs import configure_logging

    configure_logging()
    app = create_app(load_container_file(os.environ[CONFIG_ENV]))
    # Everything built so far (modules, schemas, the compiled container) lives as long as the
    # process: out of the collector's sight, the full collections it runs under load stay short.
    gc.collect()
    gc.freeze()
    return app
