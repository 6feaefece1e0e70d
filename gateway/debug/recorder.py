"""Writing a request's path into its trace: the hooks the gateway calls, and what they note.

The gateway calls in at four places, each a line or two in shared code.
With ``debug.enabled`` off they only carry the trace id (for log lines) and
record nothing:

- ``TraceMiddleware`` (``gateway.debug.middleware``) around every collection
  route: the trace id, the request as received, the status and timings;
- ``note_parsed`` after the client parsed the request: the events as the
  client built them and where each consent signal came from;
- ``Pipeline.observe`` (set by ``attach``) after each pipeline run: consent
  decisions, every trigger's result, tags fired and skipped, deliveries;
- ``bind_ledger_step`` around the order ledger's step: the ledger's
  decisions, and the request's context carried into the storage's writer
  thread so that the pipeline hook finds its trace there too.

Delivery attempts come from ``TracingSender`` (``gateway.debug.senders``).

Consent sources. Clients set the consent on the event; only the client knows
which wire field said what. Every client but GA4 has one source for all four
signals (the beacon's JSON ``consent`` object, a webhook's fields), so the
client's type says it. GA4 has two (``gcs`` and ``gcd``, and ``gcd`` wins
where both speak), so its ``parse`` leaves a per-event note in
``ClientResult.consent_sources``. A signal the pipeline filled from
``consent.default`` is ``default``; one the order ledger filled from the
order it adjusts is ``order``; a released held change's are ``held``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from gateway.debug import masking
from gateway.delivery import FINAL_OUTCOMES
from gateway.debug.trace import CURRENT, MAX_ATTEMPTS_KEPT, MAX_RUNS_KEPT, TRACE_ID, Delivery, Trace, TraceBuffer
from gateway.event import CONSENT_SIGNALS, Event
from gateway.tag import Skip

if TYPE_CHECKING:
    from gateway.client import ClientResult
    from gateway.config import Container
    from gateway.consent import ConsentDecision
    from gateway.delivery import Delivery as OutboxDelivery
    from gateway.delivery import Result
    from gateway.ledger import LedgerState, LedgerWrite
    from gateway.sender import PendingItem

log = logging.getLogger("gateway.debug")

# The one wire source of each client that has only one; GA4 notes its own per signal.
CLIENT_CONSENT_SOURCE: dict[str, str] = {
    "json_beacon": "json",
    "order_webhook": "webhook",
    "shopify": "webhook",
    "woocommerce": "webhook",
}


class TriggerInfo:
    """The triggers that tags use, each with the names of its tags: what the pipeline evaluates."""

    def __init__(self, container: Container) -> None:
        self.triggers: dict[str, Any] = {}
        self.tags_of: dict[str, list[str]] = {}
        self.builders: dict[str, tuple[Callable[..., Any], Any]] = {}
        for entry in container.tags:
            name = entry.trigger.name
            self.triggers[name] = entry.trigger
            self.tags_of.setdefault(name, []).append(entry.config.name)
            self.builders[entry.config.name] = (entry.module.build, entry.config)

    def explain(self, event: Event) -> list[dict[str, Any]]:
        out = []
        for name, trigger in self.triggers.items():
            ok, failed = trigger.explain(event)
            out.append({"trigger": name, "tags": self.tags_of[name], "result": ok, "failed": failed})
        return out


# -- noting things in a trace ----------------------------------------------------------------------


def note_request(trace: Trace, query: str, headers: dict[str, str], body: bytes, client_ip: str | None) -> None:
    """The request as received, masked: parameters decoded, credentials hidden, personal values cut."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    trace.request = {
        "method": trace.method,
        "path": trace.path,
        "query": masking.mask_params(query) if query else [],
        "headers": masking.mask_headers(headers),
        "body": masking.mask_body(body, content_type),
        "body_bytes": len(body),
        "client_ip": masking.mask_ip(client_ip) if client_ip else None,
    }


def note_client_events(trace: Trace, result: ClientResult, client: str) -> None:
    """The events as the client built them (before consent), and each signal's wire source."""
    trace.client = client
    notes = getattr(result, "consent_sources", None)
    kind = CLIENT_CONSENT_SOURCE.get(client, "request")
    for index, event in enumerate(result.events):
        set_signals = [s for s in CONSENT_SIGNALS if getattr(event.consent, s) is not None]
        note = notes[index] if notes is not None and index < len(notes) else {}
        sources = {s: note.get(s, kind) for s in set_signals}
        trace.sources[id(event)] = (index, sources)
        # The ids too, as the client read them: before consent, an order id may still be an email address.
        trace.events.append({"index": index, "event_name": event.event_name,
                             "transaction_id": masking.mask_tree(event.transaction_id),
                             "event_id": masking.mask_tree(event.event_id),
                             "event": masking.mask_tree(event.to_json_dict())})


