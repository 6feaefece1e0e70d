"""What every fault test shares: a load generator that keeps score, the vendors' side of the count, and the final check.

The load generator is a client that behaves like the real senders: a
request that gets no definitive answer (connection refused or reset, a
503) is sent again, byte for byte, until it gets a 2xx or a 4xx or its
deadline passes; webhooks carry their idempotency key, hits their
``event_id``. Every logical request is then one of:

- accepted (2xx): each of its expected vendor keys must reach its vendor
  exactly once after the vendor's own de-duplication;
- rejected (4xx): none of its keys may reach any vendor;
- undecided: its deadline passed without an answer (the test fails on it
  unless it says otherwise).

``Tally.settle`` compares that with what the fakes received and prints,
per destination and in total, ``accepted=N delivered=N
duplicates_suppressed=N lost=0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import pytest

from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.http_sink import HttpSink

SECRET = "fault-secret-0123456789"
CUSTOMER_ID = "1234567890"
ACTION_ID = "987654321"

# Answers after which a sender tries again: no answer at all, or "not now".
RETRYABLE_STATUSES = frozenset({502, 503, 504})


@dataclass
class Counts:
    destination: str
    accepted: int
    delivered: int
    duplicates_suppressed: int
    lost: int
    unexpected: int  # keys that reached the vendor but were never accepted nor undecided
    delivered_ids: set[str] = field(default_factory=set)

    def line(self) -> str:
        return (f"accepted={self.accepted} delivered={self.delivered} "
                f"duplicates_suppressed={self.duplicates_suppressed} lost={self.lost}")


@dataclass
class Tally:
    """What the load generator was told, per logical request, with the vendor keys each should produce."""

    expected: dict[str, set[str]] = field(default_factory=dict)  # destination -> keys of accepted requests
    forbidden: dict[str, set[str]] = field(default_factory=dict)  # destination -> keys of rejected requests
    undecided: dict[str, set[str]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    attempts: int = 0

    @property
    def accepted_ids(self) -> set[str]:
        return set().union(*self.expected.values()) if self.expected else set()

    def accepted(self, key: str | None = None, **keys: str | list[str]) -> None:
        added = self._add(self.expected, key, keys)
        for destination, values in added.items():  # a request refused before, and now sent again
            left = self.undecided.get(destination)
            if left is not None:
                left -= values
                if not left:
                    del self.undecided[destination]

    def rejected(self, key: str | None = None, **keys: str | list[str]) -> None:
        self._add(self.forbidden, key, keys)

    def refused(self, key: str | None = None, **keys: str | list[str]) -> None:
        self._add(self.undecided, key, keys)

    @staticmethod
    def _add(target: dict[str, set[str]], key: str | None, keys: dict[str, str | list[str]]) -> dict[str, set[str]]:
        if key is not None:
            keys = {"http_request": key, **keys}
        added = {destination: {values} if isinstance(values, str) else set(values) for destination, values in keys.items()}
        for destination, values in added.items():
            target.setdefault(destination, set()).update(values)
        return added

    def settle(self, received: dict[str, list[str]], *, title: str = "") -> Counts:
        """Compare with what each vendor received (every arrival, repeats included); print and return the totals."""
        total = Counts("total", 0, 0, 0, 0, 0)
        lines = []
        for destination in sorted(set(self.expected) | set(received)):
            expected = self.expected.get(destination, set())
            arrivals = received.get(destination, [])
            unique = set(arrivals)
            counts = Counts(
                destination,
                accepted=len(expected),
                delivered=len(unique & expected),
                duplicates_suppressed=len(arrivals) - len(unique),
                lost=len(expected - unique),
                unexpected=len(unique - expected - self.undecided.get(destination, set())),
                delivered_ids=unique,
            )
            leaked = unique & self.forbidden.get(destination, set())
            assert not leaked, f"{destination}: rejected (4xx) requests were delivered: {sorted(leaked)[:5]}"
            lines.append(f"  {destination}: {counts.line()}")
            for name in ("accepted", "delivered", "duplicates_suppressed", "lost", "unexpected"):
                setattr(total, name, getattr(total, name) + getattr(counts, name))
            total.delivered_ids |= unique
        rejected = sum(len(v) for v in self.forbidden.values())
        undecided = sum(len(v) for v in self.undecided.values())
        print(f"\n{title or 'fault test'}: {total.line()}")
        print("\n".join(lines))
        print(f"  requests: {self.attempts} sent, answers {dict(sorted(self.statuses.items()))}, "
              f"{rejected} keys rejected with a 4xx, {undecided} undecided")
        return total


class LoadGenerator:
    """Sends logical requests, retrying each until a definitive answer, and records the outcome in a Tally."""

    def __init__(self, base: str, tally: Tally, *, deadline: float = 20.0, retry_pause: float = 0.05,
                 patient: bool = True, destinations: frozenset[str] = frozenset({"http_request", "google_ads"})) -> None:
        self.base = base
        self.destinations = destinations  # the vendors the gateway under test delivers to
        self.tally = tally
        self.deadline = deadline
        self.retry_pause = retry_pause
        self.patient = patient  # False: a 503 is final for this call (the test sends the request again later)
        self.last_503: dict[str, str] | None = None  # headers and body of the last 503 seen
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "LoadGenerator":
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, method: str, path: str, *, keys: dict[str, str | list[str]], body: bytes = b"",
                   headers: dict[str, str] | None = None) -> int | None:
        """One logical request; returns its definitive status, or None when it never got one."""
        assert self._session is not None
        keys = {destination: values for destination, values in keys.items() if destination in self.destinations}
        give_up = time.monotonic() + self.deadline
        while True:
            self.tally.attempts += 1
            status: int | None = None
            try:
                async with self._session.request(method, self.base + path, data=body or None, headers=headers) as r:
                    answer = await r.read()
                    status = r.status
                    if status == 503:
                        self.last_503 = {"retry-after": r.headers.get("Retry-After", ""),
                                         "content-type": r.headers.get("Content-Type", ""), "body": answer.decode()}
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = None
            self.tally.statuses["no answer" if status is None else str(status)] += 1
            if status is not None and status not in RETRYABLE_STATUSES:
                break
            if status is not None and not self.patient:
                self.tally.refused(**keys)
                return status
            if time.monotonic() > give_up:
                self.tally.refused(**keys)
                return None
            await asyncio.sleep(self.retry_pause)
        if 200 <= status < 300:
            self.tally.accepted(**keys)
        elif 400 <= status < 500:
            self.tally.rejected(**keys)
        else:
            raise AssertionError(f"{method} {path} answered {status}")
        return status

    # -- the requests the fault tests send ------------------------------------------------------------

    async def ga4_page_view(self, n: int) -> int | None:
        event_id = f"hit-{n}"
        return await self.send("GET", f"/g/collect?v=2&tid=G-TEST&cid={n}.1&en=page_view&ep.event_id={event_id}",
                               keys={"http_request": event_id})

    async def ga4_purchase(self, n: int) -> int | None:
        order = f"G-{n}"
        query = (f"v=2&tid=G-TEST&cid={n}.2&en=purchase&cu=EUR&epn.value={10 + n % 50}.5&gcs=G111"
                 f"&gcd=13r3r3r2r5l1&ep.transaction_id={order}&ep.event_id=gp-{n}"
                 f"&dl=https%3A%2F%2Fshop.example%2Fthanks%3Fgclid%3DCj0-ga4-{n}")
        return await self.send("GET", f"/g/collect?{query}", keys={"http_request": f"gp-{n}", "google_ads": order})

    async def ga4_batch(self, n: int, events: int = 3) -> int | None:
        """A POST of ``events`` GA4 events, one per body line: all of them are stored, or none."""
        ids = [f"batch-{n}-{i}" for i in range(events)]
        body = "\n".join(f"en=scroll&ep.event_id={event_id}&epn.percent_scrolled={i * 25}"
                         for i, event_id in enumerate(ids)).encode()
        return await self.send("POST", f"/g/collect?v=2&tid=G-TEST&cid={n}.3", body=body,
                               headers={"Content-Type": "text/plain"}, keys={"http_request": ids})

    async def order_webhook(self, n: int) -> int | None:
        order = f"W-{n}"
        body = orjson.dumps({
            "order_id": order, "event": "order_paid", "order_value": 20 + n % 30, "currency": "EUR",
            "updated_at": "2026-04-23T14:31:09+02:00", "gclid": f"Cj0-webhook-{n}", "event_id": f"wh-{n}",
            "consent": {"ad_user_data": "granted", "ad_storage": "granted"},
        })
        headers = {"Content-Type": "application/json", "X-Signature": hex_signature(body),
                   "Idempotency-Key": f"wh-{n}"}
        return await self.send("POST", "/webhooks/order-update", body=body, headers=headers,
                               keys={"http_request": f"wh-{n}", "google_ads": order})

    async def bad_webhook(self, n: int) -> int | None:
        """A webhook with a wrong signature: 401, and nothing of it may reach a vendor."""
        order = f"BAD-{n}"
        body = orjson.dumps({"order_id": order, "event": "order_paid", "order_value": 5, "currency": "EUR",
                             "gclid": f"Cj0-bad-{n}", "event_id": f"bad-{n}"})
        headers = {"Content-Type": "application/json", "X-Signature": hex_signature(body + b" ")}
        status = await self.send("POST", "/webhooks/order-update", body=body, headers=headers,
                                 keys={"http_request": f"bad-{n}", "google_ads": order})
        assert status in (401, None), status
        return status

    async def bad_hit(self, n: int) -> int | None:
        """A GA4 hit whose value is not a number: 400, and nothing of it may reach a vendor."""
        status = await self.send("GET", f"/g/collect?v=2&en=purchase&epn.value=lots&ep.event_id=badhit-{n}"
                                        f"&ep.transaction_id=BADHIT-{n}&dl=%2F%3Fgclid%3Dx{n}",
                                 keys={"http_request": f"badhit-{n}", "google_ads": f"BADHIT-{n}"})
        assert status in (400, None), status
        return status

    async def mixed(self, n: int) -> int | None:
        """The n-th request of the mix the fault tests send: page views, purchases, webhooks, and bad ones."""
        kind = n % 10
        if kind in (0, 1, 2, 3):
            return await self.ga4_page_view(n)
        if kind in (4, 5):
            return await self.ga4_purchase(n)
        if kind in (6, 7):
            return await self.order_webhook(n)
        if kind == 8:
            return await self.bad_webhook(n)
        return await self.bad_hit(n)


def hex_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def container_yaml(*, storage_url: str, sink_port: int, fake: FakeGoogleAds | None, lease: str = "1s",
                   max_depth: int = 1_000_000, sink_path: str = "/hook", login_customer_id: str = "",
                   extra: str = "") -> str:
    """GA4, the order webhook, an http_request sink for every event and a Google Ads click conversion per purchase.

    ``sink_path`` and ``login_customer_id`` let two instances that share one
    outbox tell the vendors apart: items, keys and batch keys stay the same.
    """
    google = ""
    gads_tag = ""
    if fake is not None:
        creds = fake.credentials
        google = f"""
