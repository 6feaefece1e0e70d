"""Durations in config values: a number and a unit (``500ms``, ``30s``, ``6h``, ``90d``).

A bare number is refused rather than read as seconds: ``retention: 180``
meant 180 days to whoever wrote it, and 180 seconds would delete the order
ledger three minutes after each purchase.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise _error("expected a duration such as 30s, 6h or 90d")
    if isinstance(value, (int, float)):
        raise _error(_needs_unit(value))
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
        if _NUMBER.match(value):
            raise _error(_needs_unit(value.strip()))
    raise _error("expected a duration such as 30s, 6h or 90d")


def _error(message: str) -> PydanticCustomError:
    """A validation error whose message is ours alone (a ValueError's gets "Value error, " in front)."""
    return PydanticCustomError("duration", message)


def _needs_unit(number: object) -> str:
    text = f"{number:g}" if isinstance(number, float) else str(number)
    if text.startswith("-"):
        return "a duration cannot be negative"
    return f"a duration needs a unit: {text}s, {text}m, {text}h or {text}d (ms, s, m, h, d)"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
