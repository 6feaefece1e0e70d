"""Each file in tests/fixtures/rules/ is one trigger with events that fire it and events that don't."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.event import Event
from rules import OPERATORS, compile_triggers

FIXTURES = Path(__file__).parent.parent / "fixtures" / "rules"
CASES = sorted(FIXTURES.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def operators_in(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["op"]} if "op" in node else set()
        return found.union(*(operators_in(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(operators_in(v) for v in node))
    return set()


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CASES])
def test_trigger_fires_on_exactly_the_events_listed_as_firing(path: Path) -> None:
    case = load(path)
    trigger = compile_triggers({"case": case["trigger"]})["case"]

    results = {
        "fires": [trigger.matches(Event.from_data(e)) for e in case["fires"]],
        "does_not_fire": [trigger.matches(Event.from_data(e)) for e in case["does_not_fire"]],
    }

    assert results == {"fires": [True] * len(case["fires"]), "does_not_fire": [False] * len(case["does_not_fire"])}


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CASES])
def test_explain_gives_the_same_result_as_matches(path: Path) -> None:
    case = load(path)
    trigger = compile_triggers({"case": case["trigger"]})["case"]
    events = [Event.from_data(e) for e in case["fires"] + case["does_not_fire"]]

    explained = [trigger.explain(e) for e in events]

    assert [(ok, why is None) for ok, why in explained] == [(trigger.matches(e), trigger.matches(e)) for e in events]


def test_every_fixture_has_a_description_and_events_on_both_sides_overall() -> None:
    cases = [load(p) for p in CASES]

    assert [sorted(c) for c in cases] == [["description", "does_not_fire", "fires", "trigger"]] * len(cases)
    assert all(c["description"] for c in cases)


def test_every_operator_has_a_fixture() -> None:
    used = set().union(*(operators_in(load(p)["trigger"]) for p in CASES))

    assert sorted(set(OPERATORS) - used) == []
