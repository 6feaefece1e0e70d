"""The Google Ads API down for a while (connection refused, then 500s, then 429s) and back: everything accepted is delivered once.

The gateway runs under uvicorn in the test's loop beside the fake, on a
port where nothing listens at first: the OAuth token request and every
upload meet a refused connection. Then the fake starts, answers the next
uploads with 500 INTERNAL, then 429 RESOURCE_EXHAUSTED (with a short
retryDelay), then normally. Requests keep coming all along; the collector
keeps answering 2xx (the outbox takes them), and once the API is back
every click conversion reaches it exactly once.
"""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from tests.conftest import container_from
from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.http_sink import HttpSink
from tests.faults.harness import LoadGenerator, Tally, container_yaml, google_ads_arrivals, sink_arrivals
from tests.running import free_port, serve_in_loop, wait_until

FAILED_UPLOADS = {500: 5, 429: 5}


def _retries(code: str) -> float:
    """gateway_deliveries_total for google_ads retries with ``code``, in this process."""
    value = REGISTRY.get_sample_value("gateway_deliveries_total",
                                      {"destination": "google_ads", "outcome": "retry", "code": code})
    return value or 0.0


async def test_google_ads_refusing_then_failing_then_throttling_delivers_every_conversion_once_when_back(tmp_path):
    tally = Tally()
    fake = FakeGoogleAds(port=free_port())  # not started: connection refused
    refused_before = _retries("oauth_unavailable")
    async with HttpSink() as sink:
        yaml = container_yaml(storage_url=f"sqlite:///{tmp_path / 'g.db'}", sink_port=sink.port, fake=fake)
        async with serve_in_loop(container_from(yaml, tmp_path / "g.db")) as base, LoadGenerator(base, tally) as load:
            numbers = iter(range(100_000))
            stop = asyncio.Event()

            async def sender() -> None:
                while not stop.is_set():
                    await load.mixed(next(numbers))
                    await asyncio.sleep(0.005)

            senders = [asyncio.create_task(sender()) for _ in range(3)]
            try:
                await wait_until(lambda: _retries("oauth_unavailable") - refused_before >= 3, timeout=10)
                await asyncio.sleep(1.0)  # down for a while: retries keep meeting a closed port
                fake.fail_next(500, FAILED_UPLOADS[500])
                fake.fail_next(429, FAILED_UPLOADS[429], retry_delay=0.2)
                await fake.start()  # on the port the gateway was configured with
                await wait_until(lambda: sum(1 for u in fake.uploads if u.status == 200) >= 3, timeout=15)
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                await asyncio.gather(*senders)

            await wait_until(lambda: tally.expected["http_request"] <= set(sink_arrivals(sink))
                             and tally.expected["google_ads"] <= {r.get("orderId") for r in fake.accepted["click"]},
                             timeout=30, interval=0.1)
            await asyncio.sleep(0.5)
        await fake.close()

    counts = tally.settle({"http_request": sink_arrivals(sink), "google_ads": google_ads_arrivals(fake)},
                          title="Google Ads refused, 500, 429, back")
    statuses = [u.status for u in fake.uploads]
    print(f"  upload statuses in order: {statuses[:14]}...; items retried while the API refused connections: "
          f"{_retries('oauth_unavailable') - refused_before:.0f}")
    assert statuses[:FAILED_UPLOADS[500] + FAILED_UPLOADS[429]] == [500] * FAILED_UPLOADS[500] + [429] * FAILED_UPLOADS[429]
    assert tally.undecided == {} and set(tally.statuses) <= {"200", "204", "400", "401"}  # never a 503 meanwhile
    assert (counts.lost, counts.unexpected) == (0, 0)
    assert counts.delivered == counts.accepted > 50
