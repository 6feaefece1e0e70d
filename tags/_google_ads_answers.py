"""Reading the Google Ads API's answers: errors by row of a partial failure, or one error for the request.

A 200 answer carries row errors in ``partialFailureError.details[]`` (a
``GoogleAdsFailure``), each with ``location.fieldPathElements[0] =
{"fieldName": "conversions", "index": N}`` naming its row; a whole-request
error is HTTP 4xx/5xx with ``{"error": {...}}`` (a google.rpc.Status).
Ref: https://developers.google.com/google-ads/api/docs/best-practices/partial-failures
Ref: https://developers.google.com/google-ads/api/rest/overview (errors as google.rpc.Status)

``GoogleError`` is shared with the Data Manager route, whose answers
``tags/_data_manager_route.py`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tags._google_ads import (
    ALREADY_THERE,
    ALREADY_THERE_ON_RETRY,
    RETRY_WITHIN_HORIZON,
    SKIPPED,
    SUPERSEDED,
    TRANSIENT,
    WAIT_THEN_RETRY,
)

MESSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class GoogleError:
    """One Google error: its code (the enum value, e.g. CLICK_NOT_FOUND) and message."""

    code: str
    message: str | None = None
    retry_after: float | None = None
    status: int | None = None  # HTTP status, for whole-request errors


def row_errors(payload: dict[str, Any], list_field: str, row_count: int) -> dict[int, GoogleError]:
    """Errors of a 200 answer by row; an error without a row index applies to every row."""
    failure = payload.get("partialFailureError")
    by_row: dict[int, GoogleError] = {}
    if not isinstance(failure, dict):
        return by_row
    unplaced: list[GoogleError] = []
    for error in google_errors(failure):
        parsed = error_of(error)
        row = row_index(error, list_field)
        if row is None or not 0 <= row < row_count:
            unplaced.append(parsed)
        elif row not in by_row or worse(parsed, by_row[row]):
            by_row[row] = parsed
    if not unplaced and not by_row:  # a failure Status without GoogleAdsFailure details
        unplaced.append(GoogleError(status_code(failure, "PARTIAL_FAILURE"), short(failure.get("message"))))
    for parsed in unplaced:
        for row in range(row_count):
            if row not in by_row:
                by_row[row] = parsed
    return by_row


def request_error(status: int, payload: Any, headers: dict[str, str]) -> GoogleError:
    error = payload.get("error") if isinstance(payload, dict) else None
    retry_after = header_seconds(headers)
    if not isinstance(error, dict):
        code = "bad_response" if status == 200 else f"http_{status}"
        return GoogleError(code, f"HTTP {status}", retry_after, status)
    details = google_errors(error)
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            retry_after = duration(detail.get("retryDelay")) or retry_after
    if details:
        first = error_of(details[0])
        return GoogleError(first.code, first.message, first.retry_after or retry_after, status)
    return GoogleError(status_code(error, f"http_{status}"), short(error.get("message")), retry_after, status)


def google_errors(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``errors`` of every GoogleAdsFailure in a google.rpc.Status's details."""
    found = []
    for detail in status.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(".errors.GoogleAdsFailure"):
            found.extend(e for e in detail.get("errors") or () if isinstance(e, dict))
    return found


def error_of(error: dict[str, Any]) -> GoogleError:
    codes = error.get("errorCode")
    code = "UNKNOWN"
    if isinstance(codes, dict) and codes:
        code = str(next(iter(codes.values())))
    details = error.get("details")
    retry_after = None
    if isinstance(details, dict) and isinstance(details.get("quotaErrorDetails"), dict):
        retry_after = duration(details["quotaErrorDetails"].get("retryDelay"))
    # ``message`` is Google's text; ``trigger`` (the offending value) is left out: it may be personal data.
    return GoogleError(code, short(error.get("message")), retry_after)


def row_index(error: dict[str, Any], list_field: str) -> int | None:
    location = error.get("location")
    elements = location.get("fieldPathElements") if isinstance(location, dict) else None
    if not elements or not isinstance(elements[0], dict):
        return None
    first = elements[0]
    if first.get("fieldName") not in (list_field, "conversions", "conversionAdjustments", "conversion_adjustments"):
        return None
    index = first.get("index", 0)
    return index if isinstance(index, int) else None


RANK = {"delivered": 0, "retry": 1, "permanent": 2}


def worse(new: GoogleError, old: GoogleError) -> bool:
    """Of two errors for one row, the one that is harder to recover from wins."""
    return rank(new.code) > rank(old.code)


def rank(code: str) -> int:
    if code in ALREADY_THERE or code in ALREADY_THERE_ON_RETRY or code in SKIPPED or code in SUPERSEDED:
        return RANK["delivered"]
    if code in TRANSIENT or code in WAIT_THEN_RETRY or code in RETRY_WITHIN_HORIZON:
        return RANK["retry"]
    return RANK["permanent"]


def status_code(status: dict[str, Any], fallback: str) -> str:
    value = status.get("status")
    return value if isinstance(value, str) and value else fallback


def duration(value: object) -> float | None:
    """A protobuf Duration in JSON (``"30s"``, ``"1.5s"``) as seconds."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            seconds = float(value[:-1])
        except ValueError:
            return None
        return seconds if seconds >= 0 else None
    return None


def header_seconds(headers: dict[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after" and value.strip().isdigit():
            return float(value.strip())
    return None


def short(message: object) -> str | None:
    if not isinstance(message, str) or not message:
        return None
    text = " ".join(message.split())
    return text[:MESSAGE_CHARS]
