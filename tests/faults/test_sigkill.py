"""A gateway process killed with SIGKILL again and again under load loses nothing it answered 2xx.

A load generator (four concurrent senders in the test's loop) sends GA4
page views and purchases, signed order webhooks, and requests that must be
refused (a wrong signature, a value that is not a number); meanwhile the
`gateway serve` process is killed with SIGKILL four times, each time at a
random moment, and started again. Senders behave like real ones: no answer
or a 503 means "send the same bytes again".

Afterwards every request that got a 2xx must have reached each of its
vendors exactly once after the vendor's own de-duplication: the fake
Google Ads API (one click conversion per order id) and an http_request
sink (one per event_id); nothing of a 4xx'd request may have reached
either. Duplicates are expected (a batch sent just before a kill is sent
again once its lease runs out) and counted: Google Ads refuses a known
order id, the sink's receiver de-duplicates on event_id.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from aiohttp import web

from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.http_sink import HttpSink
from tests.faults.harness import (
    BACKENDS,
    LoadGenerator,
    Tally,
    container_yaml,
    dead_letters,
    google_ads_arrivals,
    sink_arrivals,
    sink_on,
    storage_for,
)
from tests.running import GatewayProcess, free_port, wait_until

KILLS = 4
SENDERS = 4


@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_request_answered_2xx_reaches_each_vendor_once_across_repeated_sigkills(tmp_path, backend):
    rng = random.Random(1234)
    tally = Tally()
    sink_port = free_port()
    async with storage_for(backend, tmp_path, "sigkill") as storage_url, FakeGoogleAds() as fake:
        sink = await sink_on(sink_port)
        config = tmp_path / "container.yaml"
        config.write_text(container_yaml(storage_url=storage_url, sink_port=sink_port, fake=fake))
        gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
        try:
            await gateway.start()
            async with LoadGenerator(gateway.url, tally) as load:
                numbers = iter(range(100_000))
                stop = asyncio.Event()

                async def sender() -> None:
                    while not stop.is_set():
                        await load.mixed(next(numbers))

                senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
                try:
                    for _ in range(KILLS):
                        await asyncio.sleep(rng.uniform(0.4, 1.0))  # under load
                        gateway.kill()  # SIGKILL, by PID
                        await asyncio.sleep(rng.uniform(0.05, 0.3))  # requests meet a closed port meanwhile
                        await gateway.start()
                    await asyncio.sleep(0.5)
                finally:
                    stop.set()
                    await asyncio.gather(*senders)

            await wait_until(lambda: tally.expected["http_request"] <= set(sink_arrivals(sink))
                             and tally.expected["google_ads"] <= {r.get("orderId") for r in fake.accepted["click"]},
                             timeout=30, interval=0.1)
            await asyncio.sleep(1.5)  # a lease (1s) more: late duplicates are counted too
            gateway.kill()
            letters = await dead_letters(storage_url)
        finally:
            gateway.kill()
            await sink.close()

        counts = tally.settle({"http_request": sink_arrivals(sink), "google_ads": google_ads_arrivals(fake)},
                              title=f"SIGKILL x{KILLS} under load ({backend})")
    print(f"  dead letters: {dict(Counter(letters))}")
    assert tally.undecided == {}, "a request never got an answer"
    assert (counts.lost, counts.unexpected) == (0, 0)
    assert counts.delivered == counts.accepted > 100
    assert sum(tally.statuses[s] for s in ("400", "401")) > 0  # the refused ones were sent, and refused


class AnswersLateFakeGoogleAds(FakeGoogleAds):
    """Records an upload at once, then keeps the answer back for ``delay`` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    async def _api(self, request: web.Request) -> web.Response:
        response = await super()._api(request)
        await asyncio.sleep(self.delay)
        return response


async def test_a_conversion_google_recorded_just_before_a_sigkill_is_not_dead_lettered_after_the_restart(tmp_path):
    storage_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with AnswersLateFakeGoogleAds() as fake, HttpSink() as sink:
        config = tmp_path / "container.yaml"
        config.write_text(container_yaml(storage_url=storage_url, sink_port=sink.port, fake=fake))
        gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
        tally = Tally()
        try:
            await gateway.start()
            fake.delay = 5.0  # Google records the conversion; its answer never reaches this gateway
            async with LoadGenerator(gateway.url, tally) as load:
                assert await load.order_webhook(1) == 200
            await wait_until(lambda: len(fake.accepted["click"]) == 1, timeout=10)
            gateway.kill()
            fake.delay = 0.0
            await gateway.start()
            await wait_until(lambda: len(fake.uploads) >= 2, timeout=10)  # the lease ran out; sent again
            await asyncio.sleep(0.5)
            gateway.kill()
            letters = await dead_letters(storage_url)
        finally:
            gateway.kill()
    assert [row["orderId"] for row in fake.accepted["click"]] == ["W-1"]  # at Google once, as it should be
    assert letters == []
