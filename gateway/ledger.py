"""The order ledger: what a conversion was worth, what has been refunded since, and what to tell the ad platforms.

Only the order system moves money. A purchase opens an order whoever sends
it (click ids, conversion time, the value uploaded, currency, the consent it
came with, how its Google Ads upload named the conversion), but a refund or
a cancellation changes it only when it comes from an authenticated client
(the signed order webhooks: ``Event.authenticated``). A browser's refund is
an ordinary event for the rules, never a change here (``order_id_of``).

Each change gets a decision from the ledger's own arithmetic, never from the
order system's:

- the base of every change is the order system's total (``Order.total``)
  once it reported the order, else the uploaded value; refunds add up, in
  the order's currency, and what remains is ``base - all refunds so far``;
- a refund that leaves something is a ``RESTATEMENT``. Google's
  ``adjustedValue`` is the conversion's value after the change, in the basis
  it was uploaded in: the uploaded value times the share of the order that
  remains (a browser's purchase net of tax and shipping stays net), which is
  simply what remains when the upload was the order system's total
  (``Decision.basis`` says which);
- a refund that brings what remains to zero or below, a full refund and a
  cancellation are a ``RETRACTION``; a partial refund never retracts unless
  the arithmetic reaches zero;
- after a retraction nothing more happens; a change seen before (same id) is
  a no-op, which is what makes redeliveries and replays safe;
- a refund in another currency than the order's is converted with the rate
  the order system supplied, and without one it is a dead letter
  (``refund_currency_mismatch``), never silently ignored;
- a ``retained_value`` from the order system that disagrees with ours is
  reported (the caller logs the order id), never believed.

Adjustment times strictly increase per order and never precede the
conversion: Google drops a second restatement with the same adjustment time
as a duplicate, and refuses one before the conversion.

Everything here is pure arithmetic on values. ``gateway.orders`` turns one
request's events and the rows the storage loaded into a ``LedgerWrite``
(deliveries and row changes) that the storage commits in the same
transaction as its read. The ledger keeps consent states, click ids, amounts
and times, and the purchase's hashed identifiers only when its consent let
them be kept (``gateway.order_events``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from gateway.delivery import Delivery
from gateway.event import Adjustment, ConversionStatus, Event

PURCHASE = "purchase"
REFUND = "refund"
CANCELLED = "order_cancelled"
ORDER_EVENT_NAMES = frozenset({PURCHASE, REFUND, CANCELLED})

# Where a dead-lettered change is filed (dead_letters.destination): it never was a delivery.
LEDGER_DESTINATION = "order_ledger"
ORDER_NOT_FOUND = "order_not_found"  # held for an order that never came
REFUND_CURRENCY_MISMATCH = "refund_currency_mismatch"  # refunded in another currency, without a rate
REFUND_STILL_PENDING = "refund_still_pending"  # its money never showed as moved

_STEP = timedelta(seconds=1)  # Google's adjustment times have whole seconds
_ZERO = Decimal(0)
_CENT = Decimal("0.01")

ChangeKind = Literal["refund", "full_refund", "cancel"]
Action = Literal["RESTATEMENT", "RETRACTION", "NONE"]
# Why a change waits: its order is unknown; its order is known only from a browser hit and the
# order system's total (the base of a partial refund) is not; its money has not moved yet.
HoldReason = Literal["order", "total", "pending"]
# What a restatement's adjusted value was computed from (see the module docstring).
Basis = Literal["order_total", "share_of_order_total", "uploaded_value"]


# -- the rows -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload of the order's conversion by this gateway: the conversion action, the outbox item, what became of it.

    ``status`` is resolved from the outbox and the dead letters each time
    the order is loaded: ``pending`` until the dispatcher delivered it
    (``uploaded``) or dead-lettered it (``failed``).
    """

    action: str
    key: str
    status: ConversionStatus = "pending"


