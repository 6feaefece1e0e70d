"""Slow and greedy clients against a real ``gateway serve``: they are cut off, and never starve the rest.

Every socket here goes to 127.0.0.1, is counted, and is closed before the
test ends; the gateway process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import resource
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson
import pytest

from tests.running import GatewayProcess, SQLiteWriteLock, free_port, wait_until

SECRET = "slow-client-test-secret-0123456789"
SLOW_CONNECTIONS = 1100
HOLD_SECONDS = 20.0
PROBE_BUDGET = 1.0  # seconds a probe may take while the slow connections are held


def container_yaml(db: Path, limits: str = "") -> str:
    return f"""
storage:
  url: sqlite:///{db}
limits:
{limits or "  max_body_bytes: 65536"}
clients:
  - type: ga4
  - type: json_beacon
  - type: order_webhook
    secret: {SECRET}
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: https://hooks.example/events
    mode: dry_run
"""


@contextlib.asynccontextmanager
async def gateway_on(tmp_path: Path, limits: str = "") -> AsyncIterator[GatewayProcess]:
    config = tmp_path / "container.yaml"
    config.write_text(container_yaml(tmp_path / "g.db", limits))
    gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
    await gateway.start()
    try:
        yield gateway
    finally:
        gateway.kill()


def order_body(order_id: str) -> bytes:
    return orjson.dumps({"order_id": order_id, "event": "order_paid", "order_value": 10.0, "currency": "EUR"})


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


async def read_answer(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bool]:
    """The status line the server sent (b"" for none), and whether it then closed the connection."""
    status = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(timeout):
            status = await reader.readline()
            while await reader.read(4096):
                pass
            return status, True
    return status, False


async def test_request_headers_that_do_not_arrive_in_time_get_408_and_the_connection_closes(tmp_path):
    async with gateway_on(tmp_path, "  read_timeout: 1s") as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(b"POST /g/collect?v=2&tid=G-SLOW&en=x HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
            await writer.drain()
            status, closed = await read_answer(reader, timeout=10)
        finally:
            writer.close()

    assert (status.split(b" ", 2)[:2], closed) == ([b"HTTP/1.1", b"408"], True)


async def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes(tmp_path):
    async with gateway_on(tmp_path, "  read_timeout: 1s") as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(b"POST /collect HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
            await writer.drain()
            status, closed = await read_answer(reader, timeout=10)
        finally:
            writer.close()

    assert (status.split(b" ", 2)[:2], closed) == ([b"HTTP/1.1", b"408"], True)


async def test_a_connection_that_never_sends_a_request_is_closed_without_an_answer(tmp_path):
    async with gateway_on(tmp_path, "  read_timeout: 1s") as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            status, closed = await read_answer(reader, timeout=10)
        finally:
            writer.close()

    assert (status, closed) == (b"", True)


HIT = b"GET /g/collect?v=2&tid=G-KEEP&cid=1.2&en=page_view HTTP/1.1\r\nHost: gw\r\n\r\n"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """One answer's status line, its head read to the blank line (a 204 has no body)."""
    async with asyncio.timeout(10):
        status = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
    return status


async def test_a_kept_alive_connection_idle_past_the_read_timeout_still_serves_its_next_request(tmp_path):
    """The head deadline runs from a request's first byte: a kept-alive connection idle between requests for
    longer than read_timeout (but not uvicorn's keep-alive of 5 s) is not cut off by it."""
    async with gateway_on(tmp_path, "  read_timeout: 1s") as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(HIT)
            first = await read_head(reader)
            await asyncio.sleep(1.6)
            writer.write(HIT)
            second = await read_head(reader)
        finally:
            writer.close()

    assert [first.split(b" ", 2)[:2], second.split(b" ", 2)[:2]] == [[b"HTTP/1.1", b"204"]] * 2


