"""Every problem in the triggers section is reported at load, with its key path."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ConfigError
from rules import compile_triggers, compile_valid_triggers

OPS = "equals, not_equals, in, not_in, contains, starts_with, ends_with, matches, exists, gt, gte, lt, lte"


def errors_of(triggers: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        compile_triggers(triggers)
    return exc.value.errors


def one(field: Any, op: Any, **rest: Any) -> dict[str, Any]:
    return {"all": [{"field": field, "op": op, **rest}]}


@pytest.mark.parametrize(("spec", "error"), [
    pytest.param(one("event_name", "equal", value="purchase"),
                 f"triggers.t.all[0].op: unknown operator 'equal'; expected one of {OPS}", id="unknown_operator"),
    pytest.param(one("event_name", 3, value="purchase"),
                 f"triggers.t.all[0].op: unknown operator 3; expected one of {OPS}", id="operator_not_a_string"),
    pytest.param({"all": [{"field": "event_name", "value": "purchase"}]}, "triggers.t.all[0].op: missing", id="missing_operator"),
    pytest.param({"all": [{"op": "exists"}]}, "triggers.t.all[0].field: missing", id="missing_field"),
    pytest.param(one("evnt_name", "exists"), "triggers.t.all[0].field: unknown field 'evnt_name'", id="unknown_root_field"),
    pytest.param(one("user_data.address.nope", "exists"),
                 "triggers.t.all[0].field: unknown field 'user_data.address.nope'", id="unknown_sub_field"),
    pytest.param(one("event_name.first", "exists"),
                 "triggers.t.all[0].field: unknown field 'event_name.first': event_name has no fields", id="field_below_a_value"),
    pytest.param(one("extra..page_type", "exists"),
                 "triggers.t.all[0].field: malformed path 'extra..page_type': empty segment", id="empty_segment"),
    pytest.param(one("", "exists"), "triggers.t.all[0].field: malformed path '': empty segment", id="empty_path"),
    pytest.param(one("extra.source", "equals", value="order_system"),
                 "triggers.t.all[0].field: extra.source order_system is no longer set by the gateway: anyone can send "
                 "it; test source.authenticated (true for the signed order webhooks) or source.client",
                 id="the_old_order_system_marker_that_any_request_can_forge"),
    pytest.param(one("source.authenticated", "equals", value="yes"),
                 "triggers.t.all[0].value: expected true or false", id="the_stamp_is_a_boolean"),
    pytest.param(one("items[0].price", "exists"),
                 "triggers.t.all[0].field: malformed path 'items[0].price': 'items[0]' may only hold letters, digits, _ and -",
                 id="bad_characters"),
    pytest.param(one(["event_name"], "exists"),
                 "triggers.t.all[0].field: expected a dotted path such as user_data.address.country", id="field_not_a_string"),
    pytest.param(one("value", "gte", value="100"), "triggers.t.all[0].value: expected a number", id="numeric_operator_with_a_string"),
    pytest.param(one("value", "lt", value=True), "triggers.t.all[0].value: expected a number", id="numeric_operator_with_a_boolean"),
    pytest.param(one("value", "gt", value=float("nan")), "triggers.t.all[0].value: expected a number", id="numeric_operator_with_nan"),
    pytest.param(one("value", "gt"), "triggers.t.all[0].value: missing; expected a number", id="numeric_operator_without_value"),
    pytest.param(one("event_name", "in", value="purchase"),
                 "triggers.t.all[0].value: expected a non-empty list of strings, numbers or booleans", id="in_with_a_scalar"),
    pytest.param(one("event_name", "not_in", value=[]),
                 "triggers.t.all[0].value: expected a non-empty list of strings, numbers or booleans", id="not_in_with_an_empty_list"),
    pytest.param(one("event_name", "in", value=["purchase", ["refund"]]),
                 "triggers.t.all[0].value[1]: expected a string, number or boolean", id="in_with_a_nested_list"),
    pytest.param(one("page_location", "contains", value=5), "triggers.t.all[0].value: expected a string", id="contains_with_a_number"),
    pytest.param(one("page_location", "starts_with", value=None), "triggers.t.all[0].value: expected a string", id="starts_with_null"),
    pytest.param(one("page_location", "ends_with"), "triggers.t.all[0].value: missing; expected a string", id="ends_with_without_value"),
    pytest.param(one("page_location", "matches", value="/order/(\\d+"),
                 "triggers.t.all[0].value: not a valid regular expression: missing ), unterminated subpattern at position 7",
                 id="matches_with_a_broken_regex"),
    pytest.param(one("event_name", "equals", value=["purchase"]),
                 "triggers.t.all[0].value: expected a string, number or boolean", id="equals_with_a_list"),
    pytest.param(one("event_name", "not_equals", value=None),
                 "triggers.t.all[0].value: expected a string, number or boolean", id="not_equals_null"),
    pytest.param(one("gclid", "exists", value="yes"), "triggers.t.all[0].value: expected true or false", id="exists_with_a_string"),
    pytest.param(one("consent.ad_user_data", "equals", value="grantd"),
                 "triggers.t.all[0].value: expected one of granted, denied", id="consent_state_misspelt"),
    pytest.param(one("consent.ad_storage", "in", value=["granted", "unset"]),
                 "triggers.t.all[0].value[1]: expected one of granted, denied", id="consent_state_unset_in_a_list"),
    pytest.param(one("user_data.address.country", "equals", value=False),
                 "triggers.t.all[0].value: expected a string "
                 "(to match text, quote it: YAML reads a bare yes, no, on or off as a boolean)", id="yaml_no_read_as_false"),
    pytest.param(one("value", "equals", value="100"),
                 "triggers.t.all[0].value: expected a number, since value holds numbers", id="string_for_a_number_field"),
    pytest.param(one("user_data", "equals", value="x"), "triggers.t.all[0].op: user_data is an object; use exists",
                 id="comparing_an_object"),
    pytest.param(one("items", "contains", value="SKU-1"), "triggers.t.all[0].op: items is a list of objects; use exists",
                 id="contains_on_the_items_themselves"),
    pytest.param(one("items.price", "gt", value=10),
                 "triggers.t.all[0].op: items.price is a list of values, one per item; use contains or exists",
                 id="comparing_every_items_value"),
    pytest.param(one("timestamp", "gt", value=0), "triggers.t.all[0].op: timestamp is a time; use exists", id="comparing_the_time"),
    pytest.param({"all": [{"field": "gclid", "op": "exists", "valeu": True}]},
                 "triggers.t.all[0].valeu: unknown key; expected field, op, value", id="unknown_key_in_a_condition"),
    pytest.param({"all": [{"field": "event_name", "op": "equals", "value": "purchase", "any": []}]},
                 "triggers.t.all[0]: expected exactly one of all, any, not, or a condition", id="condition_mixed_with_any"),
    pytest.param({"all": [], "any": []}, "triggers.t: expected exactly one of all, any, not, or a condition", id="all_and_any"),
    pytest.param({}, "triggers.t: expected exactly one of all, any, not, or a condition", id="empty_mapping"),
    pytest.param(None, "triggers.t: expected exactly one of all, any, not, or a condition", id="nothing"),
    pytest.param([{"field": "event_name", "op": "exists"}],
                 "triggers.t: expected exactly one of all, any, not, or a condition", id="a_list_instead_of_all"),
    pytest.param({"alll": []}, "triggers.t: expected exactly one of all, any, not, or a condition", id="misspelt_all"),
    pytest.param({"any": {"field": "event_name", "op": "exists"}}, "triggers.t.any: expected a list of conditions",
                 id="any_of_a_single_mapping"),
    pytest.param({"not": [{"field": "event_name", "op": "exists"}]},
                 "triggers.t.not: expected exactly one of all, any, not, or a condition", id="not_of_a_list"),
    pytest.param({"not": {"all": [{"any": [{"field": "value", "op": "gte", "value": "big"}]}]}},
                 "triggers.t.not.all[0].any[0].value: expected a number", id="deeply_nested_error"),
])
def test_each_kind_of_mistake_is_reported_with_its_key_path(spec: Any, error: str) -> None:
    assert errors_of({"t": spec}) == [error]


def test_every_problem_of_one_condition_is_reported() -> None:
    spec = {"all": [{"field": "user_data.adress.country", "op": "equal", "valeu": "DE"}]}

    assert errors_of({"t": spec}) == [
        "triggers.t.all[0].valeu: unknown key; expected field, op, value",
        "triggers.t.all[0].field: unknown field 'user_data.adress'",
        f"triggers.t.all[0].op: unknown operator 'equal'; expected one of {OPS}",
    ]


def test_errors_in_several_triggers_are_all_reported_at_once() -> None:
    triggers = {
        "purchase": {"all": [{"field": "event_name", "op": "equals", "value": "purchase"}]},
        "big_purchase": {"all": [
            {"field": "event_name", "op": "equals", "value": "purchase"},
            {"field": "value", "op": "gte", "value": "100"},
            {"not": {"field": "currency", "op": "equal", "value": "JPY"}},
        ]},
        "lead": {"any": [
            {"field": "event_name", "op": "equals", "value": "generate_lead"},
            {"field": "extra.form", "op": "exists"},
            {"field": "evnt_name", "op": "equals", "value": "sign_up"},
        ]},
        "x": {"field": "event_name", "op": "equals", "value": "x", "all": []},
    }

    assert errors_of(triggers) == [
        "triggers.big_purchase.all[1].value: expected a number",
        f"triggers.big_purchase.all[2].not.op: unknown operator 'equal'; expected one of {OPS}",
        "triggers.lead.any[2].field: unknown field 'evnt_name'",
        "triggers.x: expected exactly one of all, any, not, or a condition",
    ]


@pytest.mark.parametrize("name", [
    pytest.param("", id="empty"),
    pytest.param("big purchase", id="space"),
    pytest.param("1st_purchase", id="leading_digit"),
    pytest.param("purchase-big", id="dash"),
])
def test_trigger_names_must_be_identifiers(name: str) -> None:
    assert errors_of({name: {"all": []}}) == [
        f"triggers: {name!r} is not a valid trigger name; use letters, digits and _, not starting with a digit"]


def test_a_trigger_with_a_bad_name_still_has_its_conditions_checked() -> None:
    assert errors_of({"big purchase": {"any": "x"}}) == [
        "triggers: 'big purchase' is not a valid trigger name; use letters, digits and _, not starting with a digit",
        "triggers.big purchase.any: expected a list of conditions",
    ]


def test_triggers_must_be_a_mapping() -> None:
    assert errors_of([{"all": []}]) == ["triggers: expected a mapping of trigger names to conditions"]  # type: ignore[arg-type]


def test_free_form_paths_and_every_operator_on_a_value_are_accepted() -> None:
    triggers = compile_triggers({
        "free_form": {"all": [
            {"field": "extra.page-type", "op": "equals", "value": "product"},
            {"field": "user_properties.plan.tier", "op": "in", "value": ["pro", 2]},
            {"field": "items.0.item_id", "op": "starts_with", "value": "SKU-"},
            {"field": "items.item_category", "op": "contains", "value": "shoes"},
            {"field": "items", "op": "exists", "value": True},
            {"field": "extra", "op": "exists"},
            {"field": "transaction_id", "op": "equals", "value": 12345},
            {"field": "consent.ad_user_data", "op": "not_in", "value": ["denied"]},
        ]},
    })

    assert list(triggers) == ["free_form"]


def test_compile_valid_triggers_keeps_the_valid_ones_and_collects_the_errors() -> None:
    errors: list[str] = []

    triggers = compile_valid_triggers({
        "purchase": {"field": "event_name", "op": "equals", "value": "purchase"},
        "broken": {"field": "event_name", "op": "equal", "value": "purchase"},
    }, errors)

    assert (list(triggers), errors) == (
        ["purchase"], [f"triggers.broken.op: unknown operator 'equal'; expected one of {OPS}"])