def note_run(
    trace: Trace,
    events: Sequence[Event],
    decisions: Sequence[ConsentDecision],
    fired: Sequence[tuple[int, str]],
    skipped: Sequence[tuple[int, str, str]],
    deliveries: Sequence[OutboxDelivery],
    triggers: TriggerInfo,
) -> list[str]:
    """One pipeline run: each event after consent, its triggers, tags and deliveries. Returns the new keys."""
    by_event = _attribute(events, fired, deliveries, triggers)
    keys: list[str] = []
    for index, event in enumerate(events):
        if len(trace.runs) >= MAX_RUNS_KEPT:
            break
        decision = decisions[index] if index < len(decisions) else None
        known = trace.sources.get(id(event))
        consent = []
        for signal in CONSENT_SIGNALS:
            if decision is not None and signal in decision.defaulted:
                source = "default"
            elif known is None:
                source = "held"
            else:
                source = known[1].get(signal, "order")
            consent.append({"signal": signal, "state": getattr(event.consent, signal), "source": source})
        run_keys = []
        for delivery in by_event[index]:
            run_keys.append(delivery.idempotency_key)
            if delivery.idempotency_key not in trace.deliveries:
                trace.deliveries[delivery.idempotency_key] = Delivery(
                    key=delivery.idempotency_key, destination=delivery.destination, tag=delivery.tag,
                    batch_key=delivery.batch_key, item=masking.mask_tree(delivery.item),
                    not_before=delivery.not_before.isoformat() if delivery.not_before else None,
                )
                keys.append(delivery.idempotency_key)
        trace.runs.append({
            "client_event": None if known is None else known[0],
            "event_name": event.event_name,
            "event": masking.mask_tree(event.to_json_dict()),
            "consent": consent,
            "removed": list(decision.removed) if decision is not None else [],
            "triggers": triggers.explain(event),
            "fired": [name for i, name in fired if i == index],
            "skipped": [{"tag": name, "reason": reason} for i, name, reason in skipped if i == index],
            "deliveries": [masking.mask_text(key) for key in run_keys],  # a key holds the event id
        })
    return keys


def _attribute(
    events: Sequence[Event], fired: Sequence[tuple[int, str]], deliveries: Sequence[OutboxDelivery], triggers: TriggerInfo
) -> list[list[OutboxDelivery]]:
    """Which event's tags built which delivery.

    The pipeline's outcome lists deliveries for the whole run. With one event
    that is the answer; with several, each fired tag is built again for its
    event (``build`` is pure and deterministic, the tag contract says so)
    and its deliveries are matched by idempotency key.
    """
    out: list[list[OutboxDelivery]] = [[] for _ in events]
    if len(events) == 1:
        out[0] = list(deliveries)
        return out
    owner: dict[str, int] = {}
    for index, tag in fired:
        build, config = triggers.builders.get(tag, (None, None))
        if build is None:
            continue
        try:
            built = build(events[index], config)
        except (Skip, Exception):  # noqa: BLE001 - a tag that fails here failed in the pipeline too
            continue
        for delivery in built:
            owner.setdefault(delivery.idempotency_key, index)
    for delivery in deliveries:
        out[owner.get(delivery.idempotency_key, len(events) - 1)].append(delivery)
    return out


def note_ledger(trace: Trace, write: LedgerWrite) -> None:
    """The ledger's decisions; an adjustment's with the value it used (basis, order total, uploaded, adjusted)."""
    for note in write.notes:
        # The change id holds the request's own key (a webhook's delivery id), which may be anything.
        entry: dict[str, Any] = {"order_id": masking.mask_tree(note.order_id), "decision": note.what,
                                 "change_id": masking.mask_text(note.change_id) if note.change_id else note.change_id}
        if note.detail:
            entry["value_used"] = dict(note.detail)
        trace.ledger.append(entry)


def note_attempt(
    trace: Trace,
    item: PendingItem,
    result: Result | None,
    failure: tuple[str, str] | None,
    requests: list[dict[str, Any]],
    send_ms: float,
    batch_size: int,
    max_attempts: int,
    now: Any,
) -> None:
    """One send of one item: outcome, vendor code and message, what went out, how long it took."""
    delivery = trace.deliveries.get(item.idempotency_key)
    if delivery is None:
        return
    attempt_no = item.attempts + 1
    if result is None:  # the send raised or timed out: the dispatcher retries every item of the batch
        code, message = failure or ("exception", "no result")
        outcome, retry_after = "retry", None
    else:
        outcome, code, message, retry_after = result.outcome, result.code, result.message, result.retry_after
    if outcome in FINAL_OUTCOMES:  # skipped and superseded are final too; the attempt keeps the outcome
        delivery.status = "delivered"
    elif outcome == "retry" and attempt_no < max_attempts:
        delivery.status = "retry"
    else:
        delivery.status = "dead_letter"
    delivery.attempt_count = attempt_no
    delivery.attempts.append({
        "at": now.isoformat(timespec="milliseconds"),
        "attempt": attempt_no,
        "outcome": outcome,
        "code": code,
        "message": masking.mask_text(message) if message else None,
        "retry_after": retry_after,
        "next": delivery.status,
        "send_ms": round(send_ms, 3),
        "waited_ms": round(max(0.0, (now - item.created_at).total_seconds()) * 1000, 3),
        "batch_size": batch_size,
        "requests": requests,
    })
    if len(delivery.attempts) > MAX_ATTEMPTS_KEPT:
        del delivery.attempts[1]  # keep the first attempt and the latest ones


