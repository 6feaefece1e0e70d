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

Slow clients: a body must arrive within ``limits.read_timeout`` of the
request's headers (``gateway.body``; the headers' own deadline is
``gateway.server``'s), else the answer is 408 and the connection closes. A request reading its body holds
no slot: a thousand sockets that send a byte now and then cost a thousand
small buffers, never the slots of the requests behind them.

Backpressure: nothing on the request path grows with the load. Each client
has its own budget of ``limits.max_inflight_per_client`` requests between
a read body and their answer; past it that client's new requests are
answered 503, so the bodies held in memory and the storage's commit queue
are bounded, and browsers flooding ``/g/collect`` never take the slots the
order webhooks need. Above ``storage.max_outbox_depth`` pending items
(refreshed every second off the request path, and counted up by each
commit in between) a request that would store something is answered 503,
so the outbox stops growing while a destination is down. Both answers carry
``Retry-After`` and a JSON body; nothing of such a request is stored.

Every refused request leaves one log line (``gateway.rejections``, rate
limited per client and status) with its trace id.
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
from gateway.body import ReadDeadlines, read_body
from gateway.client import RawRequest, stamp
from gateway.collect import Answer, CollectionFront, Methods, json_answer, scope_headers
from gateway.config import CONFIG_ENV, ClientEntry, Container, load_container_file
from gateway.consent import PSEUDONYM_SECRET
from gateway.debug import attach as attach_debug, bind_ledger_step, install as install_debug, note_parsed
from gateway.delivery_setup import build_delivery, follow_up_forever
from gateway.dispatch_link import DISPATCH_DIR_ENV, DispatcherLink
from gateway.errors import BadRequest
from gateway.event import Event
from gateway.first_party import FirstPartyCookies
from gateway import identity
from gateway.identity import countries
from gateway.ledger import LEDGER_DESTINATION, LedgerState, LedgerWrite, order_id_of
from gateway.netaddr import TrustedProxies
from gateway.openapi import build_openapi
from gateway.orders import ClickTag, Ledger
from gateway.pipeline import Pipeline
from gateway.rejections import NO_CLIENT, REJECTIONS
from gateway.storage import open_storage
from gateway.storage.base import Storage, StorageUnavailable
from gateway.storage_url import storage_description

log = logging.getLogger("gateway.app")

DEPTH_REFRESH_SECONDS = 1.0
RETRY_AFTER_BUSY = "1"  # seconds: in-flight requests finish in milliseconds
RETRY_AFTER_STORAGE = "5"
FOLLOW_UP_SECONDS = 60.0  # how often vendor requests due for a status check are looked for
RETRY_AFTER_OUTBOX_FULL = "30"  # the outbox drains at the destinations' pace, not ours
NOT_CONFIGURED = {"error": "webhook not configured", "detail": None}


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


def _no_wake() -> None:
    """Nobody to wake: deliveries run elsewhere (another instance, ``gateway dispatch``) and poll."""


CLICK_CONVERSION_TAG = "google_ads_click_conversion"


def click_tags(container: Container) -> dict[str, ClickTag]:
    """Tag name -> what the ledger must know of it (order id sent? which conversion action?), per click-conversion tag."""
    out: dict[str, ClickTag] = {}
    for tag in container.tags:
        if tag.config.type == CLICK_CONVERSION_TAG:
            send = getattr(tag.config, "send_order_id", True)
            action = getattr(tag.config, "conversion_action", None)
            out[tag.config.name] = ClickTag(send is not False, action if isinstance(action, str) else None)
    return out


def log_ledger(write: LedgerWrite, client: str, ref: Callable[[str], str]) -> None:
    """One line per ledger decision (order and change ids, a code, the values used; nothing personal).

    ``ref`` is ``ConsentPolicy.log_ref``: an id that is or holds an address is
    logged as its keyed pseudonym, whatever the event's consent said.
    The dead letters the ledger filed are counted here too, once their transaction committed.
    """
    for note in write.notes:
        level = logging.WARNING if note.what in ("retained_value_disagrees", "currency_mismatch") else logging.INFO
        change = ref(note.change_id) if note.change_id else note.change_id
        extra = {"client": client, "order_id": ref(note.order_id), "change_id": change, "decision": note.what}
        if note.detail:
            extra.update(note.detail)
        log.log(level, "order ledger", extra=extra)
    for letter in write.dead_letters:
        metrics.DEAD_LETTERS.labels(LEDGER_DESTINATION, letter.code).inc()


