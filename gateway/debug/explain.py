"""Explain: what the current container would do with a request, without storing or sending anything.

A request is given as JSON, in the shape of the GA4 fixtures
(``tests/fixtures/ga4/*.json``)::

    {"method": "POST", "path": "/collect", "query": "v=2&en=purchase" or {"en": "purchase"},
     "headers": {"Content-Type": "application/json"}, "body": "..." or {...} or null}

``path`` defaults to ``/g/collect`` (the GA4 fixtures leave it out); ``url``
(``/g/collect?v=2&...``) may replace ``path`` and ``query``.

The request goes through the same client ``parse``, the same consent code,
the same compiled triggers and the same tag ``build`` functions as on the
request path, and every delivery through the destination's own sender
switched to ``dry_run``, which builds exactly the request a live send would
make and hands it to a recorder instead of the network. The result is a
``Trace``, so the page shows an explanation and a recorded request alike.

Two deliberate differences from the request path:

- The loop over tags is repeated here rather than calling
  ``Pipeline.process``, because that counts metrics: explaining a request
  from the page must not show up as tag fires on the operator's dashboard.
  It is the same few lines (consent, ``trigger.matches``, ``build``, ``Skip``).
- Order events (a purchase, refund or cancellation with a transaction id)
  take the order ledger's path when they arrive for real: a refund is
  decided against the stored order. Explain has no storage, so it runs them
  through the pipeline as they are and says so in the trace's ledger notes.
  ``gateway orders show ORDER_ID`` shows what the ledger holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote, urlencode

import orjson

from gateway.client import RawRequest, stamp
from gateway.config import Container
from gateway.consent import ConsentPolicy
from gateway.debug.recorder import TriggerInfo, note_attempt, note_client_events, note_request, note_run
from gateway.debug.senders import masked_request
from gateway.debug.trace import Trace, new_trace_id
from gateway.delivery import Delivery
from gateway.errors import BadRequest
from gateway.event import Event
from gateway import identity
from gateway.ledger import order_id_of
from gateway.netaddr import resolve_client_ip
from gateway.pipeline import Outcome
from gateway.sender import DryRunRecorder, OutgoingRequest, PendingItem, Sender, SenderContext
from gateway.tag import Skip

DEFAULT_PATH = "/g/collect"


class SpecError(ValueError):
    """The request to explain is not in the expected shape; the message names the key."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- the request -------------------------------------------------------------------------------------


def request_from_spec(spec: Any) -> tuple[str, str, str, dict[str, str], bytes, str]:
    """``(method, path, query, headers, body, peer)`` from a JSON request description."""
    if not isinstance(spec, Mapping):
        raise SpecError("the request must be a JSON object with method, path, query, headers and body")
    method = spec.get("method", "GET")
    if not isinstance(method, str) or not method.isalpha():
        raise SpecError("method: expected an HTTP method such as GET or POST")
    path = spec.get("path", DEFAULT_PATH)
    query: Any = spec.get("query", "")
    if "url" in spec:
        if not isinstance(spec["url"], str):
            raise SpecError("url: expected a string such as /g/collect?v=2&en=page_view")
        path, _, query = spec["url"].partition("?")
    if not isinstance(path, str) or not path.startswith("/"):
        raise SpecError("path: expected a path starting with /")
    if isinstance(query, Mapping):
        query = urlencode({str(k): str(v) for k, v in query.items()})
    elif not isinstance(query, str):
        raise SpecError("query: expected a query string or an object of parameters")
    headers = spec.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise SpecError("headers: expected an object of header names to string values")
    body: Any = spec.get("body")
    if body is None:
        raw_body = b""
    elif isinstance(body, str):
        raw_body = body.encode("utf-8")
    elif isinstance(body, (dict, list)):
        raw_body = orjson.dumps(body)
    else:
        raise SpecError("body: expected a string, a JSON object or list, or null")
    peer = spec.get("client_ip", "127.0.0.1")
    if not isinstance(peer, str):
        raise SpecError("client_ip: expected an IP address")
    lowered = {str(k).lower(): v for k, v in headers.items() if str(k).lower() != "content-length"}
    return method.upper(), path, query.lstrip("?"), lowered, raw_body, peer


