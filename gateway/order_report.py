"""``gateway orders show`` and the debugger's order view: one order's ledger entry and deliveries, as JSON.

Its own module because both show the same report: the debugger's routes
(``gateway.debug.routes``) read it without importing the command line.
"""

from __future__ import annotations

from typing import Any

from gateway.storage.base import OrderHistory


def order_report(history: OrderHistory) -> dict[str, Any]:
    """The ledger entry and every delivery made for the order: ids, amounts, times, outcomes; nothing personal.

    ``value`` is what the conversion was uploaded with, ``total`` the order
    system's total (the base of refunds); each change says which value its
    adjustment used (``basis``) and what it restated to (``adjusted_value``).
    Of the identifiers kept for refunds only their names are shown.
    """
    order = history.order
    entry = None
    if order is not None:
        entry = {
            "order_id": order.order_id, "value": order.value, "total": order.total, "currency": order.currency,
            "refunded": order.refunded, "retained": order.retained,
            "retracted": order.retracted_at is not None, "retracted_at": order.retracted_at,
            "conversion_time": order.conversion_time, "conversion_uploaded_at": order.recorded_at,
            "uploaded_with_order_id": order.uploaded_with_order_id,
            "uploads": None if order.uploads is None else [
                {"conversion_action": u.action, "status": u.status, "idempotency_key": u.key} for u in order.uploads],
            "gclid": order.gclid, "gbraid": order.gbraid, "wbraid": order.wbraid,
            "consent": dict(order.consent), "identifiers_kept": [name for name, _ in order.identifiers],
            "source": order.source,
        }
    return {
        "order": entry,
        "changes": [
            {"change_id": c.change_id, "kind": c.kind, "amount": c.amount, "currency": c.currency,
             "occurred_at": c.occurred_at, "decision": c.action, "reason": c.reason, "retained_after": c.retained,
             "basis": c.basis, "adjusted_value": c.adjusted_value, "recorded_at": c.recorded_at}
            for c in history.changes
        ],
        "held": [
            {"change_id": h.change_id, "kind": h.event.get("event_name"), "amount": h.event.get("value"),
             "currency": h.event.get("currency"), "waiting_for": _WAITING_FOR[h.reason], "held_at": h.held_at,
             "expires_at": h.expires_at}
            for h in history.held
        ],
        "deliveries": [
            {"destination": d.destination, "tag": d.tag, "idempotency_key": d.idempotency_key, "status": d.status,
             "attempts": d.attempts, "code": d.code, "message": d.message, "created_at": d.created_at,
             "settled_at": d.settled_at, "next_attempt_at": d.next_attempt_at}
            for d in history.deliveries
        ],
    }


# Why a held change waits, in the words of `gateway orders show`.
_WAITING_FOR = {"order": "its order", "total": "the order system's total", "pending": "its money to move"}
