"""The google_ads_call_conversion tag: config, build, and the fixtures in tests/fixtures/tags/google_ads_call_conversion/."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from gateway.event import Event
from tags import google_ads_call_conversion as tag
from tests.tags.google_ads_schema import assert_case, fixture_cases

EXAMPLE = {
    "name": "gads_calls",
    "type": "google_ads_call_conversion",
    "trigger": "qualified_call",
    "customer_id": "1234567890",
    "conversion_action_id": "555000111",
    "timezone": "Europe/Berlin",
}
T0 = datetime(2026, 7, 15, 10, 30, tzinfo=timezone.utc)


def config(**overrides: Any) -> tag.Config:
    return tag.Config.model_validate(EXAMPLE | overrides)


def call(**extra: Any) -> Event:
    return Event.from_data({
        "event_name": "qualified_call", "timestamp": T0, "consent": {"ad_user_data": "granted"},
        "extra": {"caller_id": "+49 30 12345678", "call_start_time": "2026-07-15T10:00:00Z"} | extra,
    })


@pytest.mark.parametrize("case", fixture_cases("google_ads_call_conversion"))
def test_fixture(case: dict[str, Any]) -> None:
    assert_case(tag, "call", case)


def test_the_example_config_validates_with_its_defaults() -> None:
    assert config().model_dump() == EXAMPLE | {
        "caller_id_field": "extra.caller_id", "call_start_field": "extra.call_start_time", "default_region": None,
        "send_ad_personalization": False, "custom_variables": {},
    }


def test_build_is_deterministic() -> None:
    assert tag.build(call(), config()) == tag.build(call(), config())


def test_idempotency_keys_hold_no_phone_number_and_differ_per_call() -> None:
    keys = [tag.build(call(**extra), config())[0].idempotency_key for extra in
            [{}, {}, {"caller_id": "+49 30 87654321"}, {"call_start_time": "2026-07-15T10:01:00Z"}]]
    assert keys[0] == keys[1]
    assert len(set(keys)) == 3
    assert all(k.startswith("google_ads:call:1234567890:555000111:") and "3012345678" not in k for k in keys)


def test_the_batch_key_is_the_customer_and_the_call_kind() -> None:
    (delivery,) = tag.build(call(), config())
    assert (delivery.destination, delivery.batch_key, delivery.tag) == ("google_ads", "1234567890:call", "gads_calls")
