"""Reading first-party cookies from a raw Cookie header, tolerant of malformed pairs."""

from __future__ import annotations


def read_cookies(header: str | None, names: frozenset[str]) -> dict[str, str]:
    """The wanted cookies only; browsers send many and we need two or three."""
    if not header:
        return {}
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name in names and value:
            found[name] = value.strip('"')
    return found
