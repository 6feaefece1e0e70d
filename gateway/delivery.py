"""What tags produce and what the dispatcher sends: deliveries and their results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

# delivered; retry later; permanent (a dead letter); and two final answers that are not failures
# and not deliveries either, each counted under its own outcome so they stay visible: skipped (the
# vendor says there is nothing to do, e.g. an adjustment past Google's 54 days) and superseded
# (the vendor already holds a newer value). The outbox treats both like delivered.
Outcome = Literal["delivered", "retry", "permanent", "skipped", "superseded"]
FINAL_OUTCOMES: frozenset[str] = frozenset({"delivered", "skipped", "superseded"})


class JsonItem:
    """An item held as a dict, as its JSON, or both: each form made from the other on first use.

    A tag builds an item as a dict or, when it has the JSON already, as bytes;
    the outbox stores the bytes and hands them back. Whoever needs the other
    form makes it once. ``Delivery`` (on the way in) and ``PendingItem`` (on
    the way out, ``gateway.sender``) are both such items; each sets ``_item``
    and ``_raw`` in its own ``__init__`` (one of them may be None, not both).
    """

    __slots__ = ("_item", "_raw")
    _item: dict[str, Any] | None
    _raw: bytes | None

    @property
    def item(self) -> dict[str, Any]:
        item = self._item
        if item is None:
            item = self._item = orjson.loads(self._raw)  # type: ignore[arg-type] - one of the two is set
        return item

    @property
    def raw(self) -> bytes:
        """The item's JSON: the outbox's own bytes when the item came from there."""
        raw = self._raw
        if raw is None:
            raw = self._raw = orjson.dumps(self._item)
        return raw


class Delivery(JsonItem):
    """One item for one destination, built by a tag, committed to the outbox; nothing changes one once built.

    ``batch_key`` groups items that may travel in one vendor request (a Google
    Ads customer and upload kind, a Meta pixel, an http_request tag's name).
    ``idempotency_key`` is stable for the same event and tag, so storing the
    same delivery twice keeps one copy. ``not_before`` holds an item back
    (conversion adjustments wait for the conversion to propagate).

    ``raw`` is the item's JSON as the outbox stores it. A tag that has it
    already (the http_request tag: the event's JSON, which it also digests
    for the idempotency key) gives it instead of the item, and the item is
    read from it only when something asks (the debugger): the event is
    encoded once on its way to the outbox. Otherwise ``raw`` is the item
    encoded on first use. Two deliveries are equal when their fields and
    items are.

    A plain class with slots rather than a frozen dataclass: a frozen
    dataclass sets each field through ``object.__setattr__``, 2.4x the cost.
    """

    __slots__ = ("destination", "batch_key", "idempotency_key", "tag", "not_before")

    def __init__(self, destination: str, batch_key: str, idempotency_key: str, item: dict[str, Any] | None,
                 tag: str, not_before: datetime | None = None, *, raw: bytes | None = None) -> None:
        if item is None and raw is None:
            raise ValueError("a delivery needs the item or its JSON")
        self.destination = destination
        self.batch_key = batch_key
        self.idempotency_key = idempotency_key
        self.tag = tag
        self.not_before = not_before
        self._item = item
        self._raw = raw

    def _fields(self) -> tuple[Any, ...]:
        return (self.destination, self.batch_key, self.idempotency_key, self.item, self.tag, self.not_before)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Delivery):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment] - mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (f"Delivery(destination={self.destination!r}, batch_key={self.batch_key!r}, "
                f"idempotency_key={self.idempotency_key!r}, item={self.item!r}, tag={self.tag!r}, "
                f"not_before={self.not_before!r})")


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
