"""Run an aiohttp fake in a thread of its own, for tests whose app runs elsewhere.

Starlette's TestClient and a gateway subprocess both need the fake vendor to
answer while the test's own code blocks; a thread with its own event loop
keeps the fake independent of whichever loop drives the gateway.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

T = TypeVar("T")


class ThreadedServer:
    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app = app
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-server", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        self._thread.start()
        self.call(self._start)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # the bound port when 0 was asked
        self.port = sockets[0].getsockname()[1]

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
