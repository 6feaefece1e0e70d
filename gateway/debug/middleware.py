"""ASGI middleware around the collection routes: a trace id on every answer, and the trace itself.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, so that the
context variables it sets are the ones the endpoint, the pipeline and the
log formatter read, and so that it adds nothing but a header to a response.

Always: a new trace id per request, in ``TRACE_ID`` (the logs read it) and in
the ``X-Gateway-Trace`` response header of every answer on a collection
route, 2xx and 4xx alike, so a site owner can quote it.

With ``debug.enabled``: the request body is copied as it is read (up to
``limits.max_body_bytes``, the most the app reads itself), the status and an
error body are noted from the response, and when the response is complete
the trace is masked and published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi_headers import scope_headers
from gateway.debug.masking import mask_body
from gateway.debug.trace import CURRENT, TRACE_HEADER, TRACE_ID, new_trace_id
from gateway.netaddr import resolve_client_ip

if TYPE_CHECKING:
    from gateway.debug.recorder import Recorder

_HEADER_NAME = TRACE_HEADER.lower().encode("ascii")
_MAX_ERROR_BODY = 4096


class TraceMiddleware:
    def __init__(self, app: ASGIApp, paths: frozenset[str], recorder: Recorder | None, proxies: Any = ()) -> None:
        self.app = app
        self.paths = paths
        self.recorder = recorder
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        trace_id = new_trace_id()
        token = TRACE_ID.set(trace_id)
        header = (_HEADER_NAME, trace_id.encode("ascii"))
        try:
            if self.recorder is None:
                async def send_with_id(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        message = {**message, "headers": [*message.get("headers", ()), header]}
                    await send(message)

                await self.app(scope, receive, send_with_id)
            else:
                await self._record(self.recorder, scope, receive, send, trace_id, header)
        finally:
            TRACE_ID.reset(token)

    async def _record(
        self, recorder: Recorder, scope: Scope, receive: Receive, send: Send, trace_id: str, header: tuple[bytes, bytes]
    ) -> None:
        trace = recorder.begin(trace_id, scope["method"], scope["path"])
        body = bytearray()
        error = bytearray()
        limit = recorder.max_body

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < limit:
                body.extend(message.get("body", b"")[: limit - len(body)])
            return message

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                trace.status = message["status"]
                trace.mark("response")
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body" and (trace.status or 0) >= 400 and len(error) < _MAX_ERROR_BODY:
                error.extend(message.get("body", b"")[: _MAX_ERROR_BODY - len(error)])
            await send(message)

        token = CURRENT.set(trace)
        try:
            await self.app(scope, tee_receive, send_traced)
        except BaseException:
            if trace.status is None:
                trace.status = 500
            raise
        finally:
            CURRENT.reset(token)
            if error:
                trace.error = mask_body(bytes(error), "application/json")
            headers = scope_headers(scope)  # repeated X-Forwarded-For lines read as the gateway reads them
            peer = scope.get("client")
            client_ip = resolve_client_ip(peer[0] if peer else None, headers.get("x-forwarded-for"), self.proxies)
            query = scope.get("query_string", b"").decode("latin-1")
            recorder.finish(trace, query, headers, bytes(body), client_ip)
