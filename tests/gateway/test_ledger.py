"""The order ledger's arithmetic and decisions, as tables: each row an order, a change and the outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from gateway.ledger import Change, Decision, Order, adjustment_time, decide, money

T0 = datetime(2026, 4, 23, 12, 31, 9, tzinfo=timezone.utc)
NOW = datetime(2026, 4, 23, 12, 31, 30, tzinfo=timezone.utc)


def at(days: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(days=days, seconds=seconds)


ORDER = Order(order_id="ORD-1", conversion_time=T0, recorded_at=NOW, value=Decimal("129.95"), currency="EUR",
              gclid="gclid-1")
# The order: the browser uploaded 100 (net of tax and shipping), the order system's total is 124.
BROWSER = Order(order_id="ORD-1", conversion_time=T0, recorded_at=NOW, value=Decimal("100"), currency="EUR",
                total=Decimal("124.00"))
SAME_BASIS = replace(ORDER, total=Decimal("129.95"))


def refund(change_id: str, amount: str | None, kind: str = "refund", retained: str | None = None,
           currency: str | None = "EUR", rate: str | None = None) -> Change:
    return Change("ORD-1", change_id, kind, at(days=2), None if amount is None else Decimal(amount),  # type: ignore[arg-type]
                  currency, None if retained is None else Decimal(retained),
                  exchange_rate=None if rate is None else Decimal(rate))


D = Decimal


def restated(refunded: str, left: str, adjusted: str | None = None, basis: str = "uploaded_value",
             disagrees: bool = False) -> Decision:
    return Decision("RESTATEMENT", "partial_refund", D(refunded), D(left), disagrees, D(adjusted or left), basis)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("order", "change", "expected"),
    [
        pytest.param(ORDER, refund("r1", "30.00"), restated("30.00", "99.95"),
                     id="a_partial_refund_restates_to_what_is_left"),
        pytest.param(replace(ORDER, refunded=D("30.00"), change_ids=frozenset({"r1"})), refund("r2", "99.95"),
                     Decision("RETRACTION", "refunded_to_zero", D("129.95"), D("0.00")),
                     id="refunds_that_add_up_to_the_value_retract"),
        pytest.param(replace(ORDER, refunded=D("30.00"), change_ids=frozenset({"r1"})), refund("r2", "20.00"),
                     restated("50.00", "79.95"),
                     id="a_second_partial_refund_restates_from_all_refunds_so_far"),
        pytest.param(ORDER, refund("r1", "200.00"), Decision("RETRACTION", "refunded_to_zero", D("200.00"), D("0")),
                     id="a_refund_beyond_the_value_retracts"),
        pytest.param(ORDER, refund("r1", "30.00", kind="full_refund"),
                     Decision("RETRACTION", "full_refund", D("30.00"), D("0")),
                     id="a_full_refund_retracts_whatever_its_amount"),
        pytest.param(ORDER, refund("r1", None, kind="full_refund"),
                     Decision("RETRACTION", "full_refund", D("0"), D("0")),
                     id="a_full_refund_without_amount_retracts"),
        pytest.param(ORDER, Change("ORD-1", "cancel", "cancel", at(days=1)),
                     Decision("RETRACTION", "cancelled", D("0"), D("0")),
                     id="a_cancellation_retracts"),
        pytest.param(ORDER, refund("r1", "129.94"), restated("129.94", "0.01"),
                     id="a_partial_refund_that_leaves_a_cent_never_retracts"),
        pytest.param(replace(ORDER, retracted_at=at(days=1)), refund("r9", "5.00"),
                     Decision("NONE", "already_retracted", D("0"), D("129.95")),
                     id="a_refund_after_a_retraction_does_nothing"),
        pytest.param(replace(ORDER, refunded=D("30.00"), change_ids=frozenset({"r1"})), refund("r1", "30.00"),
                     Decision("NONE", "duplicate", D("30.00"), D("99.95")),
                     id="the_same_refund_twice_does_nothing"),
        pytest.param(ORDER, refund("r1", "30.00", currency="USD"),
                     Decision("NONE", "currency_mismatch", D("0"), D("129.95")),
                     id="a_refund_in_another_currency_is_not_subtracted"),
        pytest.param(ORDER, refund("r1", "0"), Decision("NONE", "no_amount", D("0"), D("129.95")),
                     id="a_refund_of_nothing_does_nothing"),
        pytest.param(replace(ORDER, value=None), refund("r1", "10"),
                     Decision("NONE", "order_value_unknown", D("10"), None),
                     id="a_partial_refund_of_an_order_without_value_cannot_restate"),
        pytest.param(ORDER, refund("r1", "30.00", retained="100.00"), restated("30.00", "99.95", disagrees=True),
                     id="the_ledgers_arithmetic_wins_over_a_disagreeing_retained_value"),
        pytest.param(ORDER, refund("r1", "30.00", retained="99.95"), restated("30.00", "99.95"),
                     id="an_agreeing_retained_value_is_not_reported"),
        pytest.param(SAME_BASIS, refund("r1", "30.00"), restated("30.00", "99.95", basis="order_total"),
                     id="an_upload_of_the_order_total_restates_to_what_is_left"),
        pytest.param(BROWSER, refund("r1", "62.00"), restated("62.00", "62.00", "50.00", "share_of_order_total"),
                     id="a_browser_upload_is_restated_in_its_own_basis_by_the_share_that_remains"),
        pytest.param(BROWSER, refund("r1", "100.00"), restated("100.00", "24.00", "19.35", "share_of_order_total"),
                     id="a_refund_above_the_uploaded_value_but_below_the_total_still_restates"),
        pytest.param(BROWSER, refund("r1", "124.00"), Decision("RETRACTION", "refunded_to_zero", D("124.00"), D("0.00")),
                     id="the_whole_order_total_refunded_retracts"),
        pytest.param(replace(BROWSER, value=None), refund("r1", "24.00"),
                     Decision("NONE", "uploaded_value_unknown", D("24.00"), D("100.00"), basis="order_total"),
                     id="a_conversion_uploaded_without_value_cannot_be_restated"),
        pytest.param(ORDER, refund("r1", "20.00", currency="USD", rate="0.9"), restated("18.000", "111.950"),
                     id="a_refund_in_another_currency_is_converted_at_the_order_systems_rate"),
        pytest.param(ORDER, refund("r1", None, kind="full_refund", currency="USD"),
                     Decision("RETRACTION", "full_refund", D("0"), D("0")),
                     id="a_full_refund_in_another_currency_still_retracts"),
    ],
)
def test_decision(order: Order, change: Change, expected: Decision) -> None:
    assert decide(order, change) == expected


@pytest.mark.parametrize(
    ("order", "occurred_at", "expected"),
    [
        pytest.param(ORDER, at(days=2), at(days=2), id="the_change_time_when_it_is_later"),
        pytest.param(ORDER, at(seconds=-30), at(seconds=1), id="never_before_the_conversion"),
        pytest.param(replace(ORDER, last_adjusted_at=at(days=2)), at(days=2), at(days=2, seconds=1),
                     id="strictly_after_the_previous_adjustment"),
    ],
)
def test_adjustment_time(order: Order, occurred_at: datetime, expected: datetime) -> None:
    change = Change("ORD-1", "r", "refund", occurred_at, Decimal("1"))
    assert adjustment_time(order, change) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(129.95, Decimal("129.95"), id="a_float_as_written"),
        pytest.param(30, Decimal("30"), id="an_int"),
        pytest.param("31.93", Decimal("31.93"), id="decimal_text"),
        pytest.param(float("nan"), None, id="nan_is_no_amount"),
        pytest.param(True, None, id="a_boolean_is_no_amount"),
    ],
)
def test_money_keeps_the_decimal_that_was_written(value: Any, expected: Decimal | None) -> None:
    assert money(value) == expected
