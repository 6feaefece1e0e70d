"""The operators of a condition, in one table: ``OPERATORS``.

Each operator checks its configured ``value`` once, at load, and builds a
``Compare``: a plain function of the event's value (``None`` when the field is
missing) to a bool. A ``Compare`` never raises, whatever it is given, and
allocates nothing on the common paths.

The rules every operator follows:

- A missing field is false for every operator except ``not_equals``,
  ``not_in`` and ``exists: false``, which are true.
- Numbers are compared as numbers: ``100 == 100.0``, and an event string that
  reads as a number (``"100"``, ``"2.5"``) counts as that number where the
  configured value is a number. Booleans are never numbers.
- Strings are compared exactly, case included. A configured string never
  equals an event number: quote a value in YAML to compare it as text, leave
  it bare to compare it as a number.
- ``contains`` is a substring test on a string and a membership test on a
  list (``items.item_id``).

Adding an operator is one entry here and a few fixture rows in
``tests/fixtures/rules/``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rules.paths import OBJECT, OBJECTS, TIME, VALUE, VALUES

Compare = Callable[[Any], bool]

NO_VALUE: Any = object()
"""Given to ``Operator.check`` when a condition has no ``value`` key."""

_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


class InvalidValue(Exception):
    """A configured value the operator cannot use; ``at`` locates it below ``value``."""

    def __init__(self, message: str, at: str = "") -> None:
        self.at = at
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Operator:
    check: Callable[[Any], Any]          # configured value -> what ``build`` takes; raises InvalidValue
    build: Callable[[Any], Compare]
    shapes: frozenset[str] = frozenset({VALUE})   # which field shapes it applies to (see rules.paths)
    compares_equal: bool = False         # its values are compared for equality with the field's


def as_number(value: Any) -> int | float | None:
    """An event value as a number, or ``None``: ints, floats and numeric strings; never bools."""
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is str:
        if _NUMBER.fullmatch(value) is not None:
            try:
                return int(value) if value.lstrip("+-").isdigit() else float(value)
            except ValueError:      # more digits than int() accepts
                return None
    return None


# --- checks of the configured value --------------------------------------------------------


def _is_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _is_scalar(value: Any) -> bool:
    return type(value) in (str, bool) or _is_number(value)


def _check_number(value: Any) -> int | float:
    if not _is_number(value):
        raise InvalidValue(_expected("a number", value))
    return value


def _check_string(value: Any) -> str:
    if type(value) is not str:
        raise InvalidValue(_expected("a string", value))
    return value


def _check_scalar(value: Any) -> Any:
    if not _is_scalar(value):
        raise InvalidValue(_expected("a string, number or boolean", value))
    return value


def _check_scalars(value: Any) -> tuple[Any, ...]:
    if type(value) is not list or not value:
        raise InvalidValue(_expected("a non-empty list of strings, numbers or booleans", value))
    for i, element in enumerate(value):
        if not _is_scalar(element):
            raise InvalidValue("expected a string, number or boolean", at=f"[{i}]")
    return tuple(value)


def _check_regex(value: Any) -> re.Pattern[str]:
    try:
        return re.compile(_check_string(value))
    except re.error as exc:
        raise InvalidValue(f"not a valid regular expression: {exc}") from None


def _check_exists(value: Any) -> bool:
    if value is NO_VALUE:
        return True
    if type(value) is not bool:
        raise InvalidValue("expected true or false")
    return value


def _expected(what: str, value: Any) -> str:
    return f"missing; expected {what}" if value is NO_VALUE else f"expected {what}"


# --- compares ------------------------------------------------------------------------------


def _equals(expected: Any) -> Compare:
    if type(expected) is str:
        return lambda actual: actual == expected       # str == non-str is False, never an error
    if type(expected) is bool:
        return lambda actual: actual is expected

    def equals_number(actual: Any) -> bool:
        kind = type(actual)
        if kind is int or kind is float:
            return actual == expected
        if kind is str:
            number = as_number(actual)
            return number is not None and number == expected
        return False

    return equals_number


def _in(choices: tuple[Any, ...]) -> Compare:
    strings = frozenset(c for c in choices if type(c) is str)
    numbers = frozenset(c for c in choices if type(c) in (int, float))
    booleans = frozenset(c for c in choices if type(c) is bool)

    def is_in(actual: Any) -> bool:
        kind = type(actual)
        if kind is str:
            if actual in strings:
                return True
            if numbers:
                number = as_number(actual)
                return number is not None and number in numbers
            return False
        if kind is int or kind is float:
            return actual in numbers
        if kind is bool:
            return actual in booleans
        return False

    return is_in


def _negated(build: Callable[[Any], Compare]) -> Callable[[Any], Compare]:
    def build_negated(value: Any) -> Compare:
        compare = build(value)
        return lambda actual: not compare(actual)

    return build_negated


def _contains(needle: str) -> Compare:
    def contains(actual: Any) -> bool:
        kind = type(actual)
        return (kind is str or kind is list) and needle in actual

    return contains


def _starts_with(prefix: str) -> Compare:
    return lambda actual: type(actual) is str and actual.startswith(prefix)


def _ends_with(suffix: str) -> Compare:
    return lambda actual: type(actual) is str and actual.endswith(suffix)


def _matches(pattern: re.Pattern[str]) -> Compare:
    search = pattern.search
    return lambda actual: type(actual) is str and search(actual) is not None


def _exists(wanted: bool) -> Compare:
    if wanted:
        return lambda actual: actual is not None
    return lambda actual: actual is None


def _numeric(test: Callable[[Any, Any], bool]) -> Callable[[Any], Compare]:
    def build(limit: int | float) -> Compare:
        def compare(actual: Any) -> bool:
            kind = type(actual)
            if kind is int or kind is float:
                return test(actual, limit)
            if kind is str:
                number = as_number(actual)
                return number is not None and test(number, limit)
            return False

        return compare

    return build


OPERATORS: dict[str, Operator] = {
    "equals": Operator(_check_scalar, _equals, compares_equal=True),
    "not_equals": Operator(_check_scalar, _negated(_equals), compares_equal=True),
    "in": Operator(_check_scalars, _in, compares_equal=True),
    "not_in": Operator(_check_scalars, _negated(_in), compares_equal=True),
    "contains": Operator(_check_string, _contains, shapes=frozenset({VALUE, VALUES})),
    "starts_with": Operator(_check_string, _starts_with),
    "ends_with": Operator(_check_string, _ends_with),
    "matches": Operator(_check_regex, _matches),
    "exists": Operator(_check_exists, _exists, shapes=frozenset({VALUE, VALUES, OBJECT, OBJECTS, TIME})),
    "gt": Operator(_check_number, _numeric(operator.gt)),
    "gte": Operator(_check_number, _numeric(operator.ge)),
    "lt": Operator(_check_number, _numeric(operator.lt)),
    "lte": Operator(_check_number, _numeric(operator.le)),
}
