"""One request's events through ``Ledger.run``, with the real pipeline of a small container.

Its http_request tag (dry run) forwards every order event, so each delivery
shows what the tags would see, ``adjustment`` included.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from gateway.config import load_container_text
from gateway.event import Consent, Event
from gateway.ledger import Held, LedgerState, Order
from gateway.orders import Ledger, change_of, held_event_data
from gateway.pipeline import Pipeline

T0 = datetime(2026, 4, 23, 12, 31, 9, tzinfo=timezone.utc)
NOW = datetime(2026, 4, 23, 12, 31, 30, tzinfo=timezone.utc)


def at(days: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(days=days, seconds=seconds)


ORDER = Order(order_id="ORD-1", conversion_time=T0, recorded_at=NOW, value=Decimal("129.95"), currency="EUR",
              gclid="gclid-1")


def test_a_refund_event_without_amount_is_a_full_refund_with_a_stable_id() -> None:
    event = Event(event_name="refund", transaction_id="ORD-1", timestamp=at(days=3), currency="EUR")
    first, second = change_of(event, "ORD-1"), change_of(event.model_copy(deep=True), "ORD-1")

    assert (first.kind, first.amount, first.change_id == second.change_id) == ("full_refund", None, True)


def test_a_held_change_keeps_nothing_personal() -> None:
    event = Event(
        event_name="refund", transaction_id="ORD-1", timestamp=at(days=3), value=10.0, currency="EUR",
        user_data={"email_address": "jane@example.com"}, ip_override="203.0.113.7", user_agent="Mozilla/5.0",
        items=[{"item_id": "SKU-1", "item_name": "Engraved for Jane", "quantity": 1, "price": 10.0}],
        consent=Consent(ad_user_data="granted"), extra={"source": "order_system", "refund_id": "r1", "note": "jane"},
    )

    assert held_event_data(event) == {
        "event_name": "refund", "timestamp": "2026-04-26T12:31:09+00:00", "transaction_id": "ORD-1",
        "consent": {"ad_user_data": "granted"}, "extra": {"source": "order_system", "refund_id": "r1"},
        "value": 10.0, "currency": "EUR", "items": [{"item_id": "SKU-1", "quantity": 1, "price": 10.0}],
    }




CONTAINER = """
consent:
  default: {ad_storage: denied, analytics_storage: denied, ad_user_data: denied, ad_personalization: denied}
triggers:
  orders: {any: [{field: event_name, op: in, value: [purchase, refund, order_cancelled]}]}
tags:
  - {name: forward, type: http_request, trigger: orders, url: "http://127.0.0.1:9/orders", mode: dry_run}