@pytest.mark.parametrize("pause", [0.6, 1.4])
async def test_a_slow_head_on_a_kept_alive_connection_gets_408_a_full_read_timeout_after_it_began(tmp_path, pause):
    """The second request's head starts ``pause`` seconds after the first answer and trickles: it gets its own
    full read_timeout from its first byte (not the connection's), then 408 and the close; whether the head
    began before the connection's first second was out (0.6) or after (1.4)."""
    async with gateway_on(tmp_path, "  read_timeout: 1s") as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(HIT)
            first = await read_head(reader)
            await asyncio.sleep(pause)
            began = time.monotonic()
            writer.write(b"GET /g/collect?v=2&tid=G-SLOW&en=x HTTP/1.1\r\nHost: gw\r\n")
            await writer.drain()

            async def trickle() -> None:
                for n in range(40):
                    await asyncio.sleep(0.1)
                    writer.write(b"X-Trickle-%02d: a\r\n" % n)

            trickling = asyncio.create_task(trickle())
            status, closed = await read_answer(reader, timeout=10)
            waited = time.monotonic() - began
            trickling.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await trickling
        finally:
            writer.close()

    assert first.split(b" ", 2)[:2] == [b"HTTP/1.1", b"204"]
    assert (status.split(b" ", 2)[:2], closed) == ([b"HTTP/1.1", b"408"], True)
    assert 0.9 <= waited < 5, waited


async def test_request_headers_beyond_32_kib_get_431(tmp_path):
    async with gateway_on(tmp_path) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(b"GET /g/collect?v=2&tid=G-BIG&en=x HTTP/1.1\r\nHost: gw\r\n")
            for n in range(40):  # 40 KiB of headers, and never the blank line that would end them
                writer.write(b"X-Filler-%02d: %s\r\n" % (n, b"a" * 1000))
            await writer.drain()
            status, closed = await read_answer(reader, timeout=10)
        finally:
            writer.close()

    assert (status.split(b" ", 2)[:2], closed) == ([b"HTTP/1.1", b"431"], True)


async def test_browser_hits_cannot_take_the_slots_order_webhooks_need(tmp_path):
    """Two GA4 hits wait on a storage another process has locked: GA4's budget of two is spent, the webhook's is not."""
    async with gateway_on(tmp_path, "  max_inflight_per_client: 2") as gateway, aiohttp.ClientSession() as session:
        async def get(query: str) -> tuple[int, Any]:
            async with session.get(f"{gateway.url}/g/collect?{query}") as response:
                return response.status, await response.read()

        async def webhook() -> int:
            body = order_body("ORD-SLOTS")
            async with session.post(f"{gateway.url}/webhooks/order-update", data=body, headers=signed(body)) as response:
                return response.status

        with SQLiteWriteLock(tmp_path / "g.db"):
            waiting = [asyncio.create_task(get(f"v=2&tid=G-SLOTS&en=page_view&ep.event_id=held-{n}")) for n in range(2)]
            await asyncio.sleep(0.5)  # both are committing now, behind the other process's lock
            refused_status, refused_body = await get("v=2&tid=G-SLOTS&en=page_view&ep.event_id=third")
            order = asyncio.create_task(webhook())
            await asyncio.sleep(0.5)
            order_was_waiting = not order.done()
        held = await asyncio.gather(*waiting)

        assert (refused_status, orjson.loads(refused_body)["detail"]["reason"]) == (503, "inflight")
        assert order_was_waiting  # admitted, waiting for the storage like the hits, not refused
        assert ([status for status, _ in held], await order) == ([204, 204], 200)


