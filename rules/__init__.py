"""Triggers: named conditions over an event that decide which tags fire.

The container's ``triggers:`` mapping is checked and compiled once, at load,
by ``compile_triggers``; every problem in every trigger is reported at once,
with its key path (``triggers.big_purchase.all[1].value: expected a number``).
A compiled ``Trigger`` is plain closures, cheap enough to run for every tag on
every event, and it never raises.

    triggers:
      big_purchase:
        all:
          - {field: event_name, op: equals, value: purchase}
          - {field: value, op: gte, value: 100}
          - not: {field: currency, op: equals, value: JPY}

``rules.paths`` reads fields, ``rules.operators`` holds the operator table,
``rules.conditions`` compiles all / any / not trees.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from gateway.event import Event
from rules.conditions import compile_node
from rules.operators import OPERATORS

__all__ = ["OPERATORS", "Trigger", "compile_triggers", "compile_valid_triggers"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    matches: Callable[[Event], bool]
    """Whether the event fires the trigger."""
    _explain: Callable[[Event], str | None] = field(repr=False, compare=False)

    def explain(self, event: Event) -> tuple[bool, str | None]:
        """The result and, when false, where and what the first failing condition is.

        ``(False, "all[1]: value gte 100")``. The description holds the
        configured condition, never the event's value.
        """
        failed = self._explain(event)
        return failed is None, failed


def compile_triggers(spec: dict[str, Any]) -> dict[str, Trigger]:
    """Compile every trigger; raise one ``ConfigError`` listing every problem."""
    errors: list[str] = []
    triggers = compile_valid_triggers(spec, errors)
    if errors:
        raise ConfigError(errors)
    return triggers


def compile_valid_triggers(spec: dict[str, Any], errors: list[str]) -> dict[str, Trigger]:
    """Compile the triggers that are valid; append each problem of the others to ``errors``.

    For a loader that goes on after errors, so that tags naming a valid
    trigger are not also reported as naming a missing one.
    """
    if not isinstance(spec, dict):
        errors.append("triggers: expected a mapping of trigger names to conditions")
        return {}
    triggers: dict[str, Trigger] = {}
    for name, body in spec.items():
        valid_name = isinstance(name, str) and _NAME.fullmatch(name) is not None
        if not valid_name:
            errors.append(f"triggers: {name!r} is not a valid trigger name; "
                          "use letters, digits and _, not starting with a digit")
        node = compile_node(body, f"triggers.{name}", "", errors)
        if node is not None and valid_name:
            triggers[name] = Trigger(name, node.test, node.explain)
    return triggers