def spec_from_trace(trace: Trace) -> dict[str, Any]:
    """A recorded request in the explain file's shape. Its values are masked, and stay masked."""
    request = trace.request or {}
    query = "&".join(f"{quote(k, safe='.')}={quote(v, safe='')}" for k, v in request.get("query", []))
    body = request.get("body")
    if isinstance(body, list) and all(isinstance(line, list) for line in body):  # parameter lines
        body = "\r\n".join("&".join(f"{quote(k, safe='.')}={quote(v, safe='')}" for k, v in line) for line in body)
    headers = {k: v for k, v in (request.get("headers") or {}).items() if k.lower() != "content-length"}
    return {"method": trace.method, "path": trace.path, "query": query, "headers": headers, "body": body}


# -- the pipeline, without metrics -------------------------------------------------------------------


def run_pipeline(container: Container, events: list[Event], consent: ConsentPolicy | None = None) -> Outcome:
    """``Pipeline.process`` without its metrics and log lines (see the module docstring).

    Consent is the request path's: per-client defaults and the same redaction. The pseudonyms' key is
    the given policy's (the running gateway's, from the debugger), else the explanation's own (``gateway explain``
    reads no storage), and then an id's pseudonym here differs from the stored one.
    """
    outcome = Outcome()
    consent = consent or ConsentPolicy.for_container(container)
    try:
        _run_tags(container, events, consent, outcome)
    finally:
        identity.forget()  # as after a request: no phone number or digest the tags read stays in memory
    return outcome


def _run_tags(container: Container, events: list[Event], consent: ConsentPolicy, outcome: Outcome) -> None:
    for index, event in enumerate(events):
        outcome.decisions.append(consent.apply(event))
        for entry in container.tags:
            if not entry.trigger.matches(event):
                continue
            name = entry.config.name
            outcome.fired.append((index, name))
            try:
                outcome.deliveries.extend(entry.module.build(event, entry.config))
            except Skip as skip:
                outcome.skipped.append((index, name, skip.reason))
            except Exception:  # noqa: BLE001 - as in the pipeline: a tag bug is a skip, not a failure
                outcome.skipped.append((index, name, "error"))


# -- dry-run senders ---------------------------------------------------------------------------------


def _dry(model: Any) -> Any:
    if model is not None and "mode" in type(model).model_fields:
        return model.model_copy(update={"mode": "dry_run"})
    return model


def dry_run_senders(container: Container, record: DryRunRecorder, now: Callable[[], datetime] = utcnow) -> dict[str, Sender]:
    """Every destination's sender, built from the container with ``mode`` forced to ``dry_run``."""
    from tags import DESTINATIONS  # the registry imports every tag module; only needed here

    ctx = SenderContext(
        record_dry_run=record, now=now, request_timeout=container.file.delivery.request_timeout.total_seconds()
    )
    senders: dict[str, Sender] = {}
    for destination, module in DESTINATIONS.items():
        tags = [_dry(t.config) for t in container.tags if t.destination == destination]
        if tags:
            senders[destination] = module.Sender(_dry(container.destinations.get(destination)), tags, ctx)
    return senders