@dataclass(frozen=True, slots=True)
class Order:
    """One order's ledger row. ``recorded_at`` is when its conversion was handed to the outbox.

    ``value`` is the conversion's value as uploaded (by the copy of the
    purchase that arrived first, whoever sent it); ``total`` is the order
    system's own total, the base of every refund's share, once an
    authenticated client reported it. ``uploads`` is None for orders
    recorded before the ledger kept them. ``identifiers`` holds the
    purchase's hashed identifiers (sGTM's ``sha256_*`` names) and
    ``fbp``/``fbc``, each only when the purchase's consent allowed keeping it.
    """

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
    total: Decimal | None = None
    uploads: tuple[Upload, ...] | None = ()
    identifiers: tuple[tuple[str, str], ...] = ()

    @property
    def base(self) -> Decimal | None:
        """What refunds are a share of: the order system's total, else the uploaded value."""
        return self.total if self.total is not None else self.value

    @property
    def retained(self) -> Decimal | None:
        base = self.base
        return None if base is None else base - self.refunded

    def conversions(self) -> dict[str, ConversionStatus] | None:
        """Conversion action -> what became of this gateway's upload to it (``Adjustment.conversions``)."""
        if self.uploads is None:
            return None
        rank = {"uploaded": 3, "pending": 2, "failed": 1}
        out: dict[str, ConversionStatus] = {}
        for upload in self.uploads:
            known = out.get(upload.action)
            if known is None or rank[upload.status] > rank[known]:
                out[upload.action] = upload.status
        return out


@dataclass(frozen=True, slots=True)
class Change:
    """A refund or cancellation of one order, as the order system reported it (see ``OrderData``)."""

    order_id: str
    change_id: str
    kind: ChangeKind
    occurred_at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    reported_retained: Decimal | None = None
    pending: bool = False
    backstop: bool = False
    total: Decimal | None = None
    exchange_rate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str  # partial_refund, refunded_to_zero, full_refund, cancelled, duplicate, already_retracted, ...
    refunded: Decimal  # all refunds after this change, in the order's currency
    retained: Decimal | None  # what remains of the base after this change
    disagrees: bool = False  # the order system's retained_value is not ours
    adjusted: Decimal | None = None  # a RESTATEMENT's adjusted value: the conversion's value after the change
    basis: Basis | None = None  # what ``adjusted`` was computed from


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
    basis: Basis | None = None
    adjusted_value: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """A change waiting until ``expires_at``: for its order, for the order system's total, or for its money.

    ``event`` is the change's event without personal data (``held_event_data``).
    """

    order_id: str
    change_id: str
    event: dict[str, Any]
    held_at: datetime
    expires_at: datetime
    id: int | None = None
    reason: HoldReason = "order"

    def dead_letter_item(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "change_id": self.change_id, "event": self.event, "reason": self.reason,
                "held_at": self.held_at.isoformat(), "hold_seconds": (self.expires_at - self.held_at).total_seconds()}


@dataclass(frozen=True, slots=True)
class LedgerDeadLetter:
    """A change the ledger cannot apply, filed as a dead letter (destination ``order_ledger``) with ``code``."""

    held: Held
    code: str
    message: str