class Gateway:
    """The running pieces of one gateway process, built from one container."""

    def __init__(
        self,
        container: Container,
        *,
        storage: Storage | None = None,
        run_dispatcher: bool = True,
        dispatcher_link: DispatcherLink | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        """``run_dispatcher`` runs deliveries on this event loop; else ``dispatcher_link`` reaches the
        dispatcher process of ``gateway serve`` (its wake-up and heartbeat), or nothing does."""
        self.container = container
        self.now = now
        self.pipeline = Pipeline(container)
        self.orders = container.file.orders
        self.ledger = Ledger(self.pipeline.process, click_tags(container), self.orders.hold_unknown_refunds,
                             self.orders.hold_pending_refunds)
        self.storage = storage or open_storage(container.file.storage)
        self.run_dispatcher = run_dispatcher
        self.dispatcher_link = None if run_dispatcher else dispatcher_link
        self.dispatcher, self.follow_up = build_delivery(container, self.storage, now)
        # Called after every commit that made outbox items: the loop's own dispatcher, or a datagram to its process.
        self.wake_dispatcher: Callable[[], None] = (
            self.dispatcher.wake if run_dispatcher
            else self.dispatcher_link.wake if self.dispatcher_link is not None else _no_wake)
        self.limits = container.file.limits
        self.read_deadlines = ReadDeadlines(self.limits.read_timeout.total_seconds())
        self.max_depth = container.file.storage.max_outbox_depth
        self.pending_estimate = 0
        self.max_inflight = self.limits.max_inflight_per_client
        # Requests past their body and not yet answered, per client: each client has its own budget.
        self.inflight: dict[str, int] = {entry.config.type: 0 for entry in container.clients}
        self._proxies = TrustedProxies(container.trusted_proxies)
        self.first_party = FirstPartyCookies(container.file.cookies, self.pipeline.consent)
        self._requests = metrics.LabelCache(metrics.REQUESTS)
        self._events = metrics.LabelCache(metrics.EVENTS)
        self._ignored = metrics.LabelCache(metrics.WEBHOOKS_IGNORED, buffered=False)  # rare: counted at once
        self._durations = metrics.LabelCache(metrics.REQUEST_DURATION)  # buffered: flushed every second
        self._commit_waits = metrics.LabelCache(metrics.COMMIT_WAIT)
        metrics.declare(container)  # every known label set at zero, from the start
        self._depth_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._follow_up_task: asyncio.Task[None] | None = None
        self.debug = attach_debug(self)  # the /debug recorder, or None when debug.enabled is off

    async def start(self) -> None:
        self.read_deadlines.start()
        await self.storage.open()
        # Loaded once, here: no request reads it (see ConsentPolicy.use_key).
        self.pipeline.consent.use_key(await self.storage.install_secret(PSEUDONYM_SECRET))
        self.pending_estimate = await self.storage.pending_count()
        if self.run_dispatcher:
            await self.dispatcher.start()
        self._depth_task = asyncio.create_task(self._watch_depth())
        self._sweep_task = asyncio.create_task(self._sweep_orders_loop())
        if self.run_dispatcher:
            self._follow_up_task = asyncio.create_task(self._follow_up_loop())

    async def stop(self) -> None:
        for task in (self._depth_task, self._sweep_task, self._follow_up_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.run_dispatcher:
            await self.dispatcher.stop()
        if self.dispatcher_link is not None:
            self.dispatcher_link.close()
        await self.read_deadlines.stop()
        await self.storage.close()
        metrics.flush()

    async def _watch_depth(self) -> None:
        """Refresh the outbox depth used for backpressure, and hand buffered counts to the metrics, off the request path."""
        while True:
            await asyncio.sleep(DEPTH_REFRESH_SECONDS)
            metrics.flush()
            for client, count in self.inflight.items():
                metrics.IN_FLIGHT.labels(client).set(count)
            if self.dispatcher_link is not None:
                self.dispatcher_link.report()
            with contextlib.suppress(Exception):
                self.pending_estimate = await self.storage.pending_count()

    async def _follow_up_loop(self) -> None:
        """Ask vendors about the requests they process later (gateway.vendor_requests), off the request path."""
        await follow_up_forever(self.follow_up, FOLLOW_UP_SECONDS)

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
            self.wake_dispatcher()
        log_ledger(sweep.released, "sweep", self.pipeline.consent.log_ref)
        for code, count in sweep.expired.items():
            metrics.DEAD_LETTERS.labels(LEDGER_DESTINATION, code).inc(count)
            log.warning("held order changes expired", extra={"changes": count, "code": code})
        if sweep.pruned:
            log.info("pruned orders past orders.retention", extra={"orders": sweep.pruned})

    async def handle(self, scope: Scope, receive: Receive, entry: ClientEntry | None, client_name: str) -> Answer:
        """Answer one collection request; ``entry`` is None for a signed client switched off for want of a secret."""
        started = time.perf_counter()
        status = 500
        try:
            if entry is None:
                status = 503
                REJECTIONS.note(client_name, 503, NOT_CONFIGURED["error"])
                return json_answer(503, {**NOT_CONFIGURED, "detail": {"client": client_name}})
            answer = await self._handle(scope, receive, entry, client_name)
            status = answer.status
            return answer
        except BadRequest as exc:
            status = exc.status
            REJECTIONS.note(client_name, status, exc.error, exc.field)
            return error_answer(exc)
        except Overloaded as exc:
            status = 503
            REJECTIONS.note(client_name, 503, exc.error, reason=exc.reason, pending_estimate=self.pending_estimate,
                            inflight=self.inflight.get(client_name))
            detail = {"reason": exc.reason, "retry_after_seconds": int(exc.retry_after)}
            return json_answer(503, {"error": exc.error, "detail": detail}, {"Retry-After": exc.retry_after})
        except StorageUnavailable as exc:
            status = 503
            metrics.STORAGE_ERRORS.labels("enqueue").inc()
            REJECTIONS.note(client_name, 503, "storage unavailable", level=logging.ERROR, reason="storage",
                            storage_error=str(exc))
            return json_answer(503, {"error": "storage unavailable", "detail": None}, {"Retry-After": RETRY_AFTER_STORAGE})
        except Exception as exc:
            REJECTIONS.note(client_name, 500, "internal error", error_type=type(exc).__name__)
            return json_answer(500, {"error": "internal error", "detail": None})
        finally:
            self._requests.get(client_name, status).inc()
            self._durations.get(client_name).observe(time.perf_counter() - started)

    def refused_method(self, client_name: str, method: str) -> None:
        """A method the client's path does not serve (405): counted and logged like any refusal."""
        self._requests.get(client_name, 405).inc()
        REJECTIONS.note(client_name, 405, "method not allowed", method=method[:16])

    async def _handle(self, scope: Scope, receive: Receive, entry: ClientEntry, client_name: str) -> Answer:
        method = scope["method"]
        headers = scope_headers(scope)
        body = await read_body(receive, method, headers, self.limits.max_body_bytes, self.read_deadlines)
        inflight = self.inflight
        if inflight[client_name] >= self.max_inflight:  # a slot only once the body is here (see the docstring)
            raise Overloaded("too many requests in progress, try again later", RETRY_AFTER_BUSY, "inflight")
        inflight[client_name] += 1
        try:
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
            stamp(result.events, entry.source)  # where each event came from: the gateway's word, never the request's
            # Before anything reads an id (the first-party cookies, the order ledger): an address used as an id
            # becomes its keyed pseudonym when ad_user_data is denied. The rest of consent runs in the pipeline.
            self.pipeline.consent.pseudonymise_ids(result.events)
            if result.request_key is not None:  # stored for dedupe only: an address in it is stored as its pseudonym
                result.request_key = self.pipeline.consent.stored_key(result.request_key)
            cookies = self.first_party.apply(raw, result.events) if client_name in self.first_party.clients else ()
            note_parsed(result, client_name)  # the debugger's trace, when one is being recorded
            if result.ignored is not None:
                self._ignored.get(client_name, result.ignored).inc()
            if len(result.events) > self.limits.max_events_per_request:
                raise BadRequest(400, f"more than {self.limits.max_events_per_request} events in one request",
                                 field="body")
            for event in result.events:
                self._events.get(client_name, metrics.event_name_label(event.event_name)).inc()
            order_ids = [oid for oid in map(order_id_of, result.events) if oid is not None]
            if order_ids:
                await self._record_orders(result.events, order_ids, result.request_key, client_name)
            else:
                try:
                    outcome = self.pipeline.process(result.events, client_name)
                finally:
                    identity.forget()  # the phone numbers and digests its tags read: none outlives the request (Ledger.run: the same)
                if outcome.deliveries or result.request_key:
                    self._check_depth()
                    began = time.perf_counter()
                    await self.storage.enqueue(outcome.deliveries, raw.received_at, result.request_key)
                    self._commit_waits.get(client_name).observe(time.perf_counter() - began)
                    self._enqueued(len(outcome.deliveries))
            return Answer(result.status, result.body, result.media_type, result.headers, cookies)
        finally:
            inflight[client_name] -= 1

    async def _record_orders(self, events: list[Event], order_ids: list[str], request_key: str | None, client: str) -> None:
        """The ledger's path: read, decide, process and write in one storage transaction."""
        self._check_depth()
        now = self.now()

        def step(state: LedgerState) -> LedgerWrite:  # runs inside the storage's write transaction
            return self.ledger.run(events, client, state, now)

        began = time.perf_counter()
        write = await self.storage.record_orders(order_ids, bind_ledger_step(step), now, request_key)
        self._commit_waits.get(client).observe(time.perf_counter() - began)  # the ledger's step included
        if write is None:
            log.info("redelivered request ignored",
                     extra={"client": client, "orders": [self.pipeline.consent.log_ref(o) for o in order_ids]})
            return
        log_ledger(write, client, self.pipeline.consent.log_ref)
        self._enqueued(len(write.deliveries))

    def _check_depth(self) -> None:
        if self.pending_estimate >= self.max_depth:
            raise Overloaded("outbox full, try again later", RETRY_AFTER_OUTBOX_FULL, "outbox_full")

    def _enqueued(self, count: int) -> None:
        self.pending_estimate += count
        if count:
            self.wake_dispatcher()

    def dispatcher_alive(self) -> bool:
        """Deliveries are running: this loop's dispatcher, or the dispatcher process's heartbeat is fresh."""
        if self.run_dispatcher:
            return self.dispatcher.alive
        return self.dispatcher_link is None or self.dispatcher_link.alive()


def create_app(
    container: Container,
    *,
    storage: Storage | None = None,
    run_dispatcher: bool = True,
    dispatcher_link: DispatcherLink | None = None,
    now: Callable[[], datetime] = utcnow,
) -> Starlette:
    gateway = Gateway(container, storage=storage, run_dispatcher=run_dispatcher, dispatcher_link=dispatcher_link,
                      now=now)

    by_path: dict[str, Methods] = {}
    for entry in container.clients:
        name = entry.config.type
        for method, path in entry.module.ROUTES:
            by_path.setdefault(path, {})[method] = (entry, name)
    for off in container.switched_off:  # answered 503 "webhook not configured" (Gateway.handle)
        for method, path in off.module.ROUTES:
            by_path.setdefault(path, {})[method] = (None, off.type)

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        # Ready means a hit would be stored now: the outbox takes a write, not only a read.
        problem = await gateway.storage.write_problem()
        dispatcher_ok = gateway.dispatcher_alive()
        body: dict[str, Any] = {"storage": problem is None, "dispatcher": dispatcher_ok}
        if problem is not None:
            body["storage_problem"] = problem
        return json_response(200 if problem is None and dispatcher_ok else 503, body)

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
        if not request.url.path.startswith("/debug"):  # the debugger's own answers are its business
            metrics.REQUESTS.labels(NO_CLIENT, str(status)).inc()
            REJECTIONS.note(NO_CLIENT, status, message, method=request.method, path=request.url.path[:100])
        return json_response(status, {"error": message, "detail": None}, dict(getattr(exc, "headers", None) or {}))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        for off in container.switched_off:
            log.warning("webhook client switched off: its secret is not set", extra={
                "client": off.type, "variable": off.variable, "routes": [f"{m} {p}" for m, p in off.module.ROUTES]})
        log.info("gateway started", extra={"clients": [c.config.type for c in container.clients],
                                           "tags": [t.config.name for t in container.tags],
                                           "storage": storage_description(container.file.storage.url)})
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
    """uvicorn factory: the container path comes from GATEWAY_CONFIG (set by ``gateway serve``).

    With ``GATEWAY_DISPATCH_DIR`` set (``gateway serve --dispatcher process``, what ``auto`` picks on two
    CPUs or more) deliveries run in the dispatcher process that ``gateway serve`` supervises, not on this
    worker's event loop.
    """
    from gateway.logs import configure_logging

    configure_logging()
    link_dir = os.environ.get(DISPATCH_DIR_ENV)
    link = DispatcherLink(link_dir) if link_dir else None
    app = create_app(load_container_file(os.environ[CONFIG_ENV]), run_dispatcher=link is None, dispatcher_link=link)
    # The country names' tables (about a second to read, most of it pycountry's translations) now, not on the
    # first webhook that names a country: that one runs its ledger step inside the SQLite writer's transaction,
    # so every request's commit would wait the second with it.
    countries.load_tables()
    # Everything built so far (modules, schemas, the compiled container) lives as long as the
    # process: out of the collector's sight, the full collections it runs under load stay short.
    gc.collect()
    gc.freeze()
    return app
