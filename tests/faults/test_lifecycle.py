"""Graceful shutdown and start, measured: SIGTERM to exit under load, and start to ready (/readyz 200).

Printed figures (see docs/reliability.md, "What the fault tests prove"): the time from spawning `gateway serve`
to its first /readyz 200, over a few starts, and the time from SIGTERM to
the process's exit while senders keep sending and the dispatcher has slow
deliveries in flight (the sink answers after 0.3s). Bounds are asserted
loosely (a CI machine is slower than a laptop); the counts are exact: every
request answered 2xx before the SIGTERM is delivered once after a restart.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from tests.fakes.http_sink import Reply
from tests.faults.harness import BACKENDS, LoadGenerator, Tally, container_yaml, sink_arrivals, sink_on, storage_for
from tests.running import GatewayProcess, free_port, wait_until

STARTS = 3


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sigterm_under_load_exits_within_seconds_and_a_restart_is_ready_in_about_a_second(tmp_path, backend):
    tally = Tally()
    sink_port = free_port()
    async with storage_for(backend, tmp_path, "lifecycle") as storage_url:
        sink = await sink_on(sink_port)
        config = tmp_path / "container.yaml"
        config.write_text(container_yaml(storage_url=storage_url, sink_port=sink_port, fake=None))
        gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
        try:
            ready_times = []
            for _ in range(STARTS):
                started = time.monotonic()
                await gateway.start()
                ready_times.append(time.monotonic() - started)
                assert gateway.terminate() in (0, -15)

            await gateway.start()
            sink.default = Reply(delay=0.3)  # deliveries in flight when the signal comes
            async with LoadGenerator(gateway.url, tally, patient=False, destinations=frozenset({"http_request"}),
                                     deadline=0.5) as load:
                numbers = iter(range(100_000))
                stop = asyncio.Event()

                async def sender() -> None:
                    while not stop.is_set():
                        await load.mixed(next(numbers))

                senders = [asyncio.create_task(sender()) for _ in range(4)]
                await asyncio.sleep(1.5)
                signalled = time.monotonic()
                exit_code = await asyncio.to_thread(gateway.terminate)
                shutdown = time.monotonic() - signalled
                stop.set()
                await asyncio.gather(*senders)
            assert exit_code in (0, -15)
            log = (tmp_path / "gateway.log").read_text()
            assert '"message":"gateway stopped"' in log

            sink.default = Reply()
            started = time.monotonic()
            await gateway.start()
            ready_after_load = time.monotonic() - started
            await wait_until(lambda: tally.expected["http_request"] <= set(sink_arrivals(sink)), timeout=30)
            await asyncio.sleep(1.2)
        finally:
            gateway.kill()
            await sink.close()
    counts = tally.settle({"http_request": sink_arrivals(sink)}, title=f"SIGTERM under load, then restart ({backend})")
    print(f"  start to /readyz 200: median {statistics.median(ready_times) * 1000:.0f} ms, "
          f"max {max(ready_times) * 1000:.0f} ms over {STARTS} starts; "
          f"{ready_after_load * 1000:.0f} ms with the backlog left by the load")
    print(f"  SIGTERM to exit under load ({len(tally.expected.get('http_request', ()))} events accepted, "
          f"deliveries in flight): {shutdown * 1000:.0f} ms")
    assert max(ready_times) < 10 and ready_after_load < 10
    assert shutdown < 15  # uvicorn's graceful timeout plus the dispatcher's 10s for sends in flight
    assert (counts.lost, counts.unexpected) == (0, 0)
