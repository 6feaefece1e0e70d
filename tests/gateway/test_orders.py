"""One request's events through ``Ledger.run``, with the real pipeline of a small container.

Its http_request tag (dry run) forwards every order event, so each delivery
shows what the tags would see, ``adjustment`` included. Events are built as
the clients build them, with the gateway's stamp: ``WEBHOOK`` for the signed
order webhooks, ``BROWSER`` for GA4 hits and beacons.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from hashlib import sha256
from decimal import Decimal
from typing import Any

import pytest

from gateway.config import load_container_text
from gateway.event import Consent, Event, OrderData, Source
from gateway.ledger import Held, LedgerState, Order, Upload
from gateway.order_events import change_of, held_event_data
from gateway.orders import ClickTag, Ledger
from gateway.pipeline import Pipeline

T0 = datetime(2026, 4, 23, 12, 31, 9, tzinfo=timezone.utc)
NOW = datetime(2026, 4, 23, 12, 31, 30, tzinfo=timezone.utc)
WEBHOOK = Source(client="order_webhook", authenticated=True)
BROWSER = Source(client="ga4", authenticated=False)
ACTION = "customers/1234567890/conversionActions/987654321"


def at(days: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(days=days, seconds=seconds)


ORDER = Order(order_id="ORD-1", conversion_time=T0, recorded_at=NOW, value=Decimal("129.95"), currency="EUR",
              gclid="gclid-1", total=Decimal("129.95"))


def test_a_refund_event_without_amount_is_a_full_refund_with_a_stable_id() -> None:
    event = Event(event_name="refund", transaction_id="ORD-1", timestamp=at(days=3), currency="EUR")
    first, second = change_of(event, "ORD-1"), change_of(copy.deepcopy(event), "ORD-1")

    assert (first.kind, first.amount, first.change_id == second.change_id) == ("full_refund", None, True)


def test_a_held_change_keeps_nothing_personal() -> None:
    event = Event(
        event_name="refund", transaction_id="ORD-1", timestamp=at(days=3), value=10.0, currency="EUR",
        user_data={"email_address": "jane@example.com"}, ip_override="203.0.113.7", user_agent="Mozilla/5.0",
        items=[{"item_id": "SKU-1", "item_name": "Engraved for Jane", "quantity": 1, "price": 10.0}],
        consent=Consent(ad_user_data="granted"), extra={"note": "jane"}, source=WEBHOOK,
        order=OrderData(refund_id="r1", refund_pending=True),
    )

    assert held_event_data(event) == {
        "event_name": "refund", "timestamp": "2026-04-26T12:31:09+00:00", "transaction_id": "ORD-1",
        "consent": {"ad_user_data": "granted"}, "value": 10.0, "currency": "EUR",
        "source": {"client": "order_webhook", "authenticated": True},
        "order": {"refund_id": "r1", "refund_pending": True},
        "items": [{"item_id": "SKU-1", "quantity": 1, "price": 10.0}],
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
    return Ledger(pipeline.process, {}, hold=timedelta(hours=72), hold_pending=timedelta(days=30))


def purchase(source: Source = WEBHOOK, **fields: Any) -> Event:
    return Event.from_data({"event_name": "purchase", "transaction_id": "ORD-1", "timestamp": T0, "value": 129.95,
                            "currency": "EUR", "source": source, **fields})


def refund_event(amount: float, refund_id: str, source: Source = WEBHOOK, **fields: Any) -> Event:
    order = OrderData(refund_id=refund_id, **fields.pop("order", {}))
    return Event.from_data({"event_name": "refund", "transaction_id": "ORD-1", "timestamp": at(days=2), "value": amount,
                            "currency": "EUR", "source": source, "order": order, **fields})


def adjustments(write: Any) -> list[tuple[str, float | None, str]]:
    return [(d.item["adjustment"]["type"], d.item["adjustment"].get("adjusted_value"), d.item["timestamp"])
            for d in write.deliveries if "adjustment" in d.item]


def test_two_refunds_in_one_request_restate_then_retract_from_the_running_total(ledger: Ledger) -> None:
    state = LedgerState(orders={"ORD-1": ORDER})

    write = ledger.run([refund_event(30.0, "r1"), refund_event(99.95, "r2")], "order_webhook", state, NOW)

    assert adjustments(write) == [("RESTATEMENT", 99.95, "2026-04-25T12:31:09Z"), ("RETRACTION", None, "2026-04-25T12:31:10Z")]
    assert (write.orders["ORD-1"].refunded, write.orders["ORD-1"].retracted_at) == (Decimal("129.95"), at(days=2, seconds=1))
    assert [(c.change_id, c.action) for c in write.changes] == [("r1", "RESTATEMENT"), ("r2", "RETRACTION")]


def test_a_browser_refund_goes_through_the_pipeline_and_changes_no_order(ledger: Ledger) -> None:
    forged = Event(event_name="refund", transaction_id="ORD-1", timestamp=at(days=2), source=BROWSER)

    write = ledger.run([forged], "ga4", LedgerState(orders={"ORD-1": ORDER}), NOW)

    assert ([d.item["event_name"] for d in write.deliveries], adjustments(write)) == (["refund"], [])
    assert (write.orders, write.changes, write.hold) == ({}, [], [])


def test_an_authenticated_copy_of_a_purchase_fills_what_the_ledger_lacked(ledger: Ledger) -> None:
    seen = replace(ORDER, gclid=None, total=None, consent=(("ad_storage", "granted"),))

    write = ledger.run([purchase(value=155.0, gclid="late-gclid",
                                 consent=Consent(ad_storage="denied", ad_user_data="granted"))],
                       "shopify", LedgerState(orders={"ORD-1": seen}), NOW)

    assert write.deliveries == []
    order = write.orders["ORD-1"]
    assert (order.gclid, order.consent, order.value, order.total) == (
        "late-gclid", (("ad_storage", "granted"), ("ad_user_data", "granted")), Decimal("129.95"), Decimal("155.0"))


def test_a_browser_copy_of_a_purchase_seen_before_fills_nothing(ledger: Ledger) -> None:
    seen = replace(ORDER, gclid=None, total=None)

    write = ledger.run([purchase(BROWSER, gclid="forged-gclid", consent=Consent(ad_user_data="granted"))], "ga4",
                       LedgerState(orders={"ORD-1": seen}), NOW)

    assert (write.deliveries, write.orders, [n.what for n in write.notes]) == ([], {}, ["purchase_seen_before"])


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
    assert (held_write.deliveries, held.expires_at, held.reason) == ([], NOW + timedelta(hours=72), "order")

    write = ledger.run([purchase(gclid="gclid-1")], "order_webhook", LedgerState(held=[replace(held, id=7)]), NOW)

    assert [d.item["event_name"] for d in write.deliveries] == ["purchase", "refund"]
    assert adjustments(write) == [("RESTATEMENT", 99.95, "2026-04-25T12:31:09Z")]
    assert write.release == [7]
    assert write.order_deliveries == [("ORD-1", d.idempotency_key) for d in write.deliveries]


def test_a_partial_refund_of_a_browser_purchase_waits_for_the_order_systems_total(ledger: Ledger) -> None:
    browser = ledger.run([purchase(BROWSER, value=100.0)], "ga4", LedgerState(), NOW)
    held = ledger.run([refund_event(62.0, "r1")], "shopify", LedgerState(orders=browser.orders), NOW)
    (waiting,) = held.hold

    write = ledger.run([purchase(value=124.0)], "shopify",
                       LedgerState(orders=held.orders | browser.orders, held=[replace(waiting, id=4)]), NOW)

    assert (adjustments(held), waiting.reason) == ([], "total")
    assert adjustments(write) == [("RESTATEMENT", 50.0, "2026-04-25T12:31:09Z")]
    assert write.release == [4]


def test_a_refund_that_waited_for_the_total_in_vain_is_applied_to_the_uploaded_value(ledger: Ledger) -> None:
    order = replace(ORDER, value=Decimal("100"), total=None)
    waiting = Held("ORD-1", "r1", held_event_data(refund_event(30.0, "r1")), NOW, NOW + timedelta(hours=72), id=3,
                   reason="total")

    early = ledger.release(LedgerState(orders={"ORD-1": order}, held=[waiting]), NOW + timedelta(hours=71))
    late = ledger.release(LedgerState(orders={"ORD-1": order}, held=[waiting]), NOW + timedelta(hours=72))

    assert (adjustments(early), early.release) == ([], [])
    assert (adjustments(late), late.release) == ([("RESTATEMENT", 70.0, "2026-04-25T12:31:09Z")], [3])
    assert late.changes[0].basis == "uploaded_value"


def test_a_pending_refund_is_held_until_a_report_shows_its_money_moved(ledger: Ledger) -> None:
    pending = refund_event(30.0, "r1", order={"refund_pending": True})
    held = ledger.run([pending], "shopify", LedgerState(orders={"ORD-1": ORDER}), NOW)
    (entry,) = held.hold
    stored = LedgerState(orders={"ORD-1": ORDER}, held=[replace(entry, id=9)])

    again = ledger.run([refund_event(30.0, "r1", order={"refund_pending": True})], "shopify", stored, NOW)
    swept = ledger.release(stored, NOW + timedelta(days=1))
    settled = ledger.run([refund_event(30.0, "r1", order={"backstop": True})], "shopify", stored, NOW)

    assert (adjustments(held), entry.reason, entry.expires_at) == ([], "pending", NOW + timedelta(days=30))
    assert (again.hold, adjustments(again)) == ([], [])
    assert (swept.release, adjustments(swept)) == ([], [])
    assert (settled.release, adjustments(settled)) == ([9], [("RESTATEMENT", 99.95, "2026-04-25T12:31:09Z")])


def test_a_pending_refund_is_not_applied_by_its_orders_purchase(ledger: Ledger) -> None:
    held = ledger.run([refund_event(30.0, "r1", order={"refund_pending": True})], "shopify", LedgerState(), NOW)
    (entry,) = held.hold

    write = ledger.run([purchase()], "shopify", LedgerState(held=[replace(entry, id=2)]), NOW)

    assert (adjustments(write), write.release) == ([], [])


def test_a_backstop_refund_of_an_unknown_order_is_not_held(ledger: Ledger) -> None:
    write = ledger.run([refund_event(30.0, "r1", order={"backstop": True})], "shopify", LedgerState(), NOW)

    assert (write.hold, [n.what for n in write.notes]) == ([], ["backstop_order_unknown"])


def test_a_refund_in_another_currency_without_a_rate_is_a_dead_letter(ledger: Ledger) -> None:
    write = ledger.run([refund_event(20.0, "r-usd", currency="USD")], "order_webhook",
                       LedgerState(orders={"ORD-1": ORDER}), NOW)

    (letter,) = write.dead_letters
    assert (letter.code, letter.held.change_id, adjustments(write)) == ("refund_currency_mismatch", "r-usd", [])
    assert [(c.change_id, c.reason) for c in write.changes] == [("r-usd", "currency_mismatch")]


def test_the_uploads_of_the_conversion_are_followed_and_travel_with_its_adjustments() -> None:
    pipeline = Pipeline(load_container_text(CONTAINER, {}))
    ledger = Ledger(pipeline.process, {"forward": ClickTag(True, ACTION)}, hold=timedelta(hours=72))

    write = ledger.run([purchase()], "order_webhook", LedgerState(), NOW)
    (upload,) = write.orders["ORD-1"].uploads or ()
    delivered = replace(write.orders["ORD-1"], uploads=(replace(upload, status="uploaded"),))
    restated = ledger.run([refund_event(30.0, "r1")], "order_webhook", LedgerState(orders={"ORD-1": delivered}), NOW)

    assert (upload.action, upload.key) == (ACTION, write.deliveries[0].idempotency_key)
    assert restated.deliveries[0].item["adjustment"]["conversions"] == {ACTION: "uploaded"}


def test_the_upload_is_recorded_without_order_id_when_the_firing_click_tag_does_not_send_it() -> None:
    pipeline = Pipeline(load_container_text(CONTAINER, {}))
    ledger = Ledger(pipeline.process, {"forward": ClickTag(False)}, hold=timedelta(hours=72))

    write = ledger.run([purchase(gclid="gclid-1")], "ga4", LedgerState(), NOW)
    restated = ledger.run([refund_event(30.0, "r1")], "order_webhook", LedgerState(orders=write.orders), NOW)

    assert write.orders["ORD-1"].uploaded_with_order_id is False
    (delivery,) = restated.deliveries
    assert delivery.item["adjustment"]["uploaded_with_order_id"] is False


JANE = {"email_address": "Jane.Roe@Example.com", "phone_number": "+14155550132",
        "address": {"first_name": "Jane", "last_name": "Roe", "country": "US"}}


@pytest.mark.parametrize(
    ("consent", "kept"),
    [
        pytest.param(Consent(ad_user_data="granted", ad_storage="granted"),
                     ["fbc", "fbp", "sha256_email_address", "sha256_first_name", "sha256_last_name",
                      "sha256_phone_number"], id="both_granted_keeps_hashes_and_cookies"),
        pytest.param(Consent(ad_user_data="granted", ad_storage="denied"),
                     ["sha256_email_address", "sha256_first_name", "sha256_last_name", "sha256_phone_number"],
                     id="ad_storage_denied_keeps_no_cookies"),
        pytest.param(Consent(ad_user_data="denied", ad_storage="granted"), ["fbc", "fbp"],
                     id="ad_user_data_denied_keeps_no_hashes"),
        pytest.param(Consent(), [], id="the_defaults_deny_everything_here"),
    ],
)
def test_only_what_the_purchases_consent_allows_is_kept_for_its_refunds(ledger: Ledger, consent: Consent,
                                                                        kept: list[str]) -> None:
    write = ledger.run([purchase(user_data=JANE, consent=consent, fbp="fb.1.1700000000000.123", fbclid="IwAR-x")],
                       "shopify", LedgerState(), NOW)

    assert [name for name, _ in write.orders["ORD-1"].identifiers] == kept
    assert "Jane" not in repr(write.orders["ORD-1"]) and "jane" not in repr(write.orders["ORD-1"])


def test_a_refund_carries_the_hashed_identifiers_kept_from_its_purchase(ledger: Ledger) -> None:
    bought = ledger.run([purchase(user_data=JANE, consent=Consent(ad_user_data="granted"))], "shopify", LedgerState(), NOW)

    write = ledger.run([refund_event(30.0, "r1")], "shopify", LedgerState(orders=bought.orders), NOW)

    (delivery,) = write.deliveries
    assert delivery.item["user_data"] == {  # Meta's normalisation: lower case, phone digits with the country code
        "sha256_email_address": sha256(b"jane.roe@example.com").hexdigest(),
        "sha256_phone_number": sha256(b"14155550132").hexdigest(),
        "address": {"sha256_first_name": sha256(b"jane").hexdigest(), "sha256_last_name": sha256(b"roe").hexdigest()},
    }


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
    assert write.deliveries[0].item["source"] == {"client": "order_webhook", "authenticated": True}


def test_an_upload_the_ledger_follows_is_resolved_by_action() -> None:
    order = replace(ORDER, uploads=(Upload(ACTION, "k1", "failed"), Upload(ACTION, "k2", "uploaded"),
                                    Upload("customers/1/conversionActions/2", "k3", "pending")))

    assert order.conversions() == {ACTION: "uploaded", "customers/1/conversionActions/2": "pending"}
    assert replace(ORDER, uploads=None).conversions() is None
