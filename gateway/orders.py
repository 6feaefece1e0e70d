"""One request's order events against the order ledger: what to record, hold, adjust and deliver.

Runs inside the storage's write transaction (``Storage.record_orders``),
between the read of the ledger rows and the write of what it returns, so it
is pure: the ledger's arithmetic (``gateway.ledger``), the translation from
and to events (``gateway.order_events``) and the pipeline (consent,
triggers, tags), which is passed in as a function.

- A purchase of an order the ledger does not know opens it and goes through
  the pipeline; which click-conversion tags uploaded it (the outbox items
  the ledger follows to learn the dispatcher's outcome) and whether they
  sent the order id is read from the tags that fired. A purchase seen
  before (the browser's hit and the order system's webhook are two copies
  of one order) fires nothing. Only an authenticated copy may fill what the
  ledger lacked: the order system's total, click ids, consent.
- A refund or cancellation (from an authenticated client: see
  ``ledger.order_id_of``) of a known order gets the ledger's decision; a
  restatement or retraction goes through the pipeline with ``adjustment``
  filled, taking the order's consent for the signals the webhook did not
  carry (before the container's defaults apply), the order's click ids,
  currency and kept identifiers, and an adjustment time after the
  conversion and after the order's previous adjustment. A change that
  decides nothing (seen before, after a retraction) goes no further; one in
  another currency without a rate becomes a dead letter.
- A change waits, without personal data (``Held``): for an unknown order
  until its purchase arrives or ``orders.hold_unknown_refunds`` passes (then
  the storage's sweep dead-letters it); a partial refund of an order known
  only from a browser hit for the order system's total, as long (then it is
  applied to the uploaded value); a refund whose money is still pending
  until a later webhook shows it succeeded, or ``orders.hold_pending_refunds``.
  A backstop change (Shopify ``orders/updated``) never waits for an unknown
  order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from gateway.delivery import Delivery
from gateway.event import CONSENT_SIGNALS, Event
from gateway import identity
from gateway.ledger import (
    PURCHASE,
    REFUND_CURRENCY_MISMATCH,
    Change,
    Held,
    HoldReason,
    LedgerDeadLetter,
    LedgerState,
    LedgerWrite,
    Note,
    Order,
    Upload,
    adjustment_for,
    adjustment_time,
    apply,
    basis_detail,
    decide,
    money,
    order_id_of,
)
from gateway.order_events import (
    change_of,
    consent_pairs,
    fill_consent,
    fill_identifiers,
    held_event_data,
    kept_identifiers,
)


class Outcome(Protocol):
    deliveries: list[Delivery]
    fired: list[tuple[int, str]]


Process = Callable[[list[Event], str], Outcome]  # Pipeline.process: events and the client's name


@dataclass(frozen=True, slots=True)
class ClickTag:
    """A tag that uploads click conversions: whether it sends the order id, and to which conversion action."""

    send_order_id: bool
    conversion_action: str | None = None


class Ledger:
    """Runs one request's events through the ledger and the pipeline.

    ``process`` is the pipeline (consent, triggers, tags) for a list of
    events; ``click_tags`` maps the names of the tags that upload click
    conversions to what the ledger must know of them.
    """

    def __init__(self, process: Process, click_tags: Mapping[str, ClickTag], hold: timedelta,
                 hold_pending: timedelta = timedelta(days=30)) -> None:
        self.process = process
        self.click_tags = dict(click_tags)
        # Without a firing click-conversion tag the conversion (if any) came from elsewhere,
        # e.g. the Google tag on the page, which sends the transaction id as the order id.
        self.default_send_order_id = all(t.send_order_id for t in click_tags.values()) if click_tags else True
        self.hold = hold
        self.hold_pending = hold_pending

    def run(self, events: Sequence[Event], source: str, state: LedgerState, now: datetime) -> LedgerWrite:
        """Every event of one request, in order; order events against the ledger, the others straight through."""
        try:
            return self._run(events, source, state, now)
        finally:
            identity.forget()  # the numbers and digests this step read (tags and kept identifiers): none outlives the request

    def _run(self, events: Sequence[Event], source: str, state: LedgerState, now: datetime) -> LedgerWrite:
        write = LedgerWrite()
        orders = dict(state.orders)
        held = _group_held(state.held)
        others: list[Event] = []
        for event in events:
            order_id = order_id_of(event)
            if order_id is None:
                others.append(event)
            elif event.event_name == PURCHASE:
                self._purchase(event, order_id, source, orders, held, write, now)
            else:
                self._change(event, order_id, source, orders, held, write, now)
        if others:
            write.deliveries.extend(self.process(others, source).deliveries)
        return write

    def release(self, state: LedgerState, now: datetime) -> LedgerWrite:
        """The sweep: held changes whose order is known now, or whose wait for the order system's total is over."""
        try:
            return self._release(state, now)
        finally:
            identity.forget()

    def _release(self, state: LedgerState, now: datetime) -> LedgerWrite:
        write = LedgerWrite()
        orders = dict(state.orders)
        for held in state.held:
            order = orders.get(held.order_id)
            if order is None or held.reason == "pending":
                continue
            if held.reason == "total" and order.total is None and held.expires_at > now:
                continue
            self._apply_held(held, "sweep", orders, write, now, expired=held.expires_at <= now)
        return write

    # -- purchases ----------------------------------------------------------------------------

    def _purchase(
        self, event: Event, order_id: str, source: str, orders: dict[str, Order],
        held: dict[str, list[Held]], write: LedgerWrite, now: datetime,
    ) -> None:
        carried = consent_pairs(event.consent)
        existing = orders.get(order_id)
        if existing is not None:
            enriched = _enrich(existing, event, carried) if event.authenticated else existing
            if enriched is existing:
                write.notes.append(Note(order_id, "purchase_seen_before"))
                return
            orders[order_id] = write.orders[order_id] = enriched
            write.notes.append(Note(order_id, "purchase_enriched"))
            if enriched.total is not None:
                self._apply_waiting(held, order_id, source, orders, write, now)
            return

        outcome = self.process([event], source)
        fired = [self.click_tags[name].send_order_id for _, name in outcome.fired if name in self.click_tags]
        uploads = tuple(
            Upload(tag.conversion_action, d.idempotency_key)
            for d in outcome.deliveries
            if (tag := self.click_tags.get(d.tag)) is not None and tag.conversion_action
        )
        effective = {s: getattr(event.consent, s) for s in CONSENT_SIGNALS}  # the pipeline filled the defaults in
        value = money(event.value)
        order = Order(
            order_id=order_id,
            conversion_time=event.timestamp,
            recorded_at=now,
            value=value,
            currency=event.currency.upper() if event.currency else None,
            gclid=event.gclid,
            gbraid=event.gbraid,
            wbraid=event.wbraid,
            consent=carried,
            uploaded_with_order_id=all(fired) if fired else self.default_send_order_id,
            source=source,
            total=value if event.authenticated else None,
            uploads=uploads,
            identifiers=kept_identifiers(event, effective),
        )
        orders[order_id] = write.orders[order_id] = order
        self._deliver(order_id, outcome.deliveries, write)
        write.notes.append(Note(order_id, "order_recorded"))
        self._apply_waiting(held, order_id, source, orders, write, now)

    def _apply_waiting(
        self, held: dict[str, list[Held]], order_id: str, source: str, orders: dict[str, Order],
        write: LedgerWrite, now: datetime,
    ) -> None:
        """Changes held for this order that can go now: all but those whose money is still pending."""
        waiting = held.get(order_id, [])
        ready = [h for h in waiting if h.reason != "pending"]
        held[order_id] = [h for h in waiting if h.reason == "pending"]
        for entry in ready:
            self._apply_held(entry, source, orders, write, now, held=held)

    # -- refunds and cancellations ---------------------------------------------------------------

    def _change(
        self, event: Event, order_id: str, source: str, orders: dict[str, Order],
        held: dict[str, list[Held]], write: LedgerWrite, now: datetime,
    ) -> None:
        change = change_of(event, order_id)
        order = orders.get(order_id)
        if order is not None and change.change_id in order.change_ids:
            write.notes.append(Note(order_id, "change_seen_before", change.change_id))
            return
        waiting = held.setdefault(order_id, [])
        same = [h for h in waiting if h.change_id == change.change_id]
        if change.pending:
            if order is None and change.backstop:
                write.notes.append(Note(order_id, "backstop_order_unknown", change.change_id))
            elif same:
                write.notes.append(Note(order_id, "held_before", change.change_id))
            else:
                self._hold(event, change, "pending", waiting, write, now)
            return
        settled = False
        for entry in same:
            if entry.reason != "pending":
                write.notes.append(Note(order_id, "held_before", change.change_id))
                return
            self._unhold(entry, waiting, write)  # its money moved: this report replaces the pending one
            write.notes.append(Note(order_id, "pending_settled", change.change_id))
            settled = True
        if order is None:
            if change.backstop and not settled:
                write.notes.append(Note(order_id, "backstop_order_unknown", change.change_id))
            else:
                self._hold(event, change, "order", waiting, write, now)
            return
        order = self._learn_total(order, change, orders, write)
        if _needs_total(order, change):
            self._hold(event, change, "total", waiting, write, now)
            return
        self._adjust(event, change, order, source, orders, write, now)

    def _hold(self, event: Event, change: Change, reason: HoldReason, waiting: list[Held], write: LedgerWrite,
              now: datetime) -> None:
        wait = self.hold_pending if reason == "pending" else self.hold
        entry = Held(change.order_id, change.change_id, held_event_data(event), now, now + wait, reason=reason)
        waiting.append(entry)
        write.hold.append(entry)
        write.notes.append(Note(change.order_id, "held" if reason == "order" else f"held_{reason}", change.change_id))

    @staticmethod
    def _unhold(entry: Held, waiting: list[Held], write: LedgerWrite) -> None:
        if entry in waiting:
            waiting.remove(entry)
        if entry.id is None:  # held earlier in this same request
            write.hold.remove(entry)
        else:
            write.release.append(entry.id)

    def _apply_held(
        self, entry: Held, source: str, orders: dict[str, Order], write: LedgerWrite, now: datetime,
        expired: bool = False, held: dict[str, list[Held]] | None = None,
    ) -> None:
        self._unhold(entry, [], write)
        event = Event.from_data(entry.event)
        change = change_of(event, entry.order_id)
        order = self._learn_total(orders[entry.order_id], change, orders, write)
        if _needs_total(order, change) and not expired:
            self._hold(event, change, "total", (held or {}).setdefault(entry.order_id, []), write, now)
            return
        self._adjust(event, change, order, source, orders, write, now, released=True)

    def _learn_total(self, order: Order, change: Change, orders: dict[str, Order], write: LedgerWrite) -> Order:
        """An order system's change that states the order's total makes it the base, when the ledger had none."""
        if order.total is not None or change.total is None or not _same_currency(order.currency, change.currency):
            return order
        updated = replace(order, total=change.total)
        orders[order.order_id] = write.orders[order.order_id] = updated
        return updated

    def _adjust(
        self, event: Event, change: Change, order: Order, source: str, orders: dict[str, Order],
        write: LedgerWrite, now: datetime, released: bool = False,
    ) -> None:
        decision = decide(order, change)
        if decision.reason == "duplicate":
            write.notes.append(Note(order.order_id, "change_seen_before", change.change_id))
            return
        at = adjustment_time(order, change)
        updated, applied = apply(order, change, decision, at, now)
        orders[order.order_id] = write.orders[order.order_id] = updated
        write.changes.append(applied)
        if decision.disagrees:
            write.notes.append(Note(order.order_id, "retained_value_disagrees", change.change_id))
        if decision.reason == "currency_mismatch":
            letter = Held(order.order_id, change.change_id, held_event_data(event), now, now)
            write.dead_letters.append(LedgerDeadLetter(
                letter, REFUND_CURRENCY_MISMATCH,
                f"refund in {change.currency} of an order in {order.currency}, without an exchange rate"))
        if decision.action == "NONE":
            write.notes.append(Note(order.order_id, decision.reason, change.change_id))
            return
        write.notes.append(Note(order.order_id, ("released_" if released else "") + decision.action.lower(),
                                change.change_id, basis_detail(order, decision)))
        fill_consent(event, order.consent)
        for name in ("gclid", "gbraid", "wbraid"):
            if getattr(event, name) is None:
                setattr(event, name, getattr(order, name))
        fill_identifiers(event, order.identifiers)
        if event.currency is None:
            event.currency = order.currency
        if event.value is None and order.retained is not None:
            event.value = float(order.retained)  # what a full refund or cancellation takes back
        event.timestamp = at
        event.adjustment = adjustment_for(order, change, decision)
        self._deliver(order.order_id, self.process([event], source).deliveries, write)

    @staticmethod
    def _deliver(order_id: str, deliveries: Iterable[Delivery], write: LedgerWrite) -> None:
        for delivery in deliveries:
            write.deliveries.append(delivery)
            write.order_deliveries.append((order_id, delivery.idempotency_key))


