"""What tags produce and what the dispatcher sends: deliveries and their results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

# delivered; retry later; permanent (a dead letter); and two final answers that are not failures
# and not deliveries either, each counted under its own outcome so they stay visible: skipped (the
# vendor says there is nothing to do, e.g. an adjustment past Google's 54 days) and superseded
# (the vendor already holds a newer value). The outbox treats both like delivered.
Outcome = Literal["delivered", "retry", "permanent", "skipped", "superseded"]
FINAL_OUTCOMES: frozenset[str] = frozenset({"delivered", "skipped", "superseded"})


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__, 2.4x the cost
class Delivery:
    """One item for one destination, built by a tag, committed to the outbox; nothing changes one once built.

    ``batch_key`` groups items that may travel in one vendor request (a Google
    Ads customer and upload kind, a Meta pixel, an http_request tag's name).
    ``idempotency_key`` is stable for the same event and tag, so storing the
    same delivery twice keeps one copy. ``not_before`` holds an item back
    (conversion adjustments wait for the conversion to propagate).
    """

    destination: str
    batch_key: str
    idempotency_key: str
    item: dict[str, Any]
    tag: str
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """A vendor's answer for one item."""

    outcome: Outcome
    code: str | None = None  # the vendor's error code or HTTP status, never personal data
    message: str | None = None
    retry_after: float | None = None  # seconds, when the vendor said how long to wait

    @classmethod
    def delivered(cls, code: str | None = None) -> "Result":
        return cls("delivered", code)

    @classmethod
    def retry(cls, code: str | None = None, message: str | None = None, retry_after: float | None = None) -> "Result":
        return cls("retry", code, message, retry_after)

    @classmethod
    def skipped(cls, code: str, message: str | None = None) -> "Result":
        return cls("skipped", code, message)

    @classmethod
    def superseded(cls, code: str, message: str | None = None) -> "Result":
        return cls("superseded", code, message)

    @classmethod
    def permanent(cls, code: str | None = None, message: str | None = None) -> "Result":
        return cls("permanent", code, message)
