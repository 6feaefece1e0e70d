"""The bundled load generators: open loop at a fixed rate (no coordinated omission) and a closed-loop fallback.

Open loop is the figure that matters for latency: request ``i`` is due at
``t0 + i / rate`` whatever happened to the ones before, and its latency is
measured from that intended time, not from when it was actually written. A
server that stalls for 50 ms therefore shows 50 ms of latency on every request
that fell due during the stall, as the visitors' browsers would see it. A
closed-loop generator (wrk, or ``closed_loop`` below) just waits, and hides
the stall behind one slow request per connection (coordinated omission).

Requests go out on a pool of keep-alive connections, one request in flight per
connection, as browsers do; a new connection is opened when all are busy, so
the pool never throttles the schedule. The generator wakes at most once per
millisecond and sends everything that fell due; the time between a request's
due time and its write is reported as ``send_lag_ms`` so its share of the
latency is visible (it is in the ceiling's figure too).

Responses are parsed just enough for keep-alive: status line, Content-Length.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, TypeVar

from bench.hits import Hit

T = TypeVar("T")

TICK = 0.001  # the generator sleeps at least this long between sends: no busy loop on the load core
IDLE_MAX = 4.0  # a connection idle this long is retired: uvicorn closes them after 5 s, and a request sent
#                 just as the server closes would fail for a reason that is not the server's fault
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
# Upper bounds (ms) of the latency histogram's buckets; the last bucket takes everything above.
HISTOGRAM_MS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 250.0, 1000.0)


@dataclass(slots=True)
class LoadResult:
    sent: int  # responses received, any status
    statuses: dict[int, int]
    errors: int  # connections that failed, requests left unanswered
    seconds: float  # measured wall time of the phase
    latency_ms: dict[str, float]  # p50, p90, p99, p99.9, max
    generator: str
    target_rate: float | None = None  # requests/s scheduled (open loop)
    send_lag_ms: dict[str, float] = field(default_factory=dict)  # open loop: write time minus due time
    histogram_ms: list[tuple[float | None, int]] = field(default_factory=list)  # (upper bound or None, count)

    @property
    def ok(self) -> int:
        """2xx responses: requests the server accepted (and, for the gateway, committed)."""
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return self.sent - self.ok

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "generator": self.generator, "seconds": round(self.seconds, 3), "responses": self.sent, "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "errors": self.errors,
            "requests_per_s": round(self.rps, 1), "target_rate": self.target_rate,
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "send_lag_ms": {k: round(v, 3) for k, v in self.send_lag_ms.items()},
            "histogram_ms": [[upper, count] for upper, count in self.histogram_ms],
        }


def percentiles(values: array | list[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in the unit of ``values``."""
    if not values:
        return {k: float("nan") for k in (*PERCENTILES, "max")}
    ordered = sorted(values)
    last = len(ordered) - 1
    out = {k: ordered[min(last, max(0, int(len(ordered) * q / 100.0 + 0.5) - 1))] for k, q in PERCENTILES.items()}
    out["max"] = ordered[-1]
    return out


