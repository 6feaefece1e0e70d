"""OAuth 2.0 access tokens for Google's APIs, from one refresh token, one token per scope.

The google_ads destination talks to two APIs that want different scopes:
the Data Manager API ``https://www.googleapis.com/auth/datamanager`` and the
Google Ads API ``https://www.googleapis.com/auth/adwords``. One refresh token
that was granted both can mint an access token for either: the refresh
request names the scope it wants ("scope ... MUST NOT include any scope not
originally granted by the resource owner"), so each API gets a token that can
do only what that API needs, and a refresh token granted only the Data
Manager scope is enough for a destination that never calls the Ads API.
Ref: https://datatracker.ietf.org/doc/html/rfc6749#section-6
Ref: https://developers.google.com/data-manager/api/devguides/quickstart/set-up-access (the datamanager scope)
Ref: https://developers.google.com/identity/protocols/oauth2/web-server#offline (refreshing a token)

Each token is cached until shortly before it expires, refreshed by one
caller while the others wait, and refreshed again when an API answers 401.
``invalid_grant`` (revoked, or issued by an OAuth app in "Testing" status,
whose refresh tokens last 7 days), ``invalid_client`` and
``unauthorized_client`` cannot heal on their own: the credentials are marked
paused until someone configures new ones and restarts.
Ref: https://developers.google.com/identity/protocols/oauth2#expiration
Ref: https://datatracker.ietf.org/doc/html/rfc6749#section-5.2
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Callable

import aiohttp
import orjson

from gateway import metrics

log = logging.getLogger("gateway.google_ads")

DATA_MANAGER_SCOPE = "https://www.googleapis.com/auth/datamanager"
ADS_API_SCOPE = "https://www.googleapis.com/auth/adwords"
PAUSING_OAUTH_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


class OAuthPaused(Exception):
    """The token endpoint refused the credentials for good; nothing is sent until they change."""


class TokenUnavailable(Exception):
    """No token this time (the endpoint is down or answered oddly); the send is retried later."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(code)


class GoogleOAuth:
    """Access tokens by scope from one OAuth client and refresh token."""

    def __init__(self, *, destination: str, token_url: str, client_id: str, client_secret: str, refresh_token: str,
                 now: Callable[[], datetime]) -> None:
        self.destination = destination
        self._token_url = token_url
        self._form = {"grant_type": "refresh_token", "client_id": client_id, "client_secret": client_secret,
                      "refresh_token": refresh_token}
        self._now = now
        self._tokens: dict[str, tuple[str, datetime]] = {}  # scope -> (token, refresh at)
        self._lock = asyncio.Lock()
        self.paused_reason: str | None = None

    def paused_message(self) -> str:
        return f"sending paused: OAuth {self.paused_reason}; fix the credentials and restart"

    async def token(self, session: aiohttp.ClientSession, scope: str, stale: str | None = None) -> str:
        """A valid access token for ``scope``; ``stale`` is one an API just refused (a 401), so it is not reused."""
        token = self._fresh(scope, stale)
        if token is not None:
            return token
        async with self._lock:  # one refresh in flight; the others wait and reuse its token
            token = self._fresh(scope, stale)
            if token is not None:
                return token
            if self.paused_reason is not None:
                raise OAuthPaused()
            token, expires_in = await self._refresh(session, scope)
            margin = min(300.0, expires_in / 10)
            self._tokens[scope] = (token, self._now() + timedelta(seconds=max(0.0, expires_in - margin)))
            return token

    def _fresh(self, scope: str, stale: str | None) -> str | None:
        cached = self._tokens.get(scope)
        if cached is None or cached[0] == stale or self._now() >= cached[1]:
            return None
        return cached[0]

    async def _refresh(self, session: aiohttp.ClientSession, scope: str) -> tuple[str, float]:
        try:
            async with session.post(self._token_url, data=self._form | {"scope": scope}) as response:
                status = response.status
                raw = await response.read()
        except asyncio.TimeoutError:
            metrics.TOKEN_REFRESHES.labels(self.destination, "error").inc()
            raise TokenUnavailable("oauth_unavailable", "the token endpoint did not answer in time") from None
        except aiohttp.ClientError as exc:
            metrics.TOKEN_REFRESHES.labels(self.destination, "error").inc()
            raise TokenUnavailable("oauth_unavailable", f"token endpoint: {type(exc).__name__}") from None
        try:
            payload = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        token = payload.get("access_token")
        if status == 200 and isinstance(token, str) and token:
            expires_in = payload.get("expires_in")
            metrics.TOKEN_REFRESHES.labels(self.destination, "ok").inc()
            return token, float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600.0
        error = payload.get("error") if isinstance(payload.get("error"), str) else None
        if error in PAUSING_OAUTH_ERRORS:
            metrics.TOKEN_REFRESHES.labels(self.destination, error).inc()
            self._pause(error, payload.get("error_description"))
            raise OAuthPaused()
        metrics.TOKEN_REFRESHES.labels(self.destination, "error").inc()
        detail = f"token endpoint answered HTTP {status}" + (f" {error}" if error else "")
        if error == "invalid_scope":
            detail += f": the refresh token was not granted {scope}; authorise it again with that scope"
        raise TokenUnavailable("oauth_unavailable", detail)

    def _pause(self, reason: str, description: object) -> None:
        self.paused_reason = reason
        metrics.DESTINATION_PAUSED.labels(self.destination, reason).set(1)
        log.error(
            "google_ads: the token endpoint refused the OAuth credentials (%s%s); sending is paused and items stay "
            "in the outbox. Create a new refresh token (an OAuth app in 'Testing' status issues tokens that expire "
            "after 7 days; publish it to avoid that), update the google_ads credentials and restart the gateway.",
            reason, f": {str(description)[:120]}" if isinstance(description, str) and description else "",
            extra={"destination": self.destination, "reason": reason},
        )
