"""Backpressure: a full outbox answers 503 with Retry-After instead of growing, and memory does not grow with load."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import aiohttp
import orjson
from prometheus_client import REGISTRY

from clients import _ga4_names
from gateway import dispatch_state, metrics
from gateway.app import create_app
from tests.conftest import container_from
from tests.faults.harness import Tally, sink_arrivals, sink_on
from tests.running import asgi_request, free_port, serve_app_in_loop, serve_in_loop, wait_until

MAX_DEPTH = 5


def container_yaml(sink_port: int, max_depth: int = MAX_DEPTH, synchronous: str = "full") -> str:
    return f"""
storage:
  url: sqlite:///${{DB}}
  max_outbox_depth: {max_depth}
  synchronous: {synchronous}
delivery:
  backoff_initial: 20ms
  backoff_max: 100ms
  poll_interval: 20ms
  max_attempts: 1000
  request_timeout: 2s
clients:
  - type: ga4
  - type: json_beacon
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: http://127.0.0.1:{sink_port}/hook
"""


async def test_a_full_outbox_answers_503_with_retry_after_and_accepts_again_once_the_destination_drained_it(tmp_path):
    sink_port = free_port()  # nothing listens: every delivery fails and stays pending
    container = container_from(container_yaml(sink_port), tmp_path / "g.db", {"DB": str(tmp_path / "g.db")})
    tally = Tally()
    async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
        refused = None
        for n in range(100):  # bounded: the 6th must already be refused
            event_id = f"ev-{n}"
            async with session.post(f"{base}/collect", json={"event_name": "sign_up", "event_id": event_id}) as response:
                if response.status == 503:
                    refused = (response.headers.get("Retry-After"), await response.json())
                    tally.rejected(event_id)  # a client told to come back later; this one does not
                    break
                assert response.status == 204
                tally.accepted(event_id)
        assert refused == ("30", {"error": "outbox full, try again later",
                                  "detail": {"reason": "outbox_full", "retry_after_seconds": 30}})
        assert len(tally.accepted_ids) == MAX_DEPTH

        sink = await sink_on(sink_port)  # the destination comes back
        try:
            await wait_until(lambda: {r.json()["event_id"] for r in sink.requests if r.status == 200} >= tally.accepted_ids,
                             timeout=20)

            async def accepted_again() -> bool:
                async with session.post(f"{base}/collect", json={"event_name": "sign_up", "event_id": "ev-after"}) as r:
                    return r.status == 204

            await wait_until(accepted_again, timeout=10, interval=0.2)
            tally.accepted("ev-after")
            await wait_until(lambda: any(r.json()["event_id"] == "ev-after" for r in sink.requests), timeout=10)
        finally:
            await sink.close()

    counts = tally.settle({"http_request": sink_arrivals(sink)}, title="outbox full, then drained")
    assert (counts.accepted, counts.delivered, counts.lost, counts.unexpected) == (MAX_DEPTH + 1, MAX_DEPTH + 1, 0, 0)


async def test_uploads_still_sending_their_body_hold_no_slot(tmp_path):
    """Two uploads stall mid-body with a budget of two: they wait, and the requests behind them are served."""
    container = container_from(container_yaml(free_port(), max_depth=1000), tmp_path / "g.db", {"DB": str(tmp_path / "g.db")})
    app = create_app(container, run_dispatcher=False)
    gateway = app.state.gateway
    gateway.max_inflight = 2
    async with serve_app_in_loop(app) as base:
        port = int(base.rsplit(":", 1)[1])
        body = b'{"event_name": "slow_upload"}'
        stalled = []
        for _ in range(2):  # two uploads that send their headers and half their body, then wait
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            await writer.drain()
            stalled.append((reader, writer))

        async with aiohttp.ClientSession() as session:
            for name in ("third", "fourth", "fifth"):
                async with session.post(f"{base}/collect", json={"event_name": name}) as response:
                    assert response.status == 204
            assert gateway.inflight["json_beacon"] == 0

            for reader, writer in stalled:
                writer.write(body[10:])
                await writer.drain()
                assert (await reader.readline()).startswith(b"HTTP/1.1 204")
                writer.close()
                await writer.wait_closed()


REQUESTS = 4500  # measured ones: the bound below is 72 KB; a leak of one small object (50+ bytes) per request exceeds it


def _label_children() -> dict[str, int]:
    """How many label sets each gateway_ metric holds."""
    out = {}
    for metric in REGISTRY.collect():
        if metric.name.startswith("gateway_"):
            out[metric.name] = len({tuple(sorted(s.labels.items())) for s in metric.samples})
    return out


def test_nothing_on_the_request_path_grows_with_the_number_of_distinct_requests(make_client, db_path):
    """Requests that differ in everything a client could vary: memory and metric label sets stay flat.

    Every request is new to the gateway (event name, client id, event id,
    user agent, cookies, order id, an extra key), which is what would make a
    per-request cache, a metric label or a forgotten queue entry grow. The
    outbox is kept "full" (max_outbox_depth 1) for the last third, so the
    503 path is measured too. Requests go straight into the ASGI app, so no
    HTTP client's allocations blur the measure.
    """
    yaml = container_yaml(free_port(), max_depth=1_000_000, synchronous="normal")  # memory, not fsync, is measured
    client = make_client(yaml, run_dispatcher=False, env={"DB": str(db_path)})
    gateway = client.app.state.gateway

    def burst(start: int, count: int) -> None:
        for n in range(start, start + count):
            if n % 2:
                query = f"v=2&en=event_{n}&cid={n}.{n}&ep.event_id=e{n}&ep.custom_{n}=x".encode()
                headers = [(b"user-agent", b"agent/%d" % n), (b"cookie", b"_fbp=fb.1.%d.1" % n)]
                answer = asgi_request(client, "GET", "/g/collect", query=query, headers=headers)
            else:
                body = orjson.dumps({"event_name": f"name_{n}", "event_id": f"b{n}", "client_id": f"c{n}",
                                     "transaction_id": f"T{n}", "extra": {f"key_{n}": n}})
                answer = asgi_request(client, "POST", "/collect", headers=[(b"content-type", b"application/json")],
                                      body=body)
            assert answer.status in (204, 503)

    burst(0, 500)  # past the 200 distinct event names the metrics keep
    # The GA4 client remembers what each parameter name is, up to a bound (MAX_KINDS): fill it, so that the
    # window below measures what happens once it is full. Filled through the client's own reader, not by hand.
    for n in range(_ga4_names.MAX_KINDS):
        _ga4_names.KINDS.get(f"ep.warm_{n}") or _ga4_names.kind_of(f"ep.warm_{n}")
    assert len(_ga4_names.KINDS) == _ga4_names.MAX_KINDS
    tracemalloc.start()
    try:
        # orjson caches object keys in a fixed table of 2048 slots; fill it while traced, so that what
        # it evicts later is seen being freed.
        for batch in range(10):
            body = orjson.dumps({"event_name": "warm_up", "extra": {f"key_{batch}_{n}": 1 for n in range(2000)}})
            answer = asgi_request(client, "POST", "/collect", headers=[(b"content-type", b"application/json")], body=body)
            assert answer.status == 204
        gateway.max_depth = 1  # through the refusal path once, for its label sets
        burst(500, 50)
        gateway.max_depth = 1_000_000
        burst(600, 50)  # small ones again: the warm-up's big objects are no longer the last ones referenced
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        labels_before = _label_children()
        burst(1000, REQUESTS * 2 // 3)
        gateway.max_depth = 1  # the outbox is "full" from here: the refusal path
        burst(10_000, REQUESTS // 3)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    finally:
        tracemalloc.stop()

    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    top = "\n".join(str(s) for s in after.compare_to(before, "lineno")[:8])
    print(f"\nrequest-path memory growth over {REQUESTS} distinct requests: {growth} bytes")
    assert growth < 16 * REQUESTS, f"memory grew by {growth} bytes over {REQUESTS} requests:\n{top}"
    assert _label_children() == labels_before
    assert len(metrics._seen_event_names) <= 200
    assert set(gateway.inflight.values()) == {0}
    assert gateway.storage._queue.qsize() == 0


def test_vendor_codes_past_a_hundred_per_destination_share_one_metric_label():
    labels = [dispatch_state.code_label(f"CODE_{n}", "bounded_test_destination") for n in range(150)]

    assert labels[:100] == [f"CODE_{n}" for n in range(100)]
    assert set(labels[100:]) == {"(other)"}
    assert dispatch_state.code_label("CODE_7", "bounded_test_destination") == "CODE_7"  # a known code keeps its label
    assert dispatch_state.code_label("x" * 500, "another_destination") == "x" * 64