def histogram(values: array | list[float], bounds: tuple[float, ...] = HISTOGRAM_MS) -> list[tuple[float | None, int]]:
    """How many of ``values`` (ms) fall at or under each bound and above the one before; None: above the last."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect_left(bounds, value)] += 1
    return [(upper, count) for upper, count in zip((*bounds, None), counts)]


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.on_done: Callable[["_Conn", int | None, float], None] | None = None
        self.started = 0.0  # due time (open loop) or write time (closed loop)
        self.idle_since = time.perf_counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, started: float, on_done: Callable[["_Conn", int | None, float], None]) -> None:
        self.started = started
        self.on_done = on_done
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17: stop if stop >= 0 else None])
        elif b"transfer-encoding: chunked" in head:
            raise RuntimeError("chunked responses are not supported by the bench client")
        if len(self.buf) < end + 4 + length:
            return
        status = int(self.buf[9:12])
        del self.buf[: end + 4 + length]
        self._finish(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_done is not None:
            self._finish(None)

    def _finish(self, status: int | None) -> None:
        self.idle_since = time.perf_counter()
        done, self.on_done = self.on_done, None
        if done is not None:
            done(self, status, time.perf_counter())


async def _connect(host: str, port: int) -> _Conn:
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, host, port)
    return conn


async def open_loop(
    host: str, port: int, hit: Hit, rate: float, duration: float, seq_start: int,
    max_connections: int = 1024, drain_timeout: float = 15.0,
) -> LoadResult:
    """Send ``rate`` requests/s for ``duration`` s on schedule; latency from each request's due time."""
    authority = f"{host}:{port}"
    latencies = array("d")
    lags = array("d")
    statuses: Counter[int] = Counter()
    errors = 0
    idle: list[_Conn] = [await _connect(host, port) for _ in range(min(16, max_connections))]
    opened = len(idle)
    opening = 0
    backlog: deque[tuple[float, int]] = deque()  # (due time, sequence number) waiting for a connection
    outstanding = 0
    total = max(1, int(rate * duration))
    all_done = asyncio.Event()

    def pump() -> None:
        nonlocal outstanding, opening, opened
        while backlog and idle:
            conn = idle.pop()
            if conn.closed or time.perf_counter() - conn.idle_since > IDLE_MAX:
                if conn.transport is not None:
                    conn.transport.close()
                opened -= 1
                continue
            due, n = backlog.popleft()
            lags.append((time.perf_counter() - due) * 1000)
            outstanding += 1
            conn.send(hit.raw(n, authority), due, finished)
        if backlog and opened + opening < max_connections and opening < len(backlog):
            opening += 1
            asyncio.get_running_loop().create_task(grow())

    async def grow() -> None:
        nonlocal opening, opened, errors
        try:
            conn = await _connect(host, port)
        except OSError:
            errors += 1
            return
        finally:
            opening -= 1
        opened += 1
        idle.append(conn)
        pump()

    def finished(conn: _Conn, status: int | None, at: float) -> None:
        nonlocal outstanding, errors, opened
        outstanding -= 1
        if status is None:
            errors += 1
            opened -= 1
        else:
            statuses[status] += 1
            latencies.append((at - conn.started) * 1000)
            if not conn.closed:
                idle.append(conn)
            else:
                opened -= 1
        pump()
        if sent_all and outstanding == 0 and not backlog:
            all_done.set()

    sent_all = False
    t0 = time.perf_counter() + 0.01
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and t0 + i / rate <= now:
            backlog.append((t0 + i / rate, seq_start + 1 + i))
            i += 1
        pump()
        if i < total:
            await asyncio.sleep(max(TICK, t0 + i / rate - time.perf_counter()))
    sent_all = True
    if outstanding or backlog:
        try:
            await asyncio.wait_for(all_done.wait(), drain_timeout)
        except TimeoutError:
            errors += outstanding + len(backlog)
    seconds = time.perf_counter() - t0
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    return LoadResult(
        sent=sum(statuses.values()), statuses=dict(statuses), errors=errors, seconds=seconds,
        latency_ms=percentiles(latencies), generator="bench.loadgen open loop", target_rate=rate,
        send_lag_ms=percentiles(lags), histogram_ms=histogram(latencies),
    )


async def closed_loop(
    host: str, port: int, hit: Hit, duration: float, connections: int, seq_start: int, count: int | None = None
) -> LoadResult:
    """The fallback when wrk is not installed: ``connections`` loops of send, wait, send.

    With ``count``, exactly that many requests are sent (numbers ``seq_start + 1`` to ``seq_start + count``)
    and ``duration`` is only a time limit: the instruction count needs a known number of requests.
    """
    authority = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    latencies = array("d")
    statuses: Counter[int] = Counter()
    errors = 0
    sequence = itertools.count(seq_start + 1)
    last = None if count is None else seq_start + count
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        nonlocal errors
        conn: _Conn | None = None
        while time.perf_counter() < deadline:
            n = next(sequence)
            if last is not None and n > last:
                break
            if conn is None or conn.closed:
                try:
                    conn = await _connect(host, port)
                except OSError:
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
            answer: asyncio.Future[tuple[int | None, float]] = loop.create_future()
            conn.send(hit.raw(n, authority), time.perf_counter(),
                      lambda c, status, at, answer=answer: answer.set_result((status, at)))
            status, at = await answer
            if status is None:
                errors += 1
                continue
            statuses[status] += 1
            latencies.append((at - conn.started) * 1000)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return LoadResult(
        sent=sum(statuses.values()), statuses=dict(statuses), errors=errors, seconds=time.perf_counter() - started,
        latency_ms=percentiles(latencies), generator="bench.loadgen closed loop", histogram_ms=histogram(latencies),
    )


async def request_once(host: str, port: int, hit: Hit, n: int, timeout: float = 10.0) -> int | None:
    """Send request number ``n`` on its own connection; its status, or None if the connection failed."""
    conn = await _connect(host, port)
    answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    conn.send(hit.raw(n, f"{host}:{port}"), time.perf_counter(), lambda c, status, at: answer.set_result(status))
    try:
        return await asyncio.wait_for(answer, timeout)
    finally:
        if conn.transport is not None:
            conn.transport.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a generator coroutine on uvloop when it is installed (less generator overhead per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
