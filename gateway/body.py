"""Reading a collection request's body: at most ``limits.max_body_bytes``, within ``limits.read_timeout``.

A body that stops arriving would otherwise hold its connection for as long
as the sender likes. The deadline is kept without a timer per request (an
``asyncio.timeout`` costs about 4 µs on every POST, more than parsing a
beacon): each read registers its task and deadline in ``ReadDeadlines``,
whose one loop looks every ``SWEEP_SECONDS`` for reads past their deadline
and cancels them; ``read_body`` turns that cancellation into a 408 with
``Connection: close``, so what is left of the body is never read. A read is
cut off between ``read_timeout`` and ``read_timeout + SWEEP_SECONDS`` after
the request's headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.types import Receive

from gateway.errors import BadRequest

SWEEP_SECONDS = 0.25
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReadDeadlines:
    """The body reads in progress, each with its deadline, and the loop that cuts off the late ones."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[object], float] = {}  # task -> monotonic deadline
        self.expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="read-deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            late = [task for task, deadline in self.reading.items() if deadline <= now]
            for task in late:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()


async def read_body(receive: Receive, method: str, headers: dict[str, str], limit: int, deadlines: ReadDeadlines) -> bytes:
    """The request body, at most ``limit`` bytes, all of it before its deadline (else 408)."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, "invalid Content-Length header", field="headers.content-length")
        if int(declared) > limit:
            raise BadRequest(413, f"request body larger than {limit} bytes", field="body")
        if declared == "0":
            return b""
    elif method in _BODYLESS_METHODS and "transfer-encoding" not in headers:
        return b""  # nothing follows the headers: no need to wait on the body channel
    task = asyncio.current_task()
    assert task is not None
    deadlines.reading[task] = time.monotonic() + deadlines.timeout
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The sender went away mid-body: nothing of it is used. The answer
                # is likely never read, but the request is counted as the 4xx it is.
                raise BadRequest(400, "request body incomplete: the client disconnected", field="body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise BadRequest(413, f"request body larger than {limit} bytes", field="body")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if task not in deadlines.expired:
            raise  # a cancellation of someone else's (shutdown)
        deadlines.expired.discard(task)
        task.uncancel()
        raise BadRequest(408, f"request body not received within {deadlines.timeout:g}s", field="body",
                         headers={"Connection": "close"}) from None
    finally:
        deadlines.reading.pop(task, None)
    return b"".join(chunks)
