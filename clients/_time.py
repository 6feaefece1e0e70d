"""Times that clients read from a request: ISO 8601 or unix milliseconds, to UTC, within a sane range.

A time from outside ends up in the ledger's arithmetic and in every tag's
vendor format (Google Ads wants the wall time in the tag's zone). Python's
datetime ends at years 1 and 9999, so "0001-01-01T00:00:00+14:00" cannot
even be turned into UTC, and 9999-12-31 in UTC is already year 10000 in
Berlin. No conversion happens before the Unix epoch or in the next century:
outside [1970, 2100) a time is a 400 naming its field.
"""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.errors import BadRequest

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


def in_range(moment: datetime, field: str, name: str | None = None) -> datetime:
    """``moment`` (UTC-aware) when it lies in [1970, 2100); else a 400 naming ``field``."""
    if not EARLIEST <= moment < LATEST:
        raise BadRequest(400, f"{name or field} must lie between 1970 and 2100", field=field)
    return moment


def parse_iso(
    value: str, field: str, *, naive_is_utc: bool = False, name: str | None = None, not_iso: str | None = None
) -> datetime:
    """An ISO 8601 time as UTC; one without an offset only where the sender documents UTC.

    ``name`` is how error messages call the value (``field``, a full path, by
    default); ``not_iso`` replaces the message for text that is no time at all.
    """
    name = name or field
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(400, not_iso or f"{name} must be an ISO 8601 time", field=field) from None
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise BadRequest(400, f"{name} needs a time zone offset", field=field)
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:  # the offset pushes it past year 1 or 9999
        raise BadRequest(400, f"{name} must lie between 1970 and 2100", field=field) from None
    return in_range(moment, field, name)


def from_unix_ms(value: float, field: str, name: str | None = None) -> datetime:
    """Unix milliseconds (JavaScript's ``Date.now()``) as UTC."""
    if not EARLIEST.timestamp() * 1000 <= value < LATEST.timestamp() * 1000:
        raise BadRequest(400, f"{name or field} must lie between 1970 and 2100", field=field)
    return datetime.fromtimestamp(value / 1000, timezone.utc)
