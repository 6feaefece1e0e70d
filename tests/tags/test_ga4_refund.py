"""The ga4_refund tag: the ledger's refunds and cancellations as Measurement Protocol refund events."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import pytest

from gateway.event import Event
from gateway.tag import Skip
from tags import ga4_refund
from tests.fakes.ga4 import _mp_messages

T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=timezone.utc)
BOUGHT = datetime(2026, 11, 18, 9, 30, 0, tzinfo=timezone.utc)
CONFIG = ga4_refund.Config(name="ga4_refunds", type="ga4_refund", trigger="refund_or_cancel",
                           measurement_id="G-ABC123XYZ", api_secret="test-secret")


def ledger_refund(**fields: Any) -> Event:
    """A refund as the order ledger hands it to the pipeline: from a webhook, with its adjustment."""
    values: dict[str, Any] = {
        "event_name": "refund", "timestamp": T0, "transaction_id": "ORD-10492", "value": 30.0, "currency": "EUR",
        "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
                    "ad_personalization": "denied"},
        "source": {"client": "order_webhook", "authenticated": True}, "order": {"refund_id": "r1"},
        "adjustment": {"type": "RESTATEMENT", "adjustment_id": "ORD-10492/r1", "order_id": "ORD-10492",
                       "conversion_time": BOUGHT, "adjusted_value": 99.95, "currency": "EUR"},
    } | fields
    return Event.from_data(values)


def test_a_partial_refund_is_one_refund_event_with_the_order_id_value_and_currency() -> None:
    [delivery] = ga4_refund.build(ledger_refund(), CONFIG)
    body = delivery.item["body"]

    # Written from the Measurement Protocol reference: client_id, timestamp_micros, consent, events[].name/params.
    assert {k: v for k, v in body.items() if k != "client_id"} == {
        "timestamp_micros": 1795168800000000,
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "events": [{"name": "refund", "params": {"transaction_id": "ORD-10492", "value": 30.0, "currency": "EUR"}}],
    }
    assert re.fullmatch(r"\d+\.1794994200", body["client_id"])
    assert (delivery.destination, delivery.batch_key, delivery.item["measurement_id"]) == ("ga4", "mp:G-ABC123XYZ",
                                                                                         "G-ABC123XYZ")
    assert _mp_messages(body, 0, T0) == []  # what Google's validation server would say


def test_every_refund_of_an_order_has_the_same_client_id_and_its_own_key() -> None:
    first = ga4_refund.build(ledger_refund(), CONFIG)[0]
    second = ga4_refund.build(ledger_refund(value=99.95, adjustment={
        "type": "RETRACTION", "adjustment_id": "ORD-10492/r2", "order_id": "ORD-10492", "conversion_time": BOUGHT}), CONFIG)[0]
    other = ga4_refund.build(ledger_refund(transaction_id="ORD-20001", adjustment={
        "type": "RETRACTION", "adjustment_id": "ORD-20001/r1", "order_id": "ORD-20001", "conversion_time": BOUGHT}), CONFIG)[0]

    assert first.item["body"]["client_id"] == second.item["body"]["client_id"] != other.item["body"]["client_id"]
    assert first.idempotency_key == "ga4:mp:G-ABC123XYZ:refund:ORD-10492/r1"
    assert len({first.idempotency_key, second.idempotency_key}) == 2


def test_a_cancellation_refunds_what_the_ledger_says_the_order_still_had() -> None:
    event = ledger_refund(event_name="order_cancelled", value=129.95, source={"client": "order_webhook", "authenticated": True},
                          adjustment={"type": "RETRACTION", "adjustment_id": "ORD-10492/cancel", "order_id": "ORD-10492"})

    [delivery] = ga4_refund.build(event, CONFIG)

    assert delivery.item["body"]["events"] == [
        {"name": "refund", "params": {"transaction_id": "ORD-10492", "value": 129.95, "currency": "EUR"}}]


def test_refunded_items_go_with_the_refund() -> None:
    event = ledger_refund(items=[{"item_id": "SKU-1", "quantity": 1, "price": 30.0, "item_name": "Mug"}, {"quantity": 2}])

    params = ga4_refund.build(event, CONFIG)[0].item["body"]["events"][0]["params"]

    assert params["items"] == [{"item_id": "SKU-1", "item_name": "Mug", "price": 30.0, "quantity": 1}]


@pytest.mark.parametrize(("fields", "reason"), [
    pytest.param({"source": {"client": "json_beacon", "authenticated": False}}, "unauthenticated_source",
                 id="browser-refund-without-source"),
    pytest.param({"adjustment": None}, "unauthenticated_source", id="refund-the-ledger-did-not-decide"),
    pytest.param({"event_name": "purchase"}, "not_a_refund", id="purchase"),
    pytest.param({"value": None}, "no_value", id="no-value"),
    pytest.param({"currency": None, "adjustment": {"type": "RETRACTION", "adjustment_id": "x/1"}}, "no_currency",
                 id="no-currency"),
])
def test_what_cannot_be_a_refund_is_skipped_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(Skip, match=reason):
        ga4_refund.build(ledger_refund(**fields), CONFIG)


def test_the_api_secret_never_goes_into_the_item() -> None:
    [delivery] = ga4_refund.build(ledger_refund(), CONFIG)

    assert "test-secret" not in str(delivery)


def test_config_needs_a_measurement_id_and_a_secret() -> None:
    with pytest.raises(ValueError, match="measurement_id"):
        ga4_refund.Config.model_validate({"name": "r", "type": "ga4_refund", "trigger": "t", "measurement_id": "UA-1",
                                          "api_secret": "s"})
    with pytest.raises(ValueError, match="api_secret"):
        ga4_refund.Config.model_validate({"name": "r", "type": "ga4_refund", "trigger": "t",
                                          "measurement_id": "G-ABC123XYZ", "api_secret": ""})
