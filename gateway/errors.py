"""The gateway's two kinds of error, and nothing else.

    Exception
    ├── ConfigError     found when the container file is loaded; carries every
    │                   problem at once as "key.path: message" lines
    └── BadRequest      the caller's fault; becomes a 4xx with
                        {"error": ..., "detail": ...}

Delivery results are values (``Result`` in ``gateway.delivery``), never
exceptions: a vendor saying "no" is an ordinary outcome, not a crash.

A ``BadRequest`` message names the offending field, never its value, because
the value may be an email address or a phone number.
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """The container file is wrong; ``errors`` lists each problem with its key path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class BadRequest(Exception):
    """A request the gateway refuses; nothing it carried is stored."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        field: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.field = field
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{status} {error}" + (f" ({field})" if field else ""))

    def body(self) -> dict[str, Any]:
        detail = self.detail
        if detail is None and self.field is not None:
            detail = {"field": self.field}
        return {"error": self.error, "detail": detail}
