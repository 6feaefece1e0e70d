"""How the gateway meets the network: uvicorn's options, and deadlines on slow request heads.

uvicorn reads each request's head (request line and headers) itself, with
httptools, before the application sees anything, and it waits for as long
as a client likes: a few hundred sockets that send a header line now and
then would stay open for ever. ``DeadlineProtocol`` is uvicorn's httptools
protocol with three limits added:

- a request's head must arrive within ``limits.read_timeout`` of its first
  byte, else the answer is 408 and the connection closes (RFC 9110, 15.5.9);
- a new connection that sends nothing at all within that time is closed
  without an answer, as uvicorn closes an idle keep-alive connection;
- a head larger than ``MAX_HEAD_BYTES`` is answered 431 and the connection
  closes (RFC 6585, section 5), so that the same deadline cannot be spent
  sending megabytes of headers.

The body gets the same deadline in the application (``gateway.body``),
where its answer, a 408 with ``Connection: close``, is an ordinary one. A
reverse proxy that buffers requests (docs/reverse-proxy.md) keeps slow
clients away from the gateway altogether; these limits hold without one.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from typing import TYPE_CHECKING, Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.rejections import note_refused

if TYPE_CHECKING:
    from gateway.config import Container

MAX_HEAD_BYTES = 32 * 1024  # nginx's default for a request's headers (large_client_header_buffers 4 8k)
_HEAD_TOO_LARGE = f"request headers larger than {MAX_HEAD_BYTES} bytes"
LINGER_SECONDS = 2.0  # how long a refused connection's leftover bytes are read and dropped before it closes
# Open files `gateway serve` asks for: one per connection, and every held connection counts.
WANTED_OPEN_FILES = 65536


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline on each request's head and a cap on its size.

    The deadline costs a timer per read_timeout and connection, not per
    request: each head notes when it began (``_head_began``), and the
    connection's one timer, when it fires, refuses a head older than
    ``read_timeout``, waits again for the rest of a younger one's time, and
    lets a connection between requests be (uvicorn's keep-alive timeout
    closes it when it idles). The base class's callbacks are called directly
    (``super()`` builds an object per call on Python 3.11) and the size
    checks are inline. With a timer armed and cancelled for every request
    and those extra calls, the protocol cost a GA4 hit 44k instructions over
    uvicorn's own; now 17k (BENCHMARKS.md, "A seventh pass").
    """

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = -1  # bytes of the head read so far; -1 between requests
        self._head_began: float | None = None  # loop time of the current (or last) head's first byte
        self._refused = False

    # -- the deadline ----------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._refused:
            return
        if self._head_bytes < 0:
            if self._head_began is None and not self.transport.is_closing():
                self.transport.close()  # nothing of a request arrived: just close, as for an idle keep-alive
            return  # between requests, or past the head: the next head arms the timer again
        left = self._head_began + self.read_timeout - self.loop.time()  # type: ignore[operator]
        if left > 0:
            self._arm(left)
            return
        self._refuse(408, f"request headers not received within {self.read_timeout:g}s")

    def _refuse(self, status: int, error: str) -> None:
        """Answer ``status`` and close; the rest of the request, if any comes, is never parsed.

        The close lingers (as nginx's does): our side of the connection ends
        after the answer, and what the client still sends is read and dropped
        for up to ``LINGER_SECONDS``. Closing at once with unread bytes would
        make the kernel reset the connection, and the client could lose the
        answer that says why.
        """
        self._refused = True
        self._disarm()
        note_refused(status, error)
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": error, "detail": None})
        self.transport.write(b"".join([
            STATUS_LINE[status],
            b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode("ascii"),
            b"\r\nconnection: close\r\n\r\n", body,
        ]))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    # -- uvicorn's protocol, with the checks in front ---------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        self._arm(self.read_timeout)  # the first request must start, and its head end, within read_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            HttpToolsProtocol.data_received(self, data)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._head_began = self.loop.time()
        if self._deadline is None:  # the timer of an earlier head fired: this one needs its own
            self._arm(self.read_timeout)
        self._head_bytes = 0
        HttpToolsProtocol.on_message_begin(self)

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, _HEAD_TOO_LARGE)
            return
        HttpToolsProtocol.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, _HEAD_TOO_LARGE)
            return
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_bytes = -1  # the timer, if it fires before the next head, finds none and lets be
        HttpToolsProtocol.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        if not self._refused:
            HttpToolsProtocol.on_message_complete(self)



def uvicorn_options(container: Container) -> dict[str, Any]:
    """What ``gateway serve`` (and the tests that run it in-process) give uvicorn besides host and port."""
    return {
        "http": functools.partial(DeadlineProtocol, read_timeout=container.file.limits.read_timeout.total_seconds()),
        # An idle kept-alive connection is closed after this; a new request on it restarts the deadline.
        "timeout_keep_alive": 5,
    }


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> tuple[int, int]:
    """Raise this process's soft limit on open files towards ``wanted`` (never past the hard limit).

    Every connection is a file descriptor, held ones included; the usual soft
    limit of 1024 would make the gateway refuse connections long before its
    own limits do. Returns the (soft, hard) limits now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard
