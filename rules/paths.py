"""Field paths: ``user_data.address.country`` checked against the event model
once, at load, and turned into a getter that returns the value or ``None``.

The part of a path that names model fields is checked strictly, so a typo
(``evnt_name``, ``user_data.address.nope``) is a config error rather than a
trigger that silently never fires. Below ``extra``, ``user_properties`` and
``items`` the data is free-form and any key is accepted:

- a key on a mapping reads that key (``extra.page_type``);
- a number on a list reads that position (``items.0.price``);
- a key on a list reads it from every element and gives the list of the
  values found, with list values merged (``items.item_id`` is every item's
  id, which ``contains`` then tests). No element having it counts as missing.

``None``, a missing attribute and a missing key all read as ``None``: the
operators treat it as "missing".

A path also knows the *shape* of what it reads, so an operator that cannot
apply (``user_data gt 3``) is reported at load; and, for model fields, the
Python type or the fixed choices (consent signals) of its values.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from gateway.event import Event

Getter = Callable[[Any], Any]

_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+")

# What a path reads; each operator says which shapes it applies to.
VALUE = "value"          # one value: a string, a number, a boolean, ...
OBJECT = "object"        # a model or a mapping (user_data, extra, items.0)
OBJECTS = "objects"      # a list of mappings (items)
VALUES = "values"        # a list of values, one per item (items.item_id)
TIME = "time"            # a datetime (timestamp)

SHAPE_NAMES = {
    OBJECT: "an object",
    OBJECTS: "a list of objects",
    VALUES: "a list of values, one per item",
    TIME: "a time",
}


class PathError(Exception):
    """A field path that does not name anything in the event model."""


@dataclass(frozen=True, slots=True)
class FieldPath:
    path: str
    get: Getter
    shape: str
    type: type | None = None                 # str, float or bool for model fields; None when free-form
    choices: tuple[str, ...] | None = None   # the only values a Literal field takes


def compile_path(path: Any) -> FieldPath:
    """Check ``path`` against the event model and build its getter; raises ``PathError``."""
    if not isinstance(path, str):
        raise PathError("expected a dotted path such as user_data.address.country")
    segments = path.split(".")
    if "" in segments:
        raise PathError(f"malformed path {path!r}: empty segment")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise PathError(f"malformed path {path!r}: {segment!r} may only hold letters, digits, _ and -")

    attrs: list[str] = []
    annotation: Any = Event
    for segment in segments:
        if not _is_model(annotation):
            break
        field_type = _field_types(annotation).get(segment)
        if field_type is None:
            raise PathError(f"unknown field {'.'.join([*attrs, segment])!r}")
        attrs.append(segment)
        annotation = _without_none(field_type)

    tail = tuple(segments[len(attrs):])
    if tail and get_origin(annotation) not in (dict, list):
        raise PathError(f"unknown field {path!r}: {'.'.join(attrs)} has no fields")

    getter = _getter(tuple(attrs), tuple((s, int(s) if s.isdigit() else None) for s in tail))
    if tail:
        return FieldPath(path, getter, _free_form_shape(get_origin(annotation), tail))
    if _is_model(annotation) or get_origin(annotation) is dict:
        return FieldPath(path, getter, OBJECT)
    if get_origin(annotation) is list:
        return FieldPath(path, getter, OBJECTS)
    if annotation is datetime:
        return FieldPath(path, getter, TIME)
    if get_origin(annotation) is Literal:
        return FieldPath(path, getter, VALUE, str, tuple(get_args(annotation)))
    return FieldPath(path, getter, VALUE, annotation if annotation in (str, float, bool) else None)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


@cache
def _field_types(model: type[msgspec.Struct]) -> dict[str, Any]:
    """A model's field names and their types (annotations resolved, once per model)."""
    return {field.name: field.type for field in msgspec.structs.fields(model)}


def _without_none(annotation: Any) -> Any:
    """The type of the values a field holds: ``Optional`` and constraints (``Annotated``) taken off."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0]
    return annotation


def _free_form_shape(container: Any, tail: tuple[str, ...]) -> str:
    """The shape below a mapping or a list; only list steps are known statically."""
    if container is not list:
        return VALUE
    if not tail[0].isdigit():
        return VALUES
    return OBJECT if len(tail) == 1 else VALUE


def _getter(attrs: tuple[str, ...], tail: tuple[tuple[str, int | None], ...]) -> Getter:
    if len(attrs) == 1 and not tail:
        name = attrs[0]
        return lambda event: getattr(event, name, None)

    def get(event: Any) -> Any:
        value = event
        for name in attrs:
            value = getattr(value, name, None)
            if value is None:
                return None
        return _dig(value, tail, 0) if tail else value

    return get


def _dig(value: Any, tail: tuple[tuple[str, int | None], ...], start: int) -> Any:
    for i in range(start, len(tail)):
        key, index = tail[i]
        if type(value) is dict:
            value = value.get(key)
        elif type(value) is list:
            if index is None:
                return _each(value, tail, i)
            value = value[index] if index < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value


def _each(elements: list[Any], tail: tuple[tuple[str, int | None], ...], start: int) -> list[Any] | None:
    found: list[Any] = []
    for element in elements:
        value = _dig(element, tail, start)
        if type(value) is list:
            found.extend(value)
        elif value is not None:
            found.append(value)
    return found or None
