from __future__ import annotations

from typing import Any

from gateway.event import Event
from rules import compile_triggers

BIG_PURCHASE = {"all": [
    {"field": "event_name", "op": "equals", "value": "purchase"},
    {"field": "value", "op": "gte", "value": 100},
    {"not": {"field": "currency", "op": "equals", "value": "JPY"}},
]}


def explain(spec: dict[str, Any], **event: Any) -> tuple[bool, str | None]:
    trigger = compile_triggers({"t": spec})["t"]
    return trigger.explain(Event.from_data(event))


def test_a_firing_trigger_explains_nothing() -> None:
    assert explain(BIG_PURCHASE, event_name="purchase", value=150, currency="EUR") == (True, None)


def test_explain_names_the_first_failing_condition_by_its_place_in_the_spec() -> None:
    assert explain(BIG_PURCHASE, event_name="purchase", value=50, currency="JPY") == (False, "all[1]: value gte 100")


def test_explain_describes_a_failing_not_with_the_condition_it_negates() -> None:
    assert explain(BIG_PURCHASE, event_name="purchase", value=150, currency="JPY") == (False, "all[2]: not currency equals JPY")


def test_explain_never_includes_the_events_value() -> None:
    spec = {"field": "user_data.email_address", "op": "ends_with", "value": "@example.com"}

    assert explain(spec, event_name="x", user_data={"email_address": "jane@private.test"}) == (
        False, "user_data.email_address ends_with @example.com")


def test_explain_of_an_any_with_several_conditions_names_the_any() -> None:
    spec = {"all": [
        {"field": "event_name", "op": "equals", "value": "purchase"},
        {"any": [{"field": "gclid", "op": "exists"}, {"field": "gbraid", "op": "exists"}]},
    ]}

    assert explain(spec, event_name="purchase") == (False, "all[1]: any of 2 conditions")


def test_explain_of_an_any_with_one_condition_names_that_condition() -> None:
    spec = {"any": [{"field": "event_name", "op": "in", "value": ["refund", "order_cancelled"]}]}

    assert explain(spec, event_name="purchase") == (False, "any[0]: event_name in [refund, order_cancelled]")


def test_explain_follows_nesting_down_to_the_failing_condition() -> None:
    spec = {"all": [
        {"field": "event_name", "op": "equals", "value": "purchase"},
        {"not": {"any": [{"field": "transaction_id", "op": "starts_with", "value": "TEST-"},
                         {"field": "extra.debug_mode", "op": "equals", "value": True}]}},
        {"all": [{"field": "currency", "op": "exists"}, {"field": "page_location", "op": "matches", "value": "/thank(s|-you)$"}]},
    ]}

    assert [
        explain(spec, event_name="purchase", transaction_id="TEST-1"),
        explain(spec, event_name="purchase", currency="EUR", page_location="https://shop.example/cart"),
        explain(spec, event_name="purchase"),
    ] == [
        (False, "all[1]: not any of 2 conditions"),
        (False, 'all[2].all[1]: page_location matches "/thank(s|-you)$"'),
        (False, "all[2].all[0]: currency exists"),
    ]


def test_explain_of_a_condition_at_the_top_has_no_place() -> None:
    spec = {"field": "consent.ad_user_data", "op": "exists", "value": False}

    assert explain(spec, event_name="x", consent={"ad_user_data": "granted"}) == (False, "consent.ad_user_data exists false")


def test_explain_of_an_empty_any_says_so() -> None:
    assert explain({"any": []}, event_name="x") == (False, "any of 0 conditions")
