"""Condition trees: a trigger's spec checked and compiled into a ``Node``.

A spec is one node: a mapping with exactly one of ``all`` (a list of nodes,
true when empty), ``any`` (a list of nodes, false when empty), ``not`` (a
node), or a condition ``{field, op, value}``. Every problem in the tree is
appended to ``errors`` with its key path; compilation goes on past it, so one
load reports them all.

A ``Node`` is plain closures: ``test`` is what runs for every tag on every
event; ``explain`` is for the debugger and repeats the walk to say which
condition failed, by its place in the spec (``all[1]: value gte 100``) and
never by the event's value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rules.operators import NO_VALUE, OPERATORS, InvalidValue, Operator
from rules.paths import SHAPE_NAMES, FieldPath, PathError, compile_path

Test = Callable[[Any], bool]
Explain = Callable[[Any], "str | None"]

NODE_SHAPE = "expected exactly one of all, any, not, or a condition"
LEAF_KEYS = ("field", "op", "value")
# (field, value) that once marked the order system's events and that any request can send: a trigger
# on it would fire on forged events only. The gateway's stamp says where an event came from instead.
FORGEABLE = {("extra.source", "order_system"):
             "anyone can send it; test source.authenticated (true for the signed order webhooks) or source.client"}

_PLAIN = re.compile(r"[\w.:/@+\-]+")


@dataclass(frozen=True, slots=True)
class Node:
    test: Test          # event -> bool
    explain: Explain    # event -> None when true, else "where: what" of the first failing condition
    text: str           # the condition in words: "value gte 100", "any of 3 conditions"


def compile_node(spec: Any, key: str, where: str, errors: list[str]) -> Node | None:
    """Compile ``spec`` found at config path ``key`` (``where`` inside its trigger).

    Returns ``None`` when the tree has errors; they are in ``errors``.
    """
    if isinstance(spec, dict):
        combinators = [k for k in ("all", "any", "not") if k in spec]
        if len(combinators) == 1 and len(spec) == 1:
            name = combinators[0]
            inner_key, inner_where = f"{key}.{name}", _join(where, name)
            if name == "not":
                return _not(compile_node(spec["not"], inner_key, inner_where, errors), where)
            return _list(name, spec[name], inner_key, inner_where, where, errors)
        if not combinators and ("field" in spec or "op" in spec):
            return _leaf(spec, key, where, errors)
    errors.append(f"{key}: {NODE_SHAPE}")
    return None


def _list(name: str, specs: Any, key: str, inner_where: str, where: str, errors: list[str]) -> Node | None:
    if not isinstance(specs, list):
        errors.append(f"{key}: expected a list of conditions")
        return None
    children = [compile_node(s, f"{key}[{i}]", f"{inner_where}[{i}]", errors) for i, s in enumerate(specs)]
    if any(child is None for child in children):
        return None
    compiled = tuple(child for child in children if child is not None)
    return _all(compiled, where) if name == "all" else _any(compiled, where)


def _all(children: tuple[Node, ...], where: str) -> Node:
    tests = tuple(child.test for child in children)
    if not tests:
        test: Test = _always
    elif len(tests) == 1:
        test = tests[0]
    else:
        def test(event: Any) -> bool:
            for child_test in tests:
                if not child_test(event):
                    return False
            return True

    def explain(event: Any) -> str | None:
        for child in children:
            failed = child.explain(event)
            if failed is not None:
                return failed
        return None

    return Node(test, explain, f"all of {_count(children)}")


def _any(children: tuple[Node, ...], where: str) -> Node:
    tests = tuple(child.test for child in children)
    text = f"any of {_count(children)}"
    if not tests:
        test: Test = _never
    elif len(tests) == 1:
        test = tests[0]
    else:
        def test(event: Any) -> bool:
            for child_test in tests:
                if child_test(event):
                    return True
            return False

    def explain(event: Any) -> str | None:
        if test(event):
            return None
        if len(children) == 1:          # the one condition is what failed
            return children[0].explain(event)
        return _at(where, text)

    return Node(test, explain, text)


def _not(inner: Node | None, where: str) -> Node | None:
    if inner is None:
        return None
    inner_test = inner.test
    text = f"not {inner.text}"

    def explain(event: Any) -> str | None:
        return _at(where, text) if inner_test(event) else None

    return Node(lambda event: not inner_test(event), explain, text)


def _leaf(spec: dict[Any, Any], key: str, where: str, errors: list[str]) -> Node | None:
    before = len(errors)
    for k in spec:
        if k not in LEAF_KEYS:
            errors.append(f"{key}.{k}: unknown key; expected {', '.join(LEAF_KEYS)}")

    path: FieldPath | None = None
    if "field" not in spec:
        errors.append(f"{key}.field: missing")
    else:
        try:
            path = compile_path(spec["field"])
        except PathError as exc:
            errors.append(f"{key}.field: {exc}")

    op_name = spec.get("op")
    op = OPERATORS.get(op_name) if isinstance(op_name, str) else None
    if "op" not in spec:
        errors.append(f"{key}.op: missing")
    elif op is None:
        errors.append(f"{key}.op: unknown operator {op_name!r}; expected one of {', '.join(OPERATORS)}")

    value: Any = None
    if op is not None:
        raw = spec.get("value", NO_VALUE)
        try:
            value = op.check(raw)
            if path is not None:
                _check_fits(path, op, raw)
        except InvalidValue as exc:
            errors.append(f"{key}.value{exc.at}: {exc}")
        if path is not None and path.shape not in op.shapes:
            usable = [name for name, o in OPERATORS.items() if path.shape in o.shapes]
            errors.append(f"{key}.op: {path.path} is {SHAPE_NAMES[path.shape]}; use {' or '.join(usable)}")

    if path is not None:
        raw_value = spec.get("value")
        for candidate in raw_value if isinstance(raw_value, list) else [raw_value]:
            advice = FORGEABLE.get((path.path, candidate)) if isinstance(candidate, str) else None
            if advice is not None:
                errors.append(f"{key}.field: {path.path} {candidate} is no longer set by the gateway: {advice}")

    if len(errors) > before or path is None or op is None:
        return None
    return _condition(path, op.build(value), _describe(path.path, op_name, spec.get("value", NO_VALUE)), where)


def _check_fits(path: FieldPath, op: Operator, raw: Any) -> None:
    """Values an equality operator can never see in this model field are config errors."""
    if not op.compares_equal or (path.type is None and path.choices is None):
        return
    values, at = (raw, "[{}]") if isinstance(raw, list) else ([raw], "")
    for i, value in enumerate(values):
        where = at.format(i)
        if path.type is bool:
            if type(value) is not bool:
                raise InvalidValue("expected true or false", at=where)
            continue
        if path.choices is not None and value not in path.choices:
            raise InvalidValue(f"expected one of {', '.join(path.choices)}", at=where)
        if type(value) is bool:
            raise InvalidValue(
                f"expected a {'string' if path.type is str else 'number'} "
                "(to match text, quote it: YAML reads a bare yes, no, on or off as a boolean)", at=where)
        if path.type is float and type(value) is str:
            raise InvalidValue(f"expected a number, since {path.path} holds numbers", at=where)


def _condition(path: FieldPath, compare: Callable[[Any], bool], text: str, where: str) -> Node:
    get = path.get

    def test(event: Any) -> bool:
        try:
            return compare(get(event))
        except Exception:   # a safety net: compares are written not to raise, and a trigger must not
            return False

    def explain(event: Any) -> str | None:
        return None if test(event) else _at(where, text)

    return Node(test, explain, text)


def _describe(field: str, op: str, value: Any) -> str:
    if op == "exists" and value in (NO_VALUE, True):
        return f"{field} exists"
    return f"{field} {op} {_show(value)}"


def _show(value: Any) -> str:
    """A configured value as written in the container, briefly; never an event value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else f'"{value}"'
    return str(value)


def _count(children: tuple[Node, ...]) -> str:
    return "1 condition" if len(children) == 1 else f"{len(children)} conditions"


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _at(where: str, text: str) -> str:
    return f"{where}: {text}" if where else text


def _always(event: Any) -> bool:
    return True


def _never(event: Any) -> bool:
    return False
