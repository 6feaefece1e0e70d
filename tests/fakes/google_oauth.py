"""Google's OAuth 2.0 token endpoint, as the fakes of Google's APIs share it: one issuer, tokens by scope.

A refresh token is granted a set of scopes; a refresh request may name a
subset (``scope``, space-separated) and gets a token for that subset, or
``invalid_scope`` for a scope that was not granted; without ``scope`` the
token has every granted scope (RFC 6749 section 6). An API checks that the
token it is shown is one this issuer made, has not expired and carries its
scope: Google answers 401 UNAUTHENTICATED, or 403 PERMISSION_DENIED with
ErrorInfo ``ACCESS_TOKEN_SCOPE_INSUFFICIENT`` ("Request had insufficient
authentication scopes.").
Ref: https://datatracker.ietf.org/doc/html/rfc6749#section-6
Ref: https://developers.google.com/identity/protocols/oauth2/web-server#offline
Ref: https://cloud.google.com/apis/design/errors#error_info (ErrorInfo)
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DATA_MANAGER_SCOPE = "https://www.googleapis.com/auth/datamanager"
ADS_API_SCOPE = "https://www.googleapis.com/auth/adwords"

CREDENTIALS = {
    "client_id": "test-client-id.apps.googleusercontent.com",
    "client_secret": "test-client-secret",
    "refresh_token": "test-refresh-token",
}


@dataclass(slots=True)
class TokenIssuer:
    credentials: dict[str, str] = field(default_factory=lambda: dict(CREDENTIALS))
    granted: frozenset[str] = frozenset({DATA_MANAGER_SCOPE, ADS_API_SCOPE})
    expires_in: int = 3599
    requests: list[dict[str, str]] = field(default_factory=list)  # each refresh request's form
    revoked: str | None = None
    _tokens: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)  # token -> (expiry, scopes)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def expire_tokens(self) -> None:
        """Every access token issued so far is expired from now on (as if an hour had passed)."""
        for token, (_, scopes) in self._tokens.items():
            self._tokens[token] = (0.0, scopes)

    def revoke(self, error: str = "invalid_grant") -> None:
        self.revoked = error

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(form)
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + str(form.get("grant_type")))
        if form.get("client_id") != self.credentials["client_id"] or \
                form.get("client_secret") != self.credentials["client_secret"]:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if self.revoked is not None:
            return _oauth_error(400 if self.revoked == "invalid_grant" else 401, self.revoked,
                                "Token has been expired or revoked.")
        if form.get("refresh_token") != self.credentials["refresh_token"]:
            return _oauth_error(400, "invalid_grant", "Bad Request")
        asked = frozenset(form["scope"].split()) if form.get("scope") else self.granted
        if not asked <= self.granted:
            return _oauth_error(400, "invalid_scope", "Some requested scopes were invalid.")
        token = f"ya29.fake-access-token-{next(self._numbers)}"
        self._tokens[token] = (time.monotonic() + self.expires_in, asked)
        return web.json_response({"access_token": token, "expires_in": self.expires_in,
                                  "scope": " ".join(sorted(asked)), "token_type": "Bearer"})

    def check(self, authorization: str | None, scope: str) -> tuple[int, str, str] | None:
        """None when the bearer token may call an API of ``scope``; else (HTTP status, status, message)."""
        if not authorization:
            return 401, "UNAUTHENTICATED", ("Request is missing required authentication credential. Expected OAuth 2 "
                                            "access token, login cookie or other valid authentication credential.")
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        expiry, scopes = self._tokens.get(token, (0.0, frozenset()))
        if expiry <= time.monotonic():
            return 401, "UNAUTHENTICATED", ("Request had invalid authentication credentials. Expected OAuth 2 access "
                                            "token, login cookie or other valid authentication credential.")
        if scope not in scopes:
            return 403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."
        return None


def _oauth_error(http: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=http)