"""


@pytest.fixture
def ledger() -> Ledger:
    pipeline = Pipeline(load_container_text(CONTAINER, {}))
    return Ledger(pipeline.process, {}, hold=timedelta(hours=72))


def purchase(**fields: Any) -> Event:
    return Event(**{"event_name": "purchase", "transaction_id": "ORD-1", "timestamp": T0, "value": 129.95,
                    "currency": "EUR", **fields})


def refund_event(amount: float, refund_id: str, **fields: Any) -> Event:
    return Event(**{"event_name": "refund", "transaction_id": "ORD-1", "timestamp": at(days=2), "value": amount,
                    "currency": "EUR", "extra": {"refund_id": refund_id}, **fields})


def adjustments(write: Any) -> list[tuple[str, float | None, str]]:
    return [(d.item["adjustment"]["type"], d.item["adjustment"].get("adjusted_value"), d.item["timestamp"])
            for d in write.deliveries if "adjustment" in d.item]


def test_two_refunds_in_one_request_restate_then_retract_from_the_running_total(ledger: Ledger) -> None:
    state = LedgerState(orders={"ORD-1": ORDER})

    write = ledger.run([refund_event(30.0, "r1"), refund_event(99.95, "r2")], "order_webhook", state, NOW)

    assert adjustments(write) == [("RESTATEMENT", 99.95, "2026-04-25T12:31:09Z"), ("RETRACTION", None, "2026-04-25T12:31:10Z")]
    assert (write.orders["ORD-1"].refunded, write.orders["ORD-1"].retracted_at) == (Decimal("129.95"), at(days=2, seconds=1))
    assert [(c.change_id, c.action) for c in write.changes] == [("r1", "RESTATEMENT"), ("r2", "RETRACTION")]


def test_a_purchase_seen_before_fires_nothing_and_fills_what_the_ledger_lacked(ledger: Ledger) -> None:
    state = LedgerState(orders={"ORD-1": replace(ORDER, gclid=None, consent=(("ad_storage", "granted"),))})

    write = ledger.run([purchase(gclid="late-gclid", consent=Consent(ad_storage="denied", ad_user_data="granted"))],
                       "shopify", state, NOW)

    assert write.deliveries == []
    assert (write.orders["ORD-1"].gclid, write.orders["ORD-1"].consent) == (
        "late-gclid", (("ad_storage", "granted"), ("ad_user_data", "granted")))


def test_a_refund_takes_the_consent_the_purchase_came_with_before_defaults_apply(ledger: Ledger) -> None:
    state = LedgerState(orders={"ORD-1": replace(ORDER, consent=(("ad_user_data", "granted"),))})

    write = ledger.run([refund_event(30.0, "r1", user_data={"email_address": "jane@example.com"})], "order_webhook",
                       state, NOW)

    (delivery,) = write.deliveries
    assert (delivery.item["consent"]["ad_user_data"], delivery.item["user_data"]) == (
        "granted", {"email_address": "jane@example.com"})


def test_a_refund_of_an_unknown_order_is_held_and_applied_when_the_purchase_comes(ledger: Ledger) -> None:
    held_write = ledger.run([refund_event(30.0, "r1")], "order_webhook", LedgerState(), NOW)
    (held,) = held_write.hold
    assert (held_write.deliveries, held.expires_at) == ([], NOW + timedelta(hours=72))

    write = ledger.run([purchase(gclid="gclid-1")], "ga4", LedgerState(held=[replace(held, id=7)]), NOW)

    assert [d.item["event_name"] for d in write.deliveries] == ["purchase", "refund"]
    assert adjustments(write) == [("RESTATEMENT", 99.95, "2026-04-25T12:31:09Z")]
    assert write.release == [7]
    assert write.order_deliveries == [("ORD-1", d.idempotency_key) for d in write.deliveries]


def test_the_upload_is_recorded_without_order_id_when_the_firing_click_tag_does_not_send_it() -> None:
    pipeline = Pipeline(load_container_text(CONTAINER, {}))
    ledger = Ledger(pipeline.process, {"forward": False}, hold=timedelta(hours=72))

    write = ledger.run([purchase(gclid="gclid-1")], "ga4", LedgerState(), NOW)
    restated = ledger.run([refund_event(30.0, "r1")], "order_webhook", LedgerState(orders=write.orders), NOW)

    assert write.orders["ORD-1"].uploaded_with_order_id is False
    (delivery,) = restated.deliveries
    assert delivery.item["adjustment"]["uploaded_with_order_id"] is False


def test_a_change_already_held_is_not_held_twice(ledger: Ledger) -> None:
    first = ledger.run([refund_event(30.0, "r1")], "order_webhook", LedgerState(), NOW)
    again = ledger.run([refund_event(30.0, "r1")], "order_webhook",
                       LedgerState(held=[replace(h, id=1) for h in first.hold]), NOW)

    assert again.hold == []


def test_events_without_an_order_go_straight_through_the_pipeline(ledger: Ledger) -> None:
    page_view = Event(event_name="page_view", timestamp=T0)
    no_id = Event(event_name="purchase", timestamp=T0, value=5.0)

    write = ledger.run([page_view, no_id], "ga4", LedgerState(), NOW)

    assert ([d.item["event_name"] for d in write.deliveries], write.orders) == (["purchase"], {})


def test_a_held_refund_released_later_is_applied_to_the_order(ledger: Ledger) -> None:
    held = Held("ORD-1", "r1", held_event_data(refund_event(30.0, "r1")), NOW, NOW + timedelta(hours=1), id=3)

    write = ledger.release(LedgerState(orders={"ORD-1": ORDER}, held=[held]), NOW)

    assert (adjustments(write), write.release) == ([("RESTATEMENT", 99.95, "2026-04-25T12:31:09Z")], [3])