# -- the recorder ------------------------------------------------------------------------------------


class Recorder:
    """The debugger's state in one gateway process: the ring buffer and what the hooks need."""

    def __init__(self, container: Container, keep: int) -> None:
        self.container = container
        self.buffer = TraceBuffer(keep)
        self.triggers = TriggerInfo(container)
        self.max_attempts = container.file.delivery.max_attempts
        self.max_body = container.file.limits.max_body_bytes
        self.routes: dict[tuple[str, str], str] = {
            (method, path): entry.config.type for entry in container.clients for method, path in entry.module.ROUTES
        }

    # request path -----------------------------------------------------------------------------

    def begin(self, trace_id: str, method: str, path: str) -> Trace:
        trace = Trace(trace_id, method, path)
        trace.client = self.routes.get((method, path))
        return trace

    def finish(self, trace: Trace, query: str, headers: dict[str, str], body: bytes, client_ip: str | None) -> None:
        """Mask the request, publish the trace; forget its delivery keys if nothing was stored."""
        try:
            note_request(trace, query, headers, body, client_ip)
        except Exception:  # noqa: BLE001 - a debugger bug must never cost a request; the trace goes without
            log.exception("debugger could not note the request")
        trace.sources.clear()
        if trace.status is None or not 200 <= trace.status < 300:
            self.buffer.unindex(trace)
        self.buffer.publish(trace)

    def pipeline_done(self, events: list[Event], outcome: Any) -> None:
        """``Pipeline.observe``: runs inside the request (or its ledger step), after consent, rules and tags."""
        trace = CURRENT.get()
        if trace is None:
            return
        try:
            keys = note_run(trace, events, outcome.decisions, outcome.fired, outcome.skipped, outcome.deliveries,
                            self.triggers)
        except Exception:  # noqa: BLE001 - a debugger bug must never cost a request
            log.exception("debugger could not note a pipeline run")
            return
        trace.mark("pipeline")
        self.buffer.index(trace, keys)

    # delivery side ----------------------------------------------------------------------------

    def traces_for(self, items: Iterable[PendingItem]) -> list[tuple[PendingItem, Trace]]:
        by_key = self.buffer.by_key
        if not by_key:
            return []
        return [(item, trace) for item in items if (trace := by_key.get(item.idempotency_key)) is not None]

    def delivered(
        self, traced: list[tuple[PendingItem, Trace]], items: Sequence[PendingItem], results: Sequence[Result] | None,
        failure: tuple[str, str] | None, requests: list[dict[str, Any]], send_ms: float, now: Any,
    ) -> None:
        """Append one send's outcome to the trace of every traced item in the batch."""
        result_of: dict[int, Result] = {}
        if results is not None:
            result_of = {id(item): result for item, result in zip(items, results)}
        for item, trace in traced:
            try:
                note_attempt(trace, item, result_of.get(id(item)), failure, requests, send_ms, len(items),
                             self.max_attempts, now)
            except Exception:  # noqa: BLE001 - a debugger bug must never cost a delivery
                log.exception("debugger could not note a delivery attempt")
            self.buffer.touch(trace)


def note_parsed(result: ClientResult, client: str) -> None:
    """Hook after ``client.parse``: a no-op unless this request is being traced."""
    trace = CURRENT.get()
    if trace is not None:
        try:
            note_client_events(trace, result, client)
        except Exception:  # noqa: BLE001 - a debugger bug must never cost a request
            log.exception("debugger could not note the events")
        trace.mark("parsed")


def bind_ledger_step(step: Callable[[LedgerState], LedgerWrite]) -> Callable[[LedgerState], LedgerWrite]:
    """The ledger step run in this request's context, noting the ledger's decisions in its trace.

    The storage runs the step in its own writer thread, where the request's
    context variables are not set; without this its log lines would lose
    their trace id and the pipeline hook its trace. Returns ``step`` itself
    outside a request.
    """
    if TRACE_ID.get() is None:
        return step
    import contextvars

    context = contextvars.copy_context()

    def run(state: LedgerState) -> LedgerWrite:
        write = context.run(step, state)
        trace = context.get(CURRENT)
        if trace is not None:
            try:
                note_ledger(trace, write)
            except Exception:  # noqa: BLE001 - a debugger bug must never cost a request
                log.exception("debugger could not note the ledger's decisions")
        return write

    return run

