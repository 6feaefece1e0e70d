"""Two gateway instances on one PostgreSQL database, one killed with SIGKILL while a batch of its is in flight.

Both take requests (the load generator alternates, as a load balancer
would) and both dispatch from the shared outbox, claiming with
``FOR UPDATE SKIP LOCKED`` under a 1s lease. The vendors answer slowly
(0.4s) while the test waits until instance A has a Google Ads upload and an
http_request delivery in flight, then kills A. Its claimed items must be
taken over by B once their lease runs out: every request answered 2xx by
either instance reaches each vendor exactly once after the vendor's
de-duplication, whatever A had sent before it died.

The instances share items, idempotency keys and batch keys; only what
tells a vendor who is calling differs (the sink's path, the
``login-customer-id`` header), so the test sees which instance sent what.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp import web

from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.http_sink import Reply
from tests.faults.harness import (
    LoadGenerator,
    Tally,
    container_yaml,
    dead_letters,
    google_ads_arrivals,
    postgres_backend_missing,
    postgres_database,
    sink_arrivals,
    sink_on,
)
from tests.running import GatewayProcess, free_port, wait_until

pytestmark = pytest.mark.skipif(postgres_backend_missing() is not None, reason="PostgreSQL backend not available")

LOGIN_A, LOGIN_B = "1111111111", "2222222222"


class SlowFakeGoogleAds(FakeGoogleAds):
    """The fake Google Ads API, answering after ``delay`` seconds; counts uploads in flight per login-customer-id."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        self.in_flight: Counter[str] = Counter()
        self.by_caller: Counter[str] = Counter()

    async def _api(self, request: web.Request) -> web.Response:
        caller = request.headers.get("login-customer-id", "")
        self.in_flight[caller] += 1
        try:
            await asyncio.sleep(self.delay)
            response = await super()._api(request)
        finally:
            self.in_flight[caller] -= 1
        self.by_caller[caller] += 1
        return response


async def test_an_instance_killed_mid_batch_leaves_its_claims_to_the_other_and_nothing_is_lost(tmp_path):
    tally = Tally()
    sink_port = free_port()
    async with postgres_database("two_instances") as storage_url, SlowFakeGoogleAds() as fake:
        sink = await sink_on(sink_port)
        instances = []
        for name, login in (("a", LOGIN_A), ("b", LOGIN_B)):
            config = tmp_path / f"container-{name}.yaml"
            config.write_text(container_yaml(storage_url=storage_url, sink_port=sink_port, fake=fake,
                                             sink_path=f"/hook-{name}", login_customer_id=login))
            instances.append(GatewayProcess(config, free_port(), tmp_path / f"gateway-{name}.log"))
        a, b = instances
        try:
            await asyncio.gather(a.start(), b.start())
            async with LoadGenerator(a.url, tally) as load_a, LoadGenerator(b.url, tally) as load_b:
                numbers = iter(range(100_000))
                stop = asyncio.Event()

                async def sender(load: LoadGenerator) -> None:
                    while not stop.is_set():
                        await load.mixed(next(numbers))

                senders = [asyncio.create_task(sender(load)) for load in (load_a, load_b, load_a, load_b)]
                try:
                    await asyncio.sleep(1.0)
                    fake.delay = 0.4
                    sink.default = Reply(delay=0.4)

                    def a_is_mid_batch() -> bool:
                        sending = any(r.path == "/hook-a" for r in sink.requests[-8:])
                        return fake.in_flight[LOGIN_A] > 0 and sending

                    await wait_until(a_is_mid_batch, timeout=15, interval=0.01)
                    in_flight_at_kill = fake.in_flight[LOGIN_A]
                    a.kill()  # SIGKILL, by PID: its leases are left to run out
                    await asyncio.sleep(0.5)
                    fake.delay = 0.0
                    sink.default = Reply()
                    await asyncio.sleep(1.0)  # B alone; A's senders meet a closed port and send to A again...
                    await a.start()  # ...until A is back, as a restarted pod would be
                    await asyncio.sleep(0.5)
                finally:
                    stop.set()
                    await asyncio.gather(*senders)

            await wait_until(lambda: tally.expected["http_request"] <= set(sink_arrivals(sink))
                             and tally.expected["google_ads"] <= {r.get("orderId") for r in fake.accepted["click"]},
                             timeout=30, interval=0.1)
            await asyncio.sleep(1.5)  # a lease more: late duplicates are counted too
            a.kill()
            b.kill()
            letters = await dead_letters(storage_url)
        finally:
            a.kill()
            b.kill()
            await sink.close()

        counts = tally.settle({"http_request": sink_arrivals(sink), "google_ads": google_ads_arrivals(fake)},
                              title="two instances on one PostgreSQL, one killed mid-batch")
    by_path = Counter(r.path for r in sink.requests if r.status == 200)
    print(f"  sink deliveries by instance: {dict(by_path)}; Google Ads uploads by instance: "
          f"{ {('a' if k == LOGIN_A else 'b'): v for k, v in fake.by_caller.items()} }")
    print(f"  A was killed with {in_flight_at_kill} Google Ads upload(s) and an http_request delivery in flight")
    print(f"  dead letters: {dict(Counter(letters))}")
    assert tally.undecided == {}, "a request never got an answer"
    assert (counts.lost, counts.unexpected) == (0, 0)
    assert counts.delivered == counts.accepted > 100
    assert by_path["/hook-a"] > 0 and by_path["/hook-b"] > 0  # both instances dispatched
