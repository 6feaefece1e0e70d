"""The collection routes as a pure ASGI app, in front of Starlette.

Every page view of every visitor comes through here, so this path does no
more than the job needs: it takes the method, path, headers and peer straight
from the ASGI scope, hands them to ``Gateway.handle`` (which reads the body
and decides) and writes the answer with two ``send`` calls. Starlette's
router, ``Request``, ``Headers`` and ``Response`` cost about as much per hit
as the gateway's own parsing did, and no feature of theirs is used on these
routes. Everything else (health, metrics, /openapi.json, /debug, and the 404
for unknown paths) goes on to the Starlette app behind.

Every answer on a collection route carries ``X-Gateway-Trace``, and the id is
in ``TRACE_ID`` (which the log formatter reads) while the request is handled.
With the debugger on, ``TraceMiddleware`` wraps the same handler instead and
records the request as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.asgi_headers import scope_headers as scope_headers  # gateway.app reads it from here
from gateway.debug.trace import TRACE_HEADER, TRACE_ID, new_trace_id

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config import ClientEntry

# HTTP method -> (client entry, client name); the entry is None for a signed client switched off for want of a secret.
Methods = dict[str, tuple["ClientEntry | None", str]]

_TRACE_HEADER = TRACE_HEADER.lower().encode("ascii")
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(slots=True)
class Answer:
    """A response as the collection path builds it, before it is encoded for ASGI."""

    status: int
    body: bytes = b""
    media_type: str | None = None
    headers: dict[str, str] | None = None
    cookies: tuple[str, ...] = ()  # Set-Cookie values (gateway.first_party), one header each


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, orjson.dumps(body), "application/json", headers)


async def send_answer(send: Send, answer: Answer, trace_id: str | None) -> None:
    raw: list[tuple[bytes, bytes]] = []
    if answer.status not in _NO_BODY_STATUSES and answer.status >= 200:
        raw.append((b"content-length", str(len(answer.body)).encode("ascii")))
        if answer.media_type is not None:
            raw.append((b"content-type", answer.media_type.encode("latin-1")))
    if answer.headers:
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items())
    if answer.cookies:
        raw.extend((b"set-cookie", cookie.encode("latin-1")) for cookie in answer.cookies)
    if trace_id is not None:
        raw.append((_TRACE_HEADER, trace_id.encode("ascii")))
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": answer.body})


class CollectionFront:
    """Serves the collection routes itself and passes every other request to ``app``."""

    def __init__(self, app: ASGIApp, gateway: Gateway, routes: dict[str, Methods]) -> None:
        self.app = app
        self.gateway = gateway
        self.routes = routes
        self.allowed = {path: ", ".join(sorted(methods)) for path, methods in routes.items()}
        self._traced: ASGIApp | None = None
        if gateway.debug is not None:  # the debugger's recorder
            from gateway.debug.middleware import TraceMiddleware

            self._traced = TraceMiddleware(self._serve_traced, frozenset(routes), gateway.debug,
                                           gateway.container.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        if self._traced is not None:
            await self._traced(scope, receive, send)
            return
        trace_id = new_trace_id()
        token = TRACE_ID.set(trace_id)
        try:
            await send_answer(send, await self._answer(scope, receive), trace_id)
        finally:
            TRACE_ID.reset(token)

    async def _serve_traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Behind ``TraceMiddleware``, which set the trace id and adds its header."""
        await send_answer(send, await self._answer(scope, receive), None)

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        path = scope["path"]
        methods = self.routes[path]
        target = methods.get(scope["method"])
        if target is None:
            self.gateway.refused_method(next(iter(methods.values()))[1], scope["method"])
            return json_answer(405, {"error": "method not allowed", "detail": {"allowed": sorted(methods)}},
                               {"Allow": self.allowed[path]})
        return await self.gateway.handle(scope, receive, target[0], target[1])