def _group_held(held: Iterable[Held]) -> dict[str, list[Held]]:
    out: dict[str, list[Held]] = {}
    for entry in held:
        out.setdefault(entry.order_id, []).append(entry)
    return out


def _same_currency(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a.upper() == b.upper()


def _needs_total(order: Order, change: Change) -> bool:
    """A partial refund of an order only a browser reported waits for the order system's total: its base."""
    return change.kind == "refund" and order.total is None and order.retracted_at is None


def _enrich(order: Order, event: Event, carried: tuple[tuple[str, str], ...]) -> Order:
    """An authenticated later copy of a purchase fills what the ledger lacks; it never changes what was uploaded."""
    changes: dict[str, Any] = {}
    for name in ("gclid", "gbraid", "wbraid"):
        if getattr(order, name) is None and getattr(event, name) is not None:
            changes[name] = getattr(event, name)
    known = dict(order.consent)
    added = [(s, v) for s, v in carried if s not in known]
    if added:
        changes["consent"] = tuple(sorted({**known, **dict(added)}.items(), key=lambda kv: CONSENT_SIGNALS.index(kv[0])))
    value = money(event.value)
    currency = event.currency.upper() if event.currency else None
    if order.value is None and value is not None:
        changes["value"] = value
    if order.currency is None and currency:
        changes["currency"] = currency
    if order.total is None and value is not None and _same_currency(order.currency, currency):
        changes["total"] = value
    if not order.identifiers:
        identifiers = kept_identifiers(event, {**known, **dict(carried)})  # explicit grants only: no defaults here
        if identifiers:
            changes["identifiers"] = identifiers
    return replace(order, **changes) if changes else order
