"""One request's order events against the order ledger: what to record, hold, adjust and deliver.

Runs inside the storage's write transaction (``Storage.record_orders``),
between the read of the ledger rows and the write of what it returns, so it
is pure: the ledger's arithmetic (``gateway.ledger``) and the pipeline
(consent, triggers, tags), which is passed in as a function.

- A purchase of an order the ledger does not know opens it and goes through
  the pipeline; how its Google Ads upload identified the conversion (with or
  without the order id) is read from the click-conversion tags that fired.
  A purchase seen before (the browser's hit and the order system's webhook
  are two copies of one order) fires nothing: it only fills what the ledger
  lacked, such as click ids or consent.
- A refund or cancellation of a known order gets the ledger's decision; a
  restatement or retraction goes through the pipeline with ``adjustment``
  filled, taking the order's consent for the signals the webhook did not
  carry (before the container's defaults apply), the order's click ids and
  currency, and an adjustment time after the conversion and after the
  order's previous adjustment. A change that decides nothing (seen before,
  after a retraction, another currency) goes no further.
- A change of an unknown order is held, without personal data, until its
  purchase arrives (then it is applied in the same transaction) or
  ``orders.hold_unknown_refunds`` passes (the storage's sweep dead-letters it).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Protocol, Sequence

from gateway.delivery import Delivery
from gateway.event import CONSENT_SIGNALS, Consent, Event
from gateway.ledger import (
    CANCELLED,
    PURCHASE,
    Change,
    Held,
    LedgerState,
    LedgerWrite,
    Note,
    Order,
    adjustment_for,
    adjustment_time,
    apply,
    decide,
    money,
    order_id_of,
    stable_id,
)


def change_of(event: Event, order_id: str) -> Change:
    """The change a refund or cancellation event reports.

    A refund without an amount is a full refund (GA4's ``refund`` without a
    value means the whole transaction); its id is ``extra.refund_id`` when the
    client set one, else the event id, else a digest of what it says.
    """
    if event.event_name == CANCELLED:
        return Change(order_id, "cancel", "cancel", event.timestamp, currency=event.currency)
    amount = money(event.value)
    full = event.extra.get("refund_type") == "full" or amount is None
    change_id = event.extra.get("refund_id") or event.event_id or stable_id(order_id, event.timestamp.isoformat(), amount)
    return Change(
        order_id=order_id,
        change_id=str(change_id),
        kind="full_refund" if full else "refund",
        occurred_at=event.timestamp,
        amount=amount,
        currency=event.currency,
        reported_retained=money(event.extra.get("retained_value")),
    )


def consent_pairs(consent: Consent) -> tuple[tuple[str, str], ...]:
    return tuple((s, getattr(consent, s)) for s in CONSENT_SIGNALS if getattr(consent, s) is not None)


def fill_consent(event: Event, stored: tuple[tuple[str, str], ...]) -> None:
    """Signals the event does not carry take the order's (before the container's defaults apply)."""
    for signal, state in stored:
        if getattr(event.consent, signal) is None:
            setattr(event.consent, signal, state)


_HELD_EXTRA = ("source", "refund_id", "refund_type", "retained_value")
_HELD_ITEM_KEYS = ("item_id", "quantity", "price")


def held_event_data(event: Event) -> dict[str, Any]:
    """A held change's event without anything personal: no user data, address, agent or free text."""
    data: dict[str, Any] = {
        "event_name": event.event_name,
        "timestamp": event.timestamp.isoformat(),
        "transaction_id": event.transaction_id,
        "consent": event.consent.model_dump(exclude_none=True),
        "extra": {k: event.extra[k] for k in _HELD_EXTRA if k in event.extra},
    }
    for name in ("event_id", "value", "currency", "gclid", "gbraid", "wbraid"):
        value = getattr(event, name)
        if value is not None:
            data[name] = value
    if event.items:
        data["items"] = [{k: item[k] for k in _HELD_ITEM_KEYS if k in item} for item in event.items]
    return data


class Outcome(Protocol):
    deliveries: list[Delivery]
    fired: list[tuple[int, str]]


Process = Callable[[list[Event], str], Outcome]  # Pipeline.process: events and the client's name


