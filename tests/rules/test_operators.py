from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.event import Event
from rules import OPERATORS, compile_triggers
from rules.operators import as_number

# One valid configured value per operator, several for the ones that branch on its type.
VALUES: list[tuple[str, Any]] = [
    ("equals", "sale"), ("equals", 3), ("equals", 2.5), ("equals", True),
    ("not_equals", "sale"), ("not_equals", 0),
    ("in", ["sale", 3, 2.5, False]), ("in", ["sale"]), ("not_in", [1, "x"]),
    ("contains", "sale"), ("starts_with", "s"), ("ends_with", "e"), ("matches", "^s.*e$"),
    ("exists", True), ("exists", False),
    ("gt", 2), ("gte", 2.5), ("lt", -1), ("lte", 10**30),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.from_regex(r"[-+]?\d{0,400}(\.\d*)?([eE][-+]?\d{1,4})?", fullmatch=True),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def test_the_table_has_every_operator_of_the_container_format() -> None:
    assert list(OPERATORS) == [
        "equals", "not_equals", "in", "not_in", "contains", "starts_with", "ends_with",
        "matches", "exists", "gt", "gte", "lt", "lte",
    ]


def test_a_missing_field_is_false_except_for_not_equals_not_in_and_exists_false() -> None:
    results = {f"{op} {value!r}": OPERATORS[op].build(OPERATORS[op].check(value))(None) for op, value in VALUES}

    assert {k for k, v in results.items() if v} == {"not_equals 'sale'", "not_equals 0", "not_in [1, 'x']", "exists False"}


@settings(database=None, max_examples=300)
@given(actual=json_values)
def test_no_compare_raises_on_any_json_value(actual: Any) -> None:
    for op, value in VALUES:
        assert OPERATORS[op].build(OPERATORS[op].check(value))(actual) in (True, False)


@settings(database=None, max_examples=100)
@given(extra=st.dictionaries(st.sampled_from(["x", "y"]), json_values))
def test_no_trigger_raises_on_any_event(extra: dict[str, Any]) -> None:
    triggers = compile_triggers({
        f"t{i}": {"any": [{"field": "extra.x", "op": op, "value": value},
                          {"field": "extra.x.y.0.y", "op": op, "value": value}]}
        for i, (op, value) in enumerate(VALUES)
    })
    event = Event(event_name="e", extra=extra)

    for trigger in triggers.values():
        assert trigger.explain(event)[0] is trigger.matches(event)


@pytest.mark.parametrize(("text", "number"), [
    pytest.param("100", 100, id="integer"),
    pytest.param("-2.50", -2.5, id="decimal"),
    pytest.param(".5", 0.5, id="leading_point"),
    pytest.param("1e3", 1000.0, id="exponent"),
    pytest.param("12345678901234567890123", 12345678901234567890123, id="integer_kept_exact"),
    pytest.param("1" * 5000, None, id="integer_too_long_for_int"),
    pytest.param("1_000", None, id="underscores"),
    pytest.param(" 1", None, id="whitespace"),
    pytest.param("nan", None, id="nan"),
    pytest.param("\u0661\u0662", None, id="non_ascii_digits"),
    pytest.param("", None, id="empty"),
    pytest.param(True, None, id="boolean"),
])
def test_as_number_reads_plain_decimal_numbers_only(text: Any, number: Any) -> None:
    assert as_number(text) == number
