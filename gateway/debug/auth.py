"""Who may open the debugger: a bearer token, or a session cookie from the login form.

``Authorization: Bearer <debug.token>`` for scripts; for browsers a login
form that sets ``gateway_debug``, an HttpOnly, SameSite=Strict cookie scoped
to ``/debug``. The cookie holds an expiry and an HMAC of it keyed by the
token, not the token itself, so it expires on its own, dies when the token
changes, and works across ``--workers`` without shared state.

Every comparison is constant-time: the token and the MACs are compared as
SHA-256 digests with ``hmac.compare_digest``, so neither their content nor
their length leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.requests import Request

COOKIE = "gateway_debug"
COOKIE_PATH = "/debug"
SESSION_SECONDS = 8 * 3600


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class DebugAuth:
    def __init__(self, token: str) -> None:
        self._key = token.encode("utf-8")
        self._token_digest = _digest(self._key)

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(_digest(given.encode("utf-8")), self._token_digest)

    def _mac(self, expires: int) -> str:
        return hmac.new(self._key, f"gateway-debug-session:{expires}".encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + SESSION_SECONDS
        return f"{expires}.{self._mac(expires)}"

    def cookie_ok(self, value: str, now: float | None = None) -> bool:
        expires, _, mac = value.partition(".")
        if not expires.isdigit() or len(expires) > 12:
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(_digest(mac.encode("utf-8")), _digest(self._mac(int(expires)).encode()))

    def allowed(self, request: Request) -> bool:
        header = request.headers.get("authorization")
        if header:
            scheme, _, value = header.partition(" ")
            return scheme.lower() == "bearer" and self.token_ok(value.strip())
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and self.cookie_ok(cookie)
