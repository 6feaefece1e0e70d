"""The google_ads_conversion_adjustment tag: config, build, and the fixtures in tests/fixtures/tags/google_ads_conversion_adjustment/."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.event import Event
from tags import google_ads_conversion_adjustment as tag
from tests.tags.google_ads_schema import assert_case, check_item, fixture_cases

EXAMPLE = {  # CONTAINER.md's gads_refund
    "name": "gads_refund",
    "type": "google_ads_conversion_adjustment",
    "trigger": "refund_or_cancel",
    "customer_id": "1234567890",
    "conversion_action_id": "987654321",
    "delay_after_conversion": "24h",
    "retry_horizon": "72h",
    "click_through_window": "90d",
}
CONVERTED = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)


def config(**overrides: Any) -> tag.Config:
    return tag.Config.model_validate(EXAMPLE | overrides)


def refund(kind: str = "RETRACTION", **adjustment: Any) -> Event:
    return Event.from_data({
        "event_name": "refund", "timestamp": CONVERTED + timedelta(days=3), "consent": {"ad_user_data": "granted"},
        "user_data": {"email_address": "test@gmail.com"}, "user_agent": "Mozilla/5.0",
        "adjustment": {"type": kind, "adjustment_id": "adj-1", "order_id": "ORD-1", "gclid": "test-gclid",
                       "conversion_time": CONVERTED, "adjusted_value": 5.0, "currency": "EUR"} | adjustment,
    })


@pytest.mark.parametrize("case", fixture_cases("google_ads_conversion_adjustment"))
def test_fixture(case: dict[str, Any]) -> None:
    assert_case(tag, "adjustment", case)


def test_the_example_config_validates_with_its_defaults() -> None:
    assert config().model_dump() == EXAMPLE | {
        "timezone": "UTC", "delay_after_conversion": timedelta(hours=24), "adjustment_window": timedelta(days=54),
        "retry_horizon": timedelta(hours=72), "click_through_window": timedelta(days=90), "event_source": "WEB",
        "email_rule": "gmail", "default_region": None, "conversions_from_page_tag": False,
    }


@pytest.mark.parametrize("kind", ["RETRACTION", "RESTATEMENT", "ENHANCEMENT"])
@pytest.mark.parametrize("by_order_id", [True, False])
def test_order_id_and_gclid_date_time_pair_are_never_both_sent(kind: str, by_order_id: bool) -> None:
    event = refund(kind, uploaded_with_order_id=by_order_id)
    (delivery,) = tag.build(event, config())
    item = delivery.item
    assert ("orderId" in item) != ("gclidDateTimePair" in item)
    assert "orderId" in item if (by_order_id or kind == "ENHANCEMENT") else "gclidDateTimePair" in item
    check_item(delivery.batch_key.rpartition(":")[2], item)


@pytest.mark.parametrize("kind", ["RETRACTION", "RESTATEMENT"])
def test_only_enhancements_carry_user_data(kind: str) -> None:
    (delivery,) = tag.build(refund(kind), config())
    assert "userIdentifiers" not in delivery.item and "userAgent" not in delivery.item


def test_only_restatements_carry_a_value() -> None:
    values = {kind: "restatementValue" in tag.build(refund(kind), config())[0].item
              for kind in ("RETRACTION", "RESTATEMENT", "ENHANCEMENT")}
    assert values == {"RETRACTION": False, "RESTATEMENT": True, "ENHANCEMENT": False}


def test_build_is_deterministic_and_keyed_by_the_ledger_adjustment_id() -> None:
    first = tag.build(refund(), config())
    again = tag.build(refund(), config())
    other = tag.build(refund(adjustment_id="adj-2"), config())
    assert first == again
    assert first[0].idempotency_key == "google_ads:adjustment:1234567890:987654321:adj-1"
    assert other[0].idempotency_key == "google_ads:adjustment:1234567890:987654321:adj-2"


def test_an_adjustment_without_any_conversion_time_is_sent_at_once() -> None:
    (delivery,) = tag.build(refund(conversion_time=None), config())
    assert delivery.not_before is None
