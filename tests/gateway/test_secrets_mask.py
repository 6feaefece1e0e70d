"""http_request credentials never stored, listed, logged or returned in clear: the dry-run table (real SQLite),
the senders' error messages (dead letters), and the log lines."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.logs import JsonFormatter
from tests.conftest import container_from
from tests.fakes.http_sink import HttpSink, Reply
from tests.running import serve_in_loop, wait_until

USER, PASSWORD = "hook-user", "pa55-userinfo-secret"
API_KEY, TOKEN, SIGNATURE = "query-api-key-secret", "query-token-secret", "query-signature-secret"
BEARER = "bearer-header-secret-0001"
X_API_KEY = "x-api-key-header-secret"
SHOP_TOKEN = "x-shop-token-secret"
CONFIGURED = "configured-header-secret"
SECRETS = (PASSWORD, API_KEY, TOKEN, SIGNATURE, BEARER, X_API_KEY, SHOP_TOKEN, CONFIGURED)


def _container(db_path: Path, base: str, mode: str) -> str:
    # An Authorization header cannot go with a URL's userinfo (aiohttp refuses the request, so the tag's config
    # does too): in dry-run the userinfo is on the first tag and the Authorization header on a second one.
    host = base.removeprefix("http://")
    forward_host, authorization = (host, f'      Authorization: "Bearer {BEARER}"\n') if mode == "live" else (
        f"{USER}:{PASSWORD}@{host}", "")
    bearer_tag = "" if mode == "live" else f"""
  - name: forward_bearer
    type: http_request
    trigger: everything
    mode: {mode}
    url: "http://{host}/bearer"
    headers:
      Authorization: "Bearer {BEARER}"
"""
    return f"""
storage:
  url: sqlite:///{db_path}
delivery:
  max_attempts: 1
  backoff_initial: 10ms
  backoff_max: 20ms
  poll_interval: 20ms
clients:
  - type: json_beacon
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    mode: {mode}
    url: "http://{forward_host}/hook?api_key={API_KEY}&token={TOKEN}&signature={SIGNATURE}&keep=visible"
    headers:
{authorization}      X-Api-Key: "{X_API_KEY}"
      X-Shop-Token: "{SHOP_TOKEN}"
      X-Partner: "{CONFIGURED}"
      X-Request-Source: gateway
    secret_headers: [X-Partner]
{bearer_tag}"""


def _db_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db_path, Path(f"{db_path}-wal")) if p.exists())


async def test_the_dry_run_table_stores_the_request_with_every_credential_masked(tmp_path: Path) -> None:
    db_path = tmp_path / "g.db"
    container = container_from(_container(db_path, "http://hooks.example", "dry_run"), db_path)
    async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
        async with session.post(f"{base}/collect", json={"event_name": "page_view"}) as response:
            assert response.status == 204
        await wait_until(lambda: _db_bytes(db_path).count(b"hooks.example") >= 2)

    stored = _db_bytes(db_path)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
    with sqlite3.connect(db_path) as db:
        requests = {orjson.loads(row[0])["url"]: orjson.loads(row[0]) for row in db.execute("SELECT request FROM dry_runs")}
    request = requests["http://***@hooks.example/hook?api_key=***&token=***&signature=***&keep=visible"]
    assert request["headers"] == {"Content-Type": "application/json", "X-Api-Key": "***",
                                  "X-Shop-Token": "***", "X-Partner": "***", "X-Request-Source": "gateway"}
    assert request["body"]["event_name"] == "page_view"
    bearer = requests["http://hooks.example/bearer"]
    assert bearer["headers"] == {"Content-Type": "application/json", "Authorization": "***"}


async def test_a_vendor_answer_that_echoes_the_credentials_is_stored_and_listed_masked(tmp_path: Path) -> None:
    db_path = tmp_path / "g.db"
    echo = orjson.dumps({"error": "rejected", "you_sent": {
        "authorization": f"Bearer {BEARER}", "x-api-key": X_API_KEY, "x-partner": CONFIGURED,
        "url": f"/hook?api_key={API_KEY}&token={TOKEN}", "x-shop-token": SHOP_TOKEN}})
    async with HttpSink(default=Reply(400, body=echo)) as sink:
        container = container_from(_container(db_path, sink.url, "live"), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            async with session.post(f"{base}/collect", json={"event_name": "page_view"}) as response:
                assert response.status == 204
            await wait_until(lambda: bool(sink.requests))
            await wait_until(lambda: b"rejected" in _db_bytes(db_path))

    assert sink.requests[0].headers["Authorization"] == f"Bearer {BEARER}"  # the vendor got them: live means live
    stored = _db_bytes(db_path)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
    with sqlite3.connect(db_path) as db:
        (message,) = [row[0] for row in db.execute("SELECT message FROM dead_letters")]
    assert message.startswith("HTTP 400: ") and "rejected" in message and "***" in message


@pytest.mark.parametrize("text", [
    f"POST http://{USER}:{PASSWORD}@hooks.example/hook?api_key={API_KEY} failed",
    f"answer: {{\"access_token\": \"{TOKEN}\", \"client_secret\": \"{SIGNATURE}\"}}",
    f"sent Authorization: Bearer {BEARER}",
    f"form client_secret={API_KEY}&refresh_token={TOKEN}&grant_type=refresh_token",
])
def test_a_log_line_never_carries_a_credential_in_its_message_or_its_fields(text: str) -> None:
    record = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, "%s", (text,), None)
    record.url = f"https://{USER}:{PASSWORD}@hooks.example/?token={TOKEN}"
    record.detail = text

    line = JsonFormatter().format(record)

    for secret in SECRETS:
        assert secret not in line, secret
    parsed = orjson.loads(line)
    assert parsed["url"] == "https://***@hooks.example/?token=***"
    assert parsed["level"] == "warning" and parsed["logger"] == "gateway.test"


def test_what_is_no_credential_stays_readable() -> None:
    from gateway import secrets_mask  # here, so the tests above fail on their own merits where it is missing

    url = "https://shop.example/p?page=2&utm_source=news&monkey=1#top"
    assert secrets_mask.mask_url(url) == url
    assert secrets_mask.mask_text("HTTP 400: field value is invalid; retry later") == \
        "HTTP 400: field value is invalid; retry later"
    assert secrets_mask.mask_headers({"Content-Type": "application/json", "User-Agent": "gw"}) == \
        {"Content-Type": "application/json", "User-Agent": "gw"}
