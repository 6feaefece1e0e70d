"""The order ledger: what a conversion was worth, what has been refunded since, and what to tell the ad platforms.

A purchase opens an order (click ids, conversion time, value, currency, the
consent state it came with, whether its Google Ads upload carried the order
id). Refunds and cancellations are changes to it, and each change gets a
decision from the ledger's own arithmetic, never from the order system's:

- refunds add up; the retained value is ``value - all refunds so far``;
- a refund that leaves something is a ``RESTATEMENT`` to that retained value
  (Google's ``adjustedValue`` is the value after the change, not the
  difference), so two partial refunds restate twice, each from the total;
- a refund that brings the retained value to zero or below, a full refund and
  a cancellation are a ``RETRACTION``; a partial refund never retracts unless
  the arithmetic reaches zero;
- after a retraction nothing more happens; a change seen before (same id) is
  a no-op, which is what makes redelivered webhooks safe;
- a ``retained_value`` from the order system that disagrees with ours is
  reported (the caller logs the order id), never believed.

Adjustment times strictly increase per order and never precede the
conversion: Google drops a second restatement with the same adjustment time
as a duplicate, and refuses one before the conversion.

Everything here is pure arithmetic on values. ``gateway.orders`` turns one
request's events and the rows the storage loaded into a ``LedgerWrite``
(deliveries and row changes) that the storage commits in the same
transaction as its read. The ledger keeps no personal data: consent states,
click ids, amounts and times only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from gateway.delivery import Delivery
from gateway.event import Adjustment, Event

PURCHASE = "purchase"
REFUND = "refund"
CANCELLED = "order_cancelled"
ORDER_EVENT_NAMES = frozenset({PURCHASE, REFUND, CANCELLED})

# Where a dead-lettered held change is filed (dead_letters.destination): it never was a delivery.
LEDGER_DESTINATION = "order_ledger"
ORDER_NOT_FOUND = "order_not_found"

_STEP = timedelta(seconds=1)  # Google's adjustment times have whole seconds
_ZERO = Decimal(0)

ChangeKind = Literal["refund", "full_refund", "cancel"]
Action = Literal["RESTATEMENT", "RETRACTION", "NONE"]


# -- the rows -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    """One order's ledger row. ``recorded_at`` is when its conversion was handed to the outbox."""

    order_id: str
    conversion_time: datetime
    recorded_at: datetime
    value: Decimal | None = None
    currency: str | None = None
    gclid: str | None = None
    gbraid: str | None = None
    wbraid: str | None = None
    consent: tuple[tuple[str, str], ...] = ()  # (signal, granted|denied) for the signals the purchase carried
    uploaded_with_order_id: bool = True
    refunded: Decimal = _ZERO
    retracted_at: datetime | None = None
    last_adjusted_at: datetime | None = None
    source: str = ""
    change_ids: frozenset[str] = frozenset()

    @property
    def retained(self) -> Decimal | None:
        return None if self.value is None else self.value - self.refunded


@dataclass(frozen=True, slots=True)
class Change:
    """A refund or cancellation of one order, as the order system reported it."""

    order_id: str
    change_id: str
    kind: ChangeKind
    occurred_at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    reported_retained: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str  # partial_refund, refunded_to_zero, full_refund, cancelled, duplicate, already_retracted, ...
    refunded: Decimal  # all refunds after this change
    retained: Decimal | None  # the value after this change; RESTATEMENT's adjusted value
    disagrees: bool = False  # the order system's retained_value is not ours


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A change as the ledger recorded it, with its decision (for ``gateway orders show``)."""

    order_id: str
    change_id: str
    kind: ChangeKind
    occurred_at: datetime
    recorded_at: datetime
    action: Action
    reason: str
    amount: Decimal | None = None
    currency: str | None = None
    retained: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """A change for an order the ledger has not seen, waiting for it until ``expires_at``.

    ``event`` is the change's event without personal data (``held_event_data``).
    """

    order_id: str
    change_id: str
    event: dict[str, Any]
    held_at: datetime
    expires_at: datetime
    id: int | None = None

    def dead_letter_item(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "change_id": self.change_id, "event": self.event,
                "held_at": self.held_at.isoformat(), "hold_seconds": (self.expires_at - self.held_at).total_seconds()}


@dataclass(slots=True)
class LedgerState:
    """What the storage loaded, inside its write transaction, for the orders of one request."""

    orders: dict[str, Order] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth a log line: ids and a code, never personal data."""

    order_id: str
    what: str
    change_id: str | None = None


