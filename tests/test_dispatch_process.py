"""`gateway serve` with its dispatcher in a process of its own: deliveries, a killed child, shutdown, readiness.

Real processes throughout: `gateway serve` on a SQLite file (or a fresh
PostgreSQL database), the dispatcher child it starts, and a sink on
127.0.0.1 standing in for the http_request tag's destination. Every process
is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import dispatcher_mode
from tests.conftest import container_from
from tests.faults.harness import BACKENDS, sink_arrivals, sink_on, storage_for
from tests.running import GatewayProcess, child_pids, free_port, process_exists, wait_until

DELIVERED = 'destination="http_request",outcome="delivered"'


def container_yaml(storage_url: str, sink_port: int) -> str:
    # poll_interval 10s: a delivery within a second or two comes from the workers' wake-up, not from polling.
    return f"""
storage:
  url: {storage_url}
delivery:
  lease: 2s
  backoff_initial: 50ms
  backoff_max: 200ms
  poll_interval: 10s
  request_timeout: 2s
clients:
  - type: ga4
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: http://127.0.0.1:{sink_port}/hook
"""


def serve(tmp_path: Path, storage_url: str, sink_port: int, *args: str) -> GatewayProcess:
    config = tmp_path / "container.yaml"
    config.write_text(container_yaml(storage_url, sink_port))
    # The dispatcher process whatever the machine (``auto`` picks it only with two CPUs or more).
    return GatewayProcess(config, free_port(), tmp_path / "gateway.log", args=args or ("--dispatcher", "process"))


async def hits(gateway: GatewayProcess, event_ids: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for event_id in event_ids:
            url = f"{gateway.url}/g/collect?v=2&en=page_view&cid=c1&ep.event_id={event_id}"
            async with session.get(url) as response:
                assert response.status == 204


def dispatcher_child(gateway: GatewayProcess) -> int:
    """The one child of `gateway serve`, checked to be `gateway dispatch`."""
    assert gateway.pid is not None
    children = child_pids(gateway.pid)
    assert len(children) == 1, f"expected one dispatcher child of serve, found {children}"
    cmdline = Path(f"/proc/{children[0]}/cmdline").read_bytes().split(b"\0")
    assert b"dispatch" in cmdline, cmdline
    return children[0]


async def get(gateway: GatewayProcess, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.url}{path}") as response:
        return response.status, (await response.json() if path == "/readyz" else await response.text())


async def metric(gateway: GatewayProcess, name: str, labels: str = "") -> float:
    """The sum of a metric's samples whose labels match ``labels`` (a regular expression)."""
    _, text = await get(gateway, "/metrics")
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", text, re.MULTILINE):
        if re.search(labels, match.group(1) or ""):
            total += float(match.group(2))
    return total


