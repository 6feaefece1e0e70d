"""The google_ads_click_conversion tag: config, build, and the fixtures in tests/fixtures/tags/google_ads_click_conversion/."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

import pytest

from gateway.delivery import Delivery
from gateway.event import Event
from tags import google_ads_click_conversion as tag
from tests.tags.google_ads_schema import assert_case, check_item, fixture_cases

EXAMPLE = {  # CONTAINER.md's gads_purchase
    "name": "gads_purchase",
    "type": "google_ads_click_conversion",
    "trigger": "purchase",
    "customer_id": "1234567890",
    "conversion_action_id": "987654321",
    "timezone": "Europe/Berlin",
}
T0 = datetime(2026, 7, 15, 10, 30, 45, tzinfo=timezone.utc)


def config(**overrides: Any) -> tag.Config:
    return tag.Config.model_validate(EXAMPLE | overrides)


def purchase(**fields: Any) -> Event:
    values: dict[str, Any] = {"event_name": "purchase", "timestamp": T0, "transaction_id": "ORD-1", "value": 10.0,
                              "currency": "EUR", "gclid": "test-gclid", "consent": {"ad_user_data": "granted"},
                              "user_data": {"email_address": "test@gmail.com", "phone_number": "+1 800 5550102",
                                            "address": {"first_name": "Jane", "last_name": "Doe", "country": "US",
                                                        "postal_code": "94043"}}}
    return Event.from_data(values | fields)


@pytest.mark.parametrize("case", fixture_cases("google_ads_click_conversion"))
def test_fixture(case: dict[str, Any]) -> None:
    assert_case(tag, "click", case)


def test_the_example_config_validates_with_its_defaults() -> None:
    assert config().model_dump() == EXAMPLE | {
        "send_order_id": True, "send_user_identifiers": True, "send_ad_personalization": False, "email_rule": "gmail",
        "default_region": None, "custom_variables": {}, "cart_data": None, "conversion_environment": None,
        "event_source": None, "send_device_info": True, "session_attributes_field": "extra.session_attributes",
        "custom_variable_names": {},
    }


def test_the_timezone_defaults_to_utc() -> None:
    spec = {k: v for k, v in EXAMPLE.items() if k != "timezone"}
    assert tag.Config.model_validate(spec).timezone == "UTC"


def test_build_is_deterministic() -> None:
    event = purchase()
    assert tag.build(event, config()) == tag.build(copy.deepcopy(event), config())


def test_nothing_from_user_data_survives_when_ad_user_data_is_denied() -> None:
    denied = purchase(consent={"ad_user_data": "denied"})
    (delivery,) = tag.build(denied, config())
    assert delivery.item == {
        "gclid": "test-gclid", "conversionAction": "customers/1234567890/conversionActions/987654321",
        "conversionDateTime": "2026-07-15 12:30:45+02:00", "conversionValue": 10.0, "currencyCode": "EUR",
        "orderId": "ORD-1", "consent": {"adUserData": "DENIED"},
    }


def test_an_unset_ad_user_data_signal_sends_no_identifiers_and_no_consent() -> None:
    (delivery,) = tag.build(purchase(consent={}), config())
    assert "userIdentifiers" not in delivery.item and "consent" not in delivery.item


def test_send_user_identifiers_off_sends_only_the_click() -> None:
    (delivery,) = tag.build(purchase(), config(send_user_identifiers=False))
    assert "userIdentifiers" not in delivery.item


def test_click_conversions_never_carry_an_address() -> None:
    (delivery,) = tag.build(purchase(), config())
    assert [sorted(entry) for entry in delivery.item["userIdentifiers"]] == [
        ["hashedEmail", "userIdentifierSource"], ["hashedPhoneNumber", "userIdentifierSource"]]
    check_item("click", delivery.item)


def test_idempotency_keys_are_stable_and_differ_by_order_click_time_and_action() -> None:
    keys = [tag.build(purchase(**fields), config(**options))[0].idempotency_key for fields, options in [
        ({}, {}),
        ({}, {"name": "another_tag_same_action"}),
        ({"transaction_id": "ORD-2"}, {}),
        ({}, {"conversion_action_id": "111"}),
        ({"transaction_id": None}, {}),
        ({"transaction_id": None, "timestamp": datetime(2026, 7, 15, 10, 30, 46, tzinfo=timezone.utc)}, {}),
        ({"transaction_id": None, "gclid": "other"}, {}),
    ]]
    assert keys == [
        "google_ads:click:1234567890:987654321:order=ORD-1",
        "google_ads:click:1234567890:987654321:order=ORD-1",  # same conversion, same key: stored once
        "google_ads:click:1234567890:987654321:order=ORD-2",
        "google_ads:click:1234567890:111:order=ORD-1",
        "google_ads:click:1234567890:987654321:gclid=test-gclid@2026-07-15 12:30:45+02:00",
        "google_ads:click:1234567890:987654321:gclid=test-gclid@2026-07-15 12:30:46+02:00",
        "google_ads:click:1234567890:987654321:gclid=other@2026-07-15 12:30:45+02:00",
    ]


def test_a_conversion_known_only_by_identifiers_has_a_key_without_personal_data() -> None:
    event = purchase(gclid=None, transaction_id=None)
    (delivery,) = tag.build(event, config())
    assert delivery.idempotency_key.startswith("google_ads:click:1234567890:987654321:user=")
    assert "gmail" not in delivery.idempotency_key and "800" not in delivery.idempotency_key
    assert tag.build(event, config())[0].idempotency_key == delivery.idempotency_key


def test_the_delivery_names_destination_batch_and_tag() -> None:
    (delivery,) = tag.build(purchase(user_data=None), config())
    assert delivery == Delivery(
        destination="google_ads", batch_key="1234567890:click",
        idempotency_key="google_ads:click:1234567890:987654321:order=ORD-1",
        item={"gclid": "test-gclid", "conversionAction": "customers/1234567890/conversionActions/987654321",
              "conversionDateTime": "2026-07-15 12:30:45+02:00", "conversionValue": 10.0, "currencyCode": "EUR",
              "orderId": "ORD-1", "consent": {"adUserData": "GRANTED"}},
        tag="gads_purchase",
    )