destinations:
  google_ads:
    api: google_ads_api      # the fault tests watch the Google Ads API fake's uploads
    api_base: {fake.url}
    token_url: {fake.token_url}
    developer_token: {creds["developer_token"]}
    client_id: {creds["client_id"]}
    client_secret: {creds["client_secret"]}
    refresh_token: {creds["refresh_token"]}
    login_customer_id: "{login_customer_id}"
    flush_interval: 20ms
    max_batch_size: 25
"""
        gads_tag = f"""
  - name: gads_purchase
    type: google_ads_click_conversion
    trigger: purchase
    customer_id: "{CUSTOMER_ID}"
    conversion_action_id: "{ACTION_ID}"
    timezone: Europe/Berlin
"""
    return f"""
storage:
  url: {storage_url}
  max_outbox_depth: {max_depth}
delivery:
  lease: {lease}
  backoff_initial: 50ms
  backoff_max: 300ms
  poll_interval: 20ms
  request_timeout: 2s
  max_attempts: 1000
orders:
  sweep_interval: 1s
clients:
  - type: ga4
  - type: order_webhook
    secret: {SECRET}
{google}
triggers:
  everything: {{all: []}}
  purchase:
    all: [{{field: event_name, op: equals, value: purchase}}]
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: http://127.0.0.1:{sink_port}{sink_path}
{gads_tag}
{extra}"""


async def sink_on(port: int) -> HttpSink:
    """An HttpSink bound to a port chosen before it started (so the gateway's config could name it)."""
    sink = HttpSink()
    sink.port = port
    return await sink.start()


def sink_arrivals(sink: HttpSink) -> list[str]:
    """The event id of every request the sink answered 2xx, repeats included."""
    return [r.json()["event_id"] for r in sink.requests if 200 <= r.status < 300]


def google_ads_arrivals(fake: FakeGoogleAds) -> list[str]:
    """The order id of every click conversion row the fake received in an upload it answered 200, repeats included.

    The fake records a row as accepted once (it refuses a second one with
    ORDER_ID_ALREADY_IN_USE, as Google does), so the repeats are the
    duplicates Google's de-duplication suppressed. Every row uploaded must
    have been accepted once: a row refused for another reason is a loss.
    """
    accepted = Counter(row.get("orderId") for row in fake.accepted["click"])
    assert all(count == 1 for count in accepted.values()), accepted.most_common(3)
    arrivals = [row.get("orderId") for upload in fake.uploads if upload.status == 200
                and upload.method == "uploadClickConversions" for row in upload.body["conversions"]]
    assert set(arrivals) == set(accepted), f"rows refused for good: {sorted(set(arrivals) - set(accepted))[:5]}"
    return arrivals


# -- storage backends ---------------------------------------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
NO_POSTGRES_BACKEND = "PostgreSQL backend not available"


def postgres_backend_missing() -> str | None:
    """Why the PostgreSQL variants cannot run (the skip reason), or None when the backend is there."""
    from gateway.config import StorageSection
    from gateway.errors import ConfigError
    from gateway.storage import open_storage

    try:
        open_storage(StorageSection(url="postgresql://probe@127.0.0.1:1/probe"))  # builds it; connects only on open()
    except ConfigError:
        return NO_POSTGRES_BACKEND
    return None


def postgres_url(database: str, admin_url: str = POSTGRES_ADMIN_URL) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def postgres_database(purpose: str, admin_url: str = POSTGRES_ADMIN_URL) -> AsyncIterator[str]:
    """A database named for the test (``faults_<purpose>_<random>``), created for the block and dropped after it."""
    import asyncpg

    name = f"faults_{purpose}_{uuid.uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=5)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL server at {urlsplit(admin_url).netloc} not reachable ({type(exc).__name__})")
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    try:
        yield postgres_url(name, admin_url)
    finally:
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql",
                 marks=pytest.mark.skipif(postgres_backend_missing() is not None, reason=NO_POSTGRES_BACKEND)),
]


@contextlib.asynccontextmanager
async def storage_for(backend: str, tmp_path: Path, purpose: str) -> AsyncIterator[str]:
    """A storage URL of ``backend`` that lives for the block: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
    else:
        async with postgres_database(purpose) as url:
            yield url


async def dead_letters(storage_url: str) -> list[tuple[str, str | None]]:
    """(destination, code) of every dead letter the gateway left, read with the gateway's own storage code."""
    from gateway.config import StorageSection
    from gateway.storage import open_storage

    storage = open_storage(StorageSection(url=storage_url))
    await storage.open()
    try:
        return [(d.destination, d.code) for d in await storage.list_dead_letters(10_000)]
    finally:
        await storage.close()