async def test_a_hit_is_delivered_by_the_dispatcher_child_and_its_metrics_reach_metrics(tmp_path):
    sink_port = free_port()
    gateway = serve(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", sink_port)
    sink = await sink_on(sink_port)
    try:
        await gateway.start()
        child = dispatcher_child(gateway)
        await hits(gateway, ["first"])
        # Far sooner than poll_interval (10 s): the worker's datagram woke the child.
        await wait_until(lambda: sink_arrivals(sink) == ["first"], timeout=3)
        log = (tmp_path / "gateway.log").read_text()
        assert f'"message":"dispatcher process started","pid":{child}' in log
        # It yields the core to the HTTP worker: nicer, and its wake-ups never preempt (SCHED_BATCH).
        assert os.getpriority(os.PRIO_PROCESS, child) == os.getpriority(os.PRIO_PROCESS, gateway.pid) + 5
        assert os.sched_getscheduler(child) == os.SCHED_BATCH
        # Counted by the child (once the sink answered), read through the worker's /metrics.
        await wait_until(lambda: _metric_is(gateway, "gateway_deliveries_total", DELIVERED, 1), timeout=5)
        assert await metric(gateway, "gateway_delivery_request_seconds_count", 'destination="http_request"') == 1
        await wait_until(lambda: _heartbeat_recent(gateway), timeout=5)
        assert await get(gateway, "/readyz") == (200, {"storage": True, "dispatcher": True})
    finally:
        gateway.kill()
        await sink.close()
    # The kernel kills the child as its parent dies (parent-death signal): no orphan delivering on its own.
    await wait_until(lambda: not process_exists(child), timeout=5)


async def _metric_is(gateway: GatewayProcess, name: str, labels: str, value: float) -> bool:
    return await metric(gateway, name, labels) == value


async def _heartbeat_recent(gateway: GatewayProcess) -> bool:
    return time.time() - await metric(gateway, "gateway_dispatcher_heartbeat_timestamp_seconds") < 5


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_killed_dispatcher_child_is_restarted_and_nothing_is_lost(tmp_path, backend):
    sink_port = free_port()
    async with storage_for(backend, tmp_path, "dispatch_child") as storage_url:
        gateway = serve(tmp_path, storage_url, sink_port)
        sink = await sink_on(sink_port)
        try:
            await gateway.start()
            await hits(gateway, [f"before-{n}" for n in range(5)])
            await wait_until(lambda: len(sink_arrivals(sink)) == 5, timeout=5)
            first = dispatcher_child(gateway)
            os.kill(first, signal.SIGKILL)
            # Accepted while no dispatcher runs: kept in the outbox.
            await hits(gateway, [f"during-{n}" for n in range(5)])
            # One reading of the children per check: read twice, the killed child could be alive in the first
            # reading and a zombie (left out) in the second, and an empty list passed for a restarted one.
            await wait_until(lambda: (pids := child_pids(gateway.pid)) != [] and first not in pids, timeout=10)
            second = dispatcher_child(gateway)
            await hits(gateway, [f"after-{n}" for n in range(5)])
            # The restarted child runs a pass as it starts, so "during-*" go out without waiting for a poll.
            expected = {f"{phase}-{n}" for phase in ("before", "during", "after") for n in range(5)}
            await wait_until(lambda: set(sink_arrivals(sink)) == expected, timeout=15)
            log = (tmp_path / "gateway.log").read_text()
            assert f'"message":"dispatcher process exited; restarting it","pid":{first},"exit_code":-9' in log
            # Counters of the dead child stay in the totals; the new one adds its own.
            await wait_until(lambda: _metric_is(gateway, "gateway_deliveries_total", DELIVERED, len(sink_arrivals(sink))),
                             timeout=5)
            await wait_until(lambda: _ready(gateway), timeout=10)
        finally:
            gateway.kill()
            await sink.close()
        await wait_until(lambda: not process_exists(second), timeout=5)


async def _ready(gateway: GatewayProcess) -> bool:
    return (await get(gateway, "/readyz"))[0] == 200


async def test_sigterm_to_serve_stops_the_dispatcher_child_too(tmp_path):
    sink_port = free_port()
    gateway = serve(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", sink_port)
    sink = await sink_on(sink_port)
    try:
        await gateway.start()
        child = dispatcher_child(gateway)
        await hits(gateway, ["one"])
        await wait_until(lambda: sink_arrivals(sink) == ["one"], timeout=5)
        assert await asyncio.to_thread(gateway.terminate) in (0, -15)
        # serve waited for its child before exiting: no orphan, not even for a moment.
        assert not process_exists(child)
        log = (tmp_path / "gateway.log").read_text()
        assert '"message":"gateway stopped"' in log
        assert f'"message":"dispatcher process stopped","pid":{child}' in log
    finally:
        gateway.kill()
        await sink.close()


async def test_readyz_says_so_when_the_dispatcher_process_stops_making_progress(tmp_path):
    gateway = serve(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", free_port())
    try:
        await gateway.start()
        child = dispatcher_child(gateway)
        os.kill(child, signal.SIGSTOP)  # alive to the supervisor, but its heartbeat stops
        try:
            async def not_ready() -> bool:
                return await get(gateway, "/readyz") == (503, {"storage": True, "dispatcher": False})

            await wait_until(not_ready, timeout=15, interval=0.2)
        finally:
            os.kill(child, signal.SIGCONT)
        await wait_until(lambda: _ready(gateway), timeout=10)
        assert dispatcher_child(gateway) == child
    finally:
        gateway.kill()


async def test_dispatcher_inline_runs_no_child_and_still_delivers(tmp_path):
    sink_port = free_port()
    gateway = serve(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", sink_port, "--dispatcher", "inline")
    sink = await sink_on(sink_port)
    try:
        await gateway.start()
        assert gateway.pid is not None and child_pids(gateway.pid) == []
        await hits(gateway, ["inline"])
        await wait_until(lambda: sink_arrivals(sink) == ["inline"], timeout=5)
        await wait_until(lambda: _metric_is(gateway, "gateway_deliveries_total", DELIVERED, 1), timeout=5)
    finally:
        gateway.kill()
        await sink.close()


@pytest.mark.parametrize(("debug", "cpus", "mode"), [
    (False, 2, "process"), (False, 8, "process"), (False, 1, "inline"), (True, 8, "inline"),
])
def test_auto_runs_the_dispatcher_process_only_where_it_can_have_a_core_of_its_own(debug, cpus, mode, tmp_path):
    container = container_from(f"""
        storage: {{url: "sqlite:///{tmp_path / 'g.db'}"}}
        debug: {{enabled: {str(debug).lower()}, token: {"t" * 32}}}
        clients:
          - type: ga4
        """, tmp_path / "g.db")

    assert dispatcher_mode("auto", container, cpus=cpus) == mode
    assert dispatcher_mode("inline", container, cpus=8) == "inline"
    assert dispatcher_mode("process", container, cpus=1) == "process"