async def _hold_slow_connection(port: int, kind: int, until: float, tally: dict[str, int]) -> None:
    """One attacker's socket: open it, send part of a request, trickle a byte now and then; reopen when cut off."""
    # One in 22 never finishes its headers; the rest send their headers and a byte of body: 1,050 of
    # 1,100 are more than the 1,024 requests a single shared in-flight pool would admit.
    slow_headers = b"GET /g/collect?v=2&tid=G-SLOW&en=page_view HTTP/1.1\r\nHost: gw\r\n"
    slow_bodies = [
        b"POST /g/collect?v=2&tid=G-SLOW HTTP/1.1\r\nHost: gw\r\nContent-Length: 4000\r\n\r\nen=",
        b"POST /collect HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\nContent-Length: 4000\r\n\r\n{",
        b"POST /webhooks/order-update HTTP/1.1\r\nHost: gw\r\nContent-Length: 4000\r\n\r\n{",
    ]
    head = slow_headers if kind % 22 == 0 else slow_bodies[kind % 22 % 3]
    while time.monotonic() < until:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            tally["open"] += 1
            try:
                writer.write(head)
                await writer.drain()
                while time.monotonic() < until:
                    line = b""
                    with contextlib.suppress(TimeoutError):
                        line = await asyncio.wait_for(reader.readline(), timeout=1.5)
                        if not line:
                            break  # closed without an answer
                    if line.startswith(b"HTTP/1.1 408"):
                        tally["408"] += 1
                        break
                    writer.write(b"a: b\r\n" if head is slow_headers else b"x")
                    await writer.drain()
            finally:
                tally["open"] -= 1
        except (ConnectionError, OSError):
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()


def _raise_open_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def test_a_webhook_and_a_hit_get_their_2xx_within_a_second_while_1100_slow_connections_are_held(tmp_path):
    _raise_open_file_limit(4 * SLOW_CONNECTIONS)  # the gateway child inherits it; it raises its own too
    async with gateway_on(tmp_path) as gateway:
        tally = {"open": 0, "408": 0}
        until = time.monotonic() + HOLD_SECONDS + 30  # the holders stop on their own, at the latest
        holders = [asyncio.create_task(_hold_slow_connection(gateway.port, n, until, tally)) for n in range(SLOW_CONNECTIONS)]
        probes: list[tuple[str, int, float]] = []
        held: list[int] = []
        try:
            ramp = time.monotonic()
            await wait_until(lambda: tally["open"] >= SLOW_CONNECTIONS - 5, timeout=30)
            print(f"{SLOW_CONNECTIONS} slow connections open after {time.monotonic() - ramp:.1f}s")
            end = time.monotonic() + HOLD_SECONDS
            connector = aiohttp.TCPConnector(force_close=True)  # a fresh connection per probe, as senders make
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
                n = 0
                while time.monotonic() < end:
                    n += 1
                    held.append(tally["open"])
                    body = order_body(f"ORD-PROBE-{n}")
                    started = time.monotonic()
                    async with session.post(f"{gateway.url}/webhooks/order-update", data=body, headers=signed(body)) as r:
                        probes.append(("webhook", r.status, time.monotonic() - started))
                    started = time.monotonic()
                    async with session.get(f"{gateway.url}/g/collect?v=2&tid=G-PROBE&en=page_view&ep.event_id=p{n}") as r:
                        probes.append(("ga4", r.status, time.monotonic() - started))
                    await asyncio.sleep(0.5)
        finally:
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)

    print(f"probes: {len(probes)}, slowest {max(p[2] for p in probes):.3f}s; held: {min(held)}..{max(held)}; "
          f"408s: {tally['408']}")
    slow = [p for p in probes if p[1] not in (200, 204) or p[2] > PROBE_BUDGET]
    assert len(probes) >= 20 and slow == []
    # The slow sockets were there for most probes: the median probe saw them all (within 50). They dip together
    # only when their deadlines cut them off together (one sweeping task cuts off every late read of a tick),
    # and this one test process needs a moment to reopen 1,100 sockets on two cores: a probe that lands in that
    # moment saw 445, and once 256, so the fewest a probe saw measures the test's own reconnecting, not the
    # gateway, and is not checked.
    assert sorted(held)[len(held) // 2] >= SLOW_CONNECTIONS - 50 and max(held) >= SLOW_CONNECTIONS - 5
    assert tally["408"] >= SLOW_CONNECTIONS  # each was cut off at its deadline, and came back