@dataclass(slots=True)
class LedgerState:
    """What the storage loaded, inside its write transaction, for the orders of one request."""

    orders: dict[str, Order] = field(default_factory=dict)
    held: list[Held] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth a log line: ids and a code, never personal data.

    ``detail`` says which value an adjustment used (basis, base, uploaded
    value, adjusted value), for the log line and the debugger.
    """

    order_id: str
    what: str
    change_id: str | None = None
    detail: dict[str, str] | None = None


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
    dead_letters: list[LedgerDeadLetter] = field(default_factory=list)


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
    """The order an event changes in the ledger: its transaction id, or None when it changes none.

    A purchase opens (or is a later copy of) its order whoever sent it; a
    refund or cancellation changes the order only when it comes from an
    authenticated client. Anything else goes through the pipeline as an
    ordinary event.
    """
    name = event.event_name
    if name not in ORDER_EVENT_NAMES or event.transaction_id is None:
        return None
    if name != PURCHASE and not event.authenticated:
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
    if change.kind == "cancel":
        return Decision("RETRACTION", "cancelled", order.refunded, _ZERO if order.base is not None else None)

    amount = in_order_currency(order, change)
    if change.kind == "full_refund":
        refunded = order.refunded + (amount or _ZERO)
        disagrees = _disagrees(change, order.base, refunded)
        return Decision("RETRACTION", "full_refund", refunded, _ZERO if order.base is not None else None, disagrees)
    if amount is None and change.amount is not None:
        return Decision("NONE", "currency_mismatch", order.refunded, order.retained)
    if amount is None or amount <= _ZERO:
        return Decision("NONE", "no_amount", order.refunded, order.retained)
    base = order.base
    refunded = order.refunded + amount
    if base is None:
        return Decision("NONE", "order_value_unknown", refunded, None)
    retained = base - refunded
    disagrees = _disagrees(change, base, refunded)
    if retained <= _ZERO:
        return Decision("RETRACTION", "refunded_to_zero", refunded, _ZERO, disagrees)
    adjusted, basis = restated_value(order, retained)
    if adjusted is None:
        return Decision("NONE", "uploaded_value_unknown", refunded, retained, disagrees, basis=basis)
    return Decision("RESTATEMENT", "partial_refund", refunded, retained, disagrees, adjusted, basis)


def in_order_currency(order: Order, change: Change) -> Decimal | None:
    """The change's amount in the order's currency: as reported, converted at the order system's rate, or None."""
    amount = change.amount
    if amount is None or not change.currency or not order.currency or change.currency.upper() == order.currency.upper():
        return amount
    if change.exchange_rate is None:
        return None
    return amount * change.exchange_rate


def restated_value(order: Order, retained: Decimal) -> tuple[Decimal | None, Basis]:
    """The conversion's value once ``retained`` of the base remains, and the basis it was computed in.

    Without the order system's total the uploaded value is the base itself;
    with it, an upload of that same total restates to what remains, and an
    upload in another basis (a browser's value net of tax and shipping) to
    its value times the share that remains, to the cent.
    """
    if order.total is None:
        return retained, "uploaded_value"
    if order.value is None:
        return None, "order_total"
    if order.value == order.total:
        return retained, "order_total"
    share = (order.value * retained / order.total).quantize(_CENT, rounding=ROUND_HALF_UP)
    return share, "share_of_order_total"


def _disagrees(change: Change, base: Decimal | None, refunded: Decimal) -> bool:
    return change.reported_retained is not None and base is not None and change.reported_retained != base - refunded


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
    elif decision.reason in ("order_value_unknown", "uploaded_value_unknown"):
        updated = replace(updated, refunded=decision.refunded)
    applied = AppliedChange(
        order_id=order.order_id, change_id=change.change_id, kind=change.kind, occurred_at=change.occurred_at,
        recorded_at=now, action=decision.action, reason=decision.reason, amount=change.amount,
        currency=change.currency, retained=decision.retained, basis=decision.basis, adjusted_value=decision.adjusted,
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
        adjusted_value=float(decision.adjusted) if decision.action == "RESTATEMENT" and decision.adjusted is not None else None,
        currency=order.currency,
        conversions=order.conversions(),
    )


def basis_detail(order: Order, decision: Decision) -> dict[str, str] | None:
    """Which value an adjustment used, as text for the log line, the debugger and ``gateway orders show``."""
    if decision.action != "RESTATEMENT" or decision.basis is None:
        return None
    detail = {"basis": decision.basis, "adjusted_value": str(decision.adjusted)}
    if order.total is not None:
        detail["order_total"] = str(order.total)
    if order.value is not None:
        detail["uploaded_value"] = str(order.value)
    return detail
