"""The fuzzed gateway: every client, every tag type, one storage, through the real app.

One app per test module (its state grows with the 2xx examples, which is the
point: later examples meet earlier orders in the ledger). The dispatcher is
off, so the outbox only grows and a 4xx that left anything behind shows.

Examples per test: ``FUZZ_MAX_EXAMPLES`` (default 60: tests/fuzz runs in CI
in well under a minute); ``FUZZ_MAX_EXAMPLES=2000`` is the long run that
docs/reliability.md ("Fuzzing every endpoint") describes. ``FUZZ_STORAGE=postgresql`` fuzzes the PostgreSQL
backend instead of SQLite (a database on 127.0.0.1:5432, made and dropped
per module).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import asyncpg
import pytest
from hypothesis import HealthCheck, event, note, settings
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Container, load_container_text
from tests.running import Answer, asgi_request

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "60"))
STORAGE = os.environ.get("FUZZ_STORAGE", "sqlite")
SECRET = "fuzz-secret-0123456789"
MAX_BODY = 16384

settings.register_profile(
    "fuzz",
    max_examples=MAX_EXAMPLES,
    deadline=None,  # a group commit with fsync is not a hypothesis-sized deadline
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
FUZZ = settings.get_profile("fuzz")

CONTAINER = f"""
consent:
  default: {{ad_storage: granted, analytics_storage: granted, ad_user_data: granted, ad_personalization: granted}}
server:
  trusted_proxies: ["127.0.0.1/32"]
storage:
  url: ${{FUZZ_STORAGE_URL}}
  synchronous: normal  # SQLite: no fsync per commit, this is about input, not power loss
limits:
  max_body_bytes: {MAX_BODY}
  max_events_per_request: 20
orders:
  hold_unknown_refunds: 72h
  sweep_interval: 1h
clients:
  - type: ga4
  - type: json_beacon
    allowed_origins: ["https://shop.example"]
  - type: order_webhook
    secret: {SECRET}
  - type: shopify
    secret: {SECRET}
  - type: woocommerce
    secret: {SECRET}
destinations:
  google_ads: {{mode: dry_run}}
  meta: {{mode: dry_run}}
triggers:
  everything: {{all: []}}
  purchase:
    all: [{{field: event_name, op: equals, value: purchase}}]
  refund_or_cancel:
    any: [{{field: event_name, op: in, value: [refund, order_cancelled]}}]
  with_click:
    any: [{{field: gclid, op: exists}}, {{field: gbraid, op: exists}}, {{field: wbraid, op: exists}}]
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: http://127.0.0.1:9/unused
  - name: gads_purchase
    type: google_ads_click_conversion
    trigger: purchase
    customer_id: "1234567890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
    default_region: DE
    cart_data: {{merchant_id: 1234}}
  - name: gads_clicks
    type: google_ads_click_conversion
    trigger: with_click
    customer_id: "1234567890"
    conversion_action_id: "111111111"
    timezone: America/Los_Angeles
    send_order_id: false
  - name: gads_refund
    type: google_ads_conversion_adjustment
    trigger: refund_or_cancel
    customer_id: "1234567890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
  - name: meta_purchase
    type: meta_capi
    trigger: purchase
    pixel_id: "1234567890123456"
    default_region: DE
  - name: meta_refund
    type: meta_capi
    trigger: refund_or_cancel
    pixel_id: "1234567890123456"
"""

# Every table a request may write: a 4xx must leave each exactly as it was.
STATE_TABLES = (
    "outbox", "request_keys", "dead_letters", "orders", "order_changes", "held_changes", "order_deliveries",
)


class StateProbe:
    """Whether anything was committed to the gateway's storage, cheaply enough to ask before and after every request.

    SQLite: ``PRAGMA data_version`` on a connection of our own changes
    exactly when another connection (the gateway's writer) commits a change;
    the row counts say what changed when it did. PostgreSQL: a digest of
    every row of every table (the fuzzed database stays small).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        if url.startswith("sqlite:///"):
            self._sqlite = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None, check_same_thread=False)
        else:
            self._loop = asyncio.new_event_loop()
            self._pg = self._loop.run_until_complete(asyncpg.connect(url))

    def __call__(self) -> tuple[Any, dict[str, int]]:
        if self._sqlite is not None:
            conn = self._sqlite
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            return version, {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in STATE_TABLES}
        return self._loop.run_until_complete(self._postgres_state())

    async def _postgres_state(self) -> tuple[Any, dict[str, int]]:
        digests, counts = [], {}
        for table in STATE_TABLES:
            count, digest = await self._pg.fetchrow(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t")
            counts[table] = count
            digests.append(digest)
        return tuple(digests), counts

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        else:
            self._loop.run_until_complete(self._pg.close())
            self._loop.close()


@contextlib.contextmanager
def fuzz_storage(folder: Path, purpose: str) -> Iterator[str]:
    """The storage URL the fuzzed gateway writes to: a SQLite file in ``folder``, or a fresh PostgreSQL database."""
    if STORAGE == "sqlite":
        yield f"sqlite:///{folder / 'gateway.db'}"
        return
    from tests.faults.harness import postgres_database

    manager = postgres_database(f"fuzz_{purpose}")
    loop = asyncio.new_event_loop()
    try:
        url = loop.run_until_complete(manager.__aenter__())
        try:
            yield url
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


def fuzz_container(storage_url: str) -> Container:
    return load_container_text(CONTAINER, {"FUZZ_STORAGE_URL": storage_url})


def tag_errors() -> float:
    """Tag builds that raised (the pipeline turns those into skips; under fuzzing they are bugs)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "gateway_tag_skipped":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total") and s.labels.get("reason") == "error")
    return total


@dataclass
class FuzzedGateway:
    client: TestClient
    state: StateProbe

    def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        """One request straight into the app, bytes exactly as given (see ``tests.running.asgi_request``)."""
        return asgi_request(self.client, method, path, **kwargs)

    def check(self, answer: Answer, before: tuple[Any, dict[str, int]], tag_errors_before: float) -> None:
        """What every fuzzed request must satisfy, whatever it carried."""
        assert answer.status < 500, (answer.status, answer.body[:300])
        if 400 <= answer.status < 500:
            assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
            body = answer.json()
            assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
            assert isinstance(body["error"], str) and body["error"]
            assert self.state() == before, f"a {answer.status} left state behind: {body}"
        assert tag_errors() == tag_errors_before, "a tag raised while building a delivery"

    def send_checked(self, method: str, path: str, **kwargs: Any) -> Answer:
        note(f"{method} {path} {kwargs!r}"[:4000])
        before = self.state()
        errors_before = tag_errors()
        answer = self.request(method, path, **kwargs)
        event(f"{method} {path} -> {answer.status}"  # --hypothesis-show-statistics shows how deep examples got
              + (f" {answer.json().get('error')}" if 400 <= answer.status < 500 and answer.body[:1] == b"{" else ""))
        self.check(answer, before, errors_before)
        return answer


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedGateway]:
    with fuzz_storage(tmp_path_factory.mktemp("fuzz"), "clients") as url:
        app = create_app(fuzz_container(url), run_dispatcher=False)
        with TestClient(app, client=("127.0.0.1", 50000)) as client:
            state = StateProbe(url)
            try:
                yield FuzzedGateway(client, state)
            finally:
                state.close()


def hex_signature(body: bytes) -> bytes:
    return b"sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().encode()


def base64_signature(body: bytes) -> bytes:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
