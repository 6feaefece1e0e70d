"""A fake HTTP endpoint for the http_request tag: records what it receives, answers as scripted.

    async with HttpSink() as sink:
        sink.script(500, Reply(429, headers={"Retry-After": "120"}), 200)
        ...                                    # point a tag's url at sink.url + "/hook"
        assert [r.status for r in sink.requests] == [500, 429, 200]

Each request takes the next scripted reply; once the script runs out, every
request gets ``default`` (200 with ``{"ok": true}``). It runs on the test's own
event loop, on 127.0.0.1 and a port the OS picks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes._server import LoopbackServer


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok": true}'
    delay: float = 0.0  # seconds to wait before answering (for timeouts)


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # as sent; a repeated header keeps its last value
    body: bytes
    status: int  # what the sink answered

    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpSink(LoopbackServer):
    def __init__(self, default: Reply = Reply()) -> None:
        self.default = default
        self.requests: list[Received] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: int | Reply) -> None:
        """Answer the next requests with these statuses or replies, in order."""
        self._script.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        reply = self._script.popleft() if self._script else self.default
        self.requests.append(
            Received(request.method, request.path, request.query_string, dict(request.headers), body, reply.status)
        )
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body,
                            content_type=None if "Content-Type" in reply.headers else "application/json")