async def send_dry_run(
    container: Container,
    trace: Trace,
    deliveries: list[Delivery],
    also_record: DryRunRecorder | None = None,
    now: Callable[[], datetime] = utcnow,
) -> None:
    """Build each batch's request with the dry-run senders and note it in ``trace``; ``also_record`` keeps it."""
    batch: list[dict[str, Any]] = []

    async def record(destination: str, batch_key: str, request: OutgoingRequest, item_count: int) -> None:
        batch.append(masked_request(request))
        if also_record is not None:
            await also_record(destination, batch_key, request, item_count)

    senders = dry_run_senders(container, record, now)
    groups: dict[tuple[str, str], list[Delivery]] = {}
    for delivery in deliveries:
        groups.setdefault((delivery.destination, delivery.batch_key), []).append(delivery)
    timeout = container.file.delivery.request_timeout.total_seconds()
    max_attempts = container.file.delivery.max_attempts
    for sender in senders.values():
        await sender.start()
    try:
        for (destination, batch_key), group in groups.items():
            sender = senders.get(destination)
            if sender is None:  # a tag without a sender cannot be configured; nothing to build
                continue
            at = now()
            # The JSON the outbox would store: the http_request sender sends it as it is.
            items = [PendingItem(i, d.idempotency_key, None, d.tag, 0, at, raw=d.raw) for i, d in enumerate(group)]
            batch.clear()
            results = await asyncio.wait_for(sender.send(batch_key, items), timeout)
            for item, result in zip(items, results):
                note_attempt(trace, item, result, None, list(batch), 0.0, len(items), max_attempts, at)
                delivery = trace.deliveries.get(item.idempotency_key)
                if delivery is not None and delivery.status == "delivered":
                    delivery.status = "dry_run"  # built and recorded, never sent
    finally:
        for sender in senders.values():
            await sender.close()


# -- explain -----------------------------------------------------------------------------------------


async def explain(
    container: Container,
    spec: Any,
    *,
    now: Callable[[], datetime] = utcnow,
    also_record: DryRunRecorder | None = None,
    note: str = "explain: nothing was stored or sent",
    consent: ConsentPolicy | None = None,
) -> Trace:
    """The trace the request would leave, built without storage and without network.

    ``consent``: the running gateway's policy, whose key makes the install's pseudonyms, so an id shown
    here is the one stored; without it (``gateway explain`` reads no storage) the key is the explanation's own.
    """
    method, path, query, headers, body, peer = request_from_spec(spec)
    trace = Trace(new_trace_id(), method, path, note=note)
    triggers = TriggerInfo(container)
    client_ip = resolve_client_ip(peer, headers.get("x-forwarded-for"), container.trusted_proxies)
    note_request(trace, query, headers, body, client_ip)

    entry = next((c for c in container.clients if (method, path) in c.module.ROUTES), None)
    if entry is None:
        known = any(path == p for c in container.clients for _, p in c.module.ROUTES)
        trace.status = 405 if known else 404
        trace.error = {"error": "method not allowed" if known else "no client serves this path", "detail": None}
        return trace
    trace.client = entry.config.type
    raw = RawRequest(method, path, query, headers, body, client_ip, now())
    try:
        result = entry.module.parse(raw, entry.config)
        stamp(result.events, entry.source)
        consent = consent or ConsentPolicy.for_container(container)
        consent.pseudonymise_ids(result.events)  # as Gateway.handle does, before an order id is noted
    except BadRequest as exc:  # the client's answer; its body names fields, never values
        trace.status, trace.error = exc.status, exc.body()
        return trace
    trace.status = result.status
    note_client_events(trace, result, entry.config.type)
    for event in result.events:
        order_id = order_id_of(event)
        if order_id is not None:
            trace.ledger.append({"order_id": order_id, "decision": "explained_without_ledger", "change_id": None})
    outcome = run_pipeline(container, result.events, consent)
    note_run(trace, result.events, outcome.decisions, outcome.fired, outcome.skipped, outcome.deliveries, triggers)
    await send_dry_run(container, trace, outcome.deliveries, also_record, now)
    trace.sources.clear()
    return trace


async def explain_events(
    container: Container,
    trace: Trace,
    events: list[Event],
    client: str | None,
    also_record: DryRunRecorder | None = None,
    now: Callable[[], datetime] = utcnow,
) -> Trace:
    """Events (not a request) through consent, triggers, tags and dry-run senders, noted in ``trace``."""
    from gateway.client import ClientResult

    trace.client = client
    note_client_events(trace, ClientResult(events), client or "")
    outcome = run_pipeline(container, events)
    note_run(trace, events, outcome.decisions, outcome.fired, outcome.skipped, outcome.deliveries, TriggerInfo(container))
    await send_dry_run(container, trace, outcome.deliveries, also_record, now)
    trace.sources.clear()
    return trace

