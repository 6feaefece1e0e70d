"""The whole path over real HTTP: hit -> client -> consent -> rules -> tag -> outbox -> sink."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import container_from, load_fixture
from tests.fakes.http_sink import HttpSink, Reply
from tests.running import ROOT, serve_in_loop, wait_until

GA4_FIXTURES = sorted(p.stem for p in (Path(__file__).parent / "fixtures" / "ga4").glob("*.json"))

ALL_DENIED = {"ad_storage": "denied", "analytics_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"}


def forwarding_container(sink_url: str, db_path: Path, *, max_attempts: int = 10) -> str:
    return f"""
server:
  trusted_proxies: ["127.0.0.1/32"]
storage:
  url: sqlite:///{db_path}
delivery:
  max_attempts: {max_attempts}
  backoff_initial: 10ms
  backoff_max: 50ms
  poll_interval: 20ms
clients:
  - type: ga4
  - type: json_beacon
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    url: {sink_url}/hook
    headers: {{Authorization: "Bearer sink-token"}}
"""


async def send_ga4(session: aiohttp.ClientSession, base: str, case: dict[str, Any]) -> int:
    url = f"{base}/g/collect?{case['query']}"
    async with session.request(case["method"], url, headers=case["headers"], data=case["body"].encode()) as response:
        return response.status


def sqlite_bytes(db_path: Path) -> bytes:
    """Every byte SQLite keeps for this database: the main file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in (db_path, Path(f"{db_path}-wal")) if p.exists())


@pytest.mark.parametrize("name", GA4_FIXTURES)
async def test_ga4_fixture_hit_is_delivered_with_every_expected_field(tmp_path, name):
    case = load_fixture("ga4", f"{name}.json")
    async with HttpSink() as sink:
        container = container_from(forwarding_container(sink.url, tmp_path / "g.db"), tmp_path / "g.db")
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            assert await send_ga4(session, base, case) == 204
            await wait_until(lambda: len(sink.requests) == len(case["expect"]))

    delivered = sorted((r.json() for r in sink.requests), key=lambda e: [x["event_name"] for x in case["expect"]].index(e["event_name"]))
    for event, expected in zip(delivered, case["expect"]):
        for key, value in expected.items():
            if key == "consent" and isinstance(value, str):
                value = ALL_DENIED  # "the container's consent.default": every default here is denied
            if value is None:
                assert key not in event, key
            else:
                assert event[key] == value, key
    assert all(r.headers["Authorization"] == "Bearer sink-token" for r in sink.requests)


async def test_client_ip_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(tmp_path):
    case = load_fixture("ga4", "purchase_with_user_data.json")
    async with HttpSink() as sink:
        container = container_from(forwarding_container(sink.url, tmp_path / "g.db"), tmp_path / "g.db")
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            assert await send_ga4(session, base, case) == 204
            await wait_until(lambda: len(sink.requests) == 1)

    assert sink.requests[0].json()["ip_override"] == "198.51.100.23"


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path):
    case = load_fixture("ga4", "purchase_with_user_data.json")
    async with HttpSink() as sink:
        yaml_text = forwarding_container(sink.url, tmp_path / "g.db").replace('trusted_proxies: ["127.0.0.1/32"]', "trusted_proxies: []")
        container = container_from(yaml_text, tmp_path / "g.db")
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            assert await send_ga4(session, base, case) == 204
            await wait_until(lambda: len(sink.requests) == 1)

    assert sink.requests[0].json()["ip_override"] == "127.0.0.1"


async def test_denied_ad_user_data_leaves_no_personal_data_in_delivery_or_sqlite_file(tmp_path):
    db_path = tmp_path / "g.db"
    email, phone = "jane.doe.private@example.com", "+49 170 5550199"
    beacon = {
        "event_name": "generate_lead",
        "consent": {"ad_user_data": "denied", "ad_storage": "granted"},
        "user_data": {"email_address": email, "phone_number": phone, "address": {"first_name": "Janeprivate"}},
        "customer_email": email,
    }
    ga4_denied = load_fixture("ga4", "purchase_all_denied.json")
    em_digest_hex = "036e9a0b1acf7cc02637a0ccdf656599f719066cb58b112aa7f106f643c762c0"
    async with HttpSink() as sink:
        container = container_from(forwarding_container(sink.url, db_path), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            async with session.post(f"{base}/collect", json=beacon) as response:
                assert response.status == 204
            assert await send_ga4(session, base, ga4_denied) == 204
            await wait_until(lambda: len(sink.requests) == 2)
            stored = sqlite_bytes(db_path)

    for request in sink.requests:
        event = request.json()
        assert "user_data" not in event
        assert email not in request.body.decode()
    for secret in (email.encode(), b"5550199", b"Janeprivate", em_digest_hex.encode(), b"A26aCxrPfMAmN6DM32VlmfcZBmy1ixEqp_EG9kPHYsA"):
        assert secret not in stored
        assert secret not in sqlite_bytes(db_path)


async def test_granted_ad_user_data_lets_personal_data_reach_the_tag(tmp_path):
    db_path = tmp_path / "g.db"
    beacon = {
        "event_name": "generate_lead",
        "consent": {"ad_user_data": "granted"},
        "user_data": {"email_address": "jane@example.com"},
    }
    async with HttpSink() as sink:
        container = container_from(forwarding_container(sink.url, db_path), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            async with session.post(f"{base}/collect", json=beacon) as response:
                assert response.status == 204
            await wait_until(lambda: len(sink.requests) == 1)

    assert sink.requests[0].json()["user_data"] == {"email_address": "jane@example.com"}


async def test_delivery_retries_through_500_and_429_then_delivers_once(tmp_path):
    db_path = tmp_path / "g.db"
    async with HttpSink() as sink:
        sink.script(500, 503, Reply(429, headers={"Retry-After": "0"}))
        container = container_from(forwarding_container(sink.url, db_path), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            async with session.post(f"{base}/collect", json={"event_name": "sign_up"}) as response:
                assert response.status == 204
            await wait_until(lambda: any(r.status == 200 for r in sink.requests))

    assert [r.status for r in sink.requests] == [500, 503, 429, 200]
    assert len({r.body for r in sink.requests}) == 1


async def test_dead_letter_after_the_attempt_limit_is_delivered_after_replay(tmp_path):
    db_path = tmp_path / "g.db"
    config_path = tmp_path / "container.yaml"
    async with HttpSink() as sink:
        config_path.write_text(forwarding_container(sink.url, db_path, max_attempts=3))
        sink.script(500, 500, 500)
        container = container_from(config_path.read_text(), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            async with session.post(f"{base}/collect", json={"event_name": "sign_up"}) as response:
                assert response.status == 204
            await wait_until(lambda: len(sink.requests) == 3)
            await wait_until(lambda: dead_letter_count(db_path) == 1)

            listed = run_cli("dead-letters", "list", "--config", str(config_path))
            assert '"code": "http_500"' in listed
            replayed = run_cli("dead-letters", "replay", "--config", str(config_path))
            assert replayed.strip() == "replayed 1 dead letter(s)"
            await wait_until(lambda: len(sink.requests) == 4)

    assert [r.status for r in sink.requests] == [500, 500, 500, 200]
    assert dead_letter_count(db_path) == 0


def dead_letter_count(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]


def run_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