class Ledger:
    """Runs one request's events through the ledger and the pipeline.

    ``process`` is the pipeline (consent, triggers, tags) for a list of
    events; ``send_order_id`` maps the names of the tags that upload click
    conversions to whether they send the order id, so the ledger can record
    how the conversion was identified when it was uploaded.
    """

    def __init__(self, process: Process, send_order_id: dict[str, bool], hold: timedelta) -> None:
        self.process = process
        self.send_order_id = send_order_id
        # Without a firing click-conversion tag the conversion (if any) came from elsewhere,
        # e.g. the Google tag on the page, which sends the transaction id as the order id.
        self.default_send_order_id = all(send_order_id.values()) if send_order_id else True
        self.hold = hold

    def run(self, events: Sequence[Event], source: str, state: LedgerState, now: datetime) -> LedgerWrite:
        """Every event of one request, in order; order events against the ledger, the others straight through."""
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
        """Held changes whose order is in ``state.orders`` now (after a dead letter was replayed)."""
        write = LedgerWrite()
        orders = dict(state.orders)
        for held in state.held:
            if held.order_id in orders:
                self._apply_held(held, "sweep", orders, write, now)
        return write

    # -- purchases ----------------------------------------------------------------------------

    def _purchase(
        self, event: Event, order_id: str, source: str, orders: dict[str, Order],
        held: dict[str, list[Held]], write: LedgerWrite, now: datetime,
    ) -> None:
        carried = consent_pairs(event.consent)
        existing = orders.get(order_id)
        if existing is not None:
            enriched = _enrich(existing, event, carried)
            if enriched is not existing:
                orders[order_id] = write.orders[order_id] = enriched
                write.notes.append(Note(order_id, "purchase_enriched"))
            else:
                write.notes.append(Note(order_id, "purchase_seen_before"))
            return

        outcome = self.process([event], source)
        fired = [self.send_order_id[name] for _, name in outcome.fired if name in self.send_order_id]
        order = Order(
            order_id=order_id,
            conversion_time=event.timestamp,
            recorded_at=now,
            value=money(event.value),
            currency=event.currency.upper() if event.currency else None,
            gclid=event.gclid,
            gbraid=event.gbraid,
            wbraid=event.wbraid,
            consent=carried,
            uploaded_with_order_id=all(fired) if fired else self.default_send_order_id,
            source=source,
        )
        orders[order_id] = write.orders[order_id] = order
        self._deliver(order_id, outcome.deliveries, write)
        write.notes.append(Note(order_id, "order_recorded"))
        for waiting in held.pop(order_id, []):
            self._apply_held(waiting, source, orders, write, now)

    # -- refunds and cancellations ---------------------------------------------------------------

    def _change(
        self, event: Event, order_id: str, source: str, orders: dict[str, Order],
        held: dict[str, list[Held]], write: LedgerWrite, now: datetime,
    ) -> None:
        change = change_of(event, order_id)
        order = orders.get(order_id)
        if order is None:
            waiting = held.setdefault(order_id, [])
            if any(h.change_id == change.change_id for h in waiting):
                write.notes.append(Note(order_id, "held_before", change.change_id))
                return
            entry = Held(order_id, change.change_id, held_event_data(event), now, now + self.hold)
            waiting.append(entry)
            write.hold.append(entry)
            write.notes.append(Note(order_id, "held", change.change_id))
            return
        self._adjust(event, change, order, source, orders, write, now)

    def _apply_held(self, held: Held, source: str, orders: dict[str, Order], write: LedgerWrite, now: datetime) -> None:
        if held.id is None:  # held earlier in this same request, before its purchase
            write.hold.remove(held)
        else:
            write.release.append(held.id)
        event = Event.model_validate(held.event)
        self._adjust(event, change_of(event, held.order_id), orders[held.order_id], source, orders, write, now, released=True)

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
        if decision.action == "NONE":
            write.notes.append(Note(order.order_id, decision.reason, change.change_id))
            return
        write.notes.append(Note(order.order_id, ("released_" if released else "") + decision.action.lower(), change.change_id))
        fill_consent(event, order.consent)
        for name in ("gclid", "gbraid", "wbraid"):
            if getattr(event, name) is None:
                setattr(event, name, getattr(order, name))
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


def _enrich(order: Order, event: Event, carried: tuple[tuple[str, str], ...]) -> Order:
    """A later copy of a purchase fills what the ledger lacks; it never changes what was uploaded."""
    changes: dict[str, Any] = {}
    for name in ("gclid", "gbraid", "wbraid"):
        if getattr(order, name) is None and getattr(event, name) is not None:
            changes[name] = getattr(event, name)
    known = dict(order.consent)
    added = [(s, v) for s, v in carried if s not in known]
    if added:
        changes["consent"] = tuple(sorted({**known, **dict(added)}.items(), key=lambda kv: CONSENT_SIGNALS.index(kv[0])))
    if order.value is None and event.value is not None:
        changes["value"] = money(event.value)
    if order.currency is None and event.currency:
        changes["currency"] = event.currency.upper()
    return replace(order, **changes) if changes else order
