"""What every fake vendor shares: serving its aiohttp app on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

from typing import Any, Self

from aiohttp import web


class LoopbackServer:
    """Subclasses build their routes in ``app()``; ``port`` 0 lets the OS choose one."""

    port: int = 0
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise TypeError(f"{type(self).__name__} must build its aiohttp application in app()")

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
