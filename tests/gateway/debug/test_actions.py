"""Resending from a trace: what the debugger masked is left out, everything else goes again."""

from __future__ import annotations

from gateway.debug.actions import event_from_masked


def test_a_recorded_event_loses_every_masked_value_and_keeps_the_rest():
    recorded = {
        "event_name": "purchase", "transaction_id": "ORD-1", "value": 49.9, "currency": "EUR", "gclid": "Cj0-x",
        "ip_override": "198.51.100.***", "user_id": "c***",
        "user_data": {"email_address": "j***@g***.com", "sha256_phone_number": "b4267a…"},
        "consent": {"ad_user_data": "granted"},
        "extra": {"note": "call +49 *** ** 67", "page_type": "thanks"},
        "items": [{"item_id": "SKU-1", "item_name": "Mug", "customer_email": "j***@e***.com"}],
    }

    event = event_from_masked(recorded)

    assert event is not None
    assert event.to_json_dict() | {"timestamp": None} == {
        "event_name": "purchase", "transaction_id": "ORD-1", "value": 49.9, "currency": "EUR", "gclid": "Cj0-x",
        "consent": {"ad_user_data": "granted"}, "extra": {"page_type": "thanks"},
        "items": [{"item_id": "SKU-1", "item_name": "Mug"}], "timestamp": None,
    }


def test_a_recorded_event_without_a_name_is_not_resent():
    assert event_from_masked({"event_name": "J***"}) is None