@dataclass(slots=True)
class LedgerWrite:
    """What to commit with the read: deliveries, row upserts, new changes, holds made and released."""

    deliveries: list[Delivery] = field(default_factory=list)
    orders: dict[str, Order] = field(default_factory=dict)
    changes: list[AppliedChange] = field(default_factory=list)
    hold: list[Held] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    order_deliveries: list[tuple[str, str]] = field(default_factory=list)  # (order id, idempotency key)
    notes: list[Note] = field(default_factory=list)


# -- money and ids --------------------------------------------------------------------------------


def money(value: float | int | str | Decimal | None) -> Decimal | None:
    """A float from the event model as the decimal it was written as (129.95, not 129.949999...)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def stable_id(*parts: object) -> str:
    """A short digest of the parts: the same refund reported twice gets the same id."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def order_id_of(event: Event) -> str | None:
    """The order an event belongs to: its transaction id, when it is a purchase, refund or cancellation."""
    if event.event_name not in ORDER_EVENT_NAMES or event.transaction_id is None:
        return None
    order_id = event.transaction_id.strip()
    return order_id or None


# -- the arithmetic -------------------------------------------------------------------------------


def decide(order: Order, change: Change) -> Decision:
    """What ``change`` does to ``order``: restate, retract, or nothing (with the reason)."""
    if change.change_id in order.change_ids:
        return Decision("NONE", "duplicate", order.refunded, order.retained)
    if order.retracted_at is not None:
        return Decision("NONE", "already_retracted", order.refunded, order.retained)
    if change.currency and order.currency and change.currency.upper() != order.currency.upper():
        return Decision("NONE", "currency_mismatch", order.refunded, order.retained)
    if change.kind == "cancel":
        return Decision("RETRACTION", "cancelled", order.refunded, _ZERO if order.value is not None else None)

    amount = change.amount if change.amount is not None else _ZERO
    refunded = order.refunded + amount
    retained = None if order.value is None else order.value - refunded
    disagrees = change.reported_retained is not None and retained is not None and change.reported_retained != retained
    if change.kind == "full_refund":
        return Decision("RETRACTION", "full_refund", refunded, _ZERO if retained is not None else None, disagrees)
    if amount <= _ZERO:
        return Decision("NONE", "no_amount", order.refunded, order.retained)
    if retained is None:
        return Decision("NONE", "order_value_unknown", refunded, None)
    if retained <= _ZERO:
        return Decision("RETRACTION", "refunded_to_zero", refunded, _ZERO, disagrees)
    return Decision("RESTATEMENT", "partial_refund", refunded, retained, disagrees)


def adjustment_time(order: Order, change: Change) -> datetime:
    """The change's time, moved past the conversion and the order's previous adjustment when needed."""
    moment = max(change.occurred_at, order.conversion_time + _STEP)
    if order.last_adjusted_at is not None:
        moment = max(moment, order.last_adjusted_at + _STEP)
    return moment


def apply(order: Order, change: Change, decision: Decision, at: datetime, now: datetime) -> tuple[Order, AppliedChange]:
    """The order after ``decision`` (taken at adjustment time ``at``) and the change as recorded."""
    updated = replace(order, change_ids=order.change_ids | {change.change_id})
    if decision.action != "NONE":
        updated = replace(updated, refunded=decision.refunded, last_adjusted_at=at)
    if decision.action == "RETRACTION":
        updated = replace(updated, retracted_at=at)
    elif decision.reason == "order_value_unknown":
        updated = replace(updated, refunded=decision.refunded)
    applied = AppliedChange(
        order_id=order.order_id, change_id=change.change_id, kind=change.kind, occurred_at=change.occurred_at,
        recorded_at=now, action=decision.action, reason=decision.reason, amount=change.amount,
        currency=change.currency, retained=decision.retained,
    )
    return updated, applied


def adjustment_for(order: Order, change: Change, decision: Decision) -> Adjustment:
    return Adjustment(
        type="RETRACTION" if decision.action == "RETRACTION" else "RESTATEMENT",
        adjustment_id=f"{order.order_id}/{change.change_id}",
        order_id=order.order_id,
        uploaded_with_order_id=order.uploaded_with_order_id,
        gclid=order.gclid,
        conversion_time=order.conversion_time,
        conversion_uploaded_at=order.recorded_at,
        adjusted_value=float(decision.retained) if decision.action == "RESTATEMENT" and decision.retained is not None else None,
        currency=order.currency,
    )
