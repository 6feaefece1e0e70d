"""Bad requests get a 4xx naming the problem, leave nothing behind, and never a 5xx."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

CONTAINER = """
limits:
  max_body_bytes: 2048
  max_events_per_request: 3
clients:
  - type: ga4
  - type: json_beacon
    allowed_origins: ["https://shop.example"]
triggers:
  everything: {all: []}
tags:
  - name: sink
    type: http_request
    trigger: everything
    url: http://127.0.0.1:9/unused
    mode: dry_run
"""


def outbox_rows(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "error"),
    [
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b"{not json", 400, "body is not valid JSON", id="bad_json"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b"", 400, "empty body", id="empty_body"),
        pytest.param("POST", "/collect", {"content-type": "application/xml"}, b"<a/>", 415, "content type must be application/json or text/plain", id="wrong_content_type"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b'{"client_id": "1"}', 400, "invalid event", id="missing_event_name"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b'{"event_name": "x", "value": "lots"}', 400, "invalid event", id="value_not_a_number"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b'{"events": []}', 400, "events must be a non-empty list", id="empty_batch"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b'{"events": [{"event_name": "a"}, {"event_name": "b"}, {"event_name": "c"}, {"event_name": "d"}]}', 400, "more than 3 events in one request", id="too_many_events"),
        pytest.param("POST", "/collect", {"content-type": "application/json", "origin": "https://evil.example"}, b'{"event_name": "x"}', 403, "origin not allowed", id="origin_not_allowed"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b'{"event_name": "x", "timestamp": "yesterday"}', 400, "timestamp must be ISO 8601 or unix milliseconds", id="bad_timestamp"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b'{"event_name": "x", "consent": {"ad_storage": "maybe"}}', 400, "invalid consent", id="bad_consent"),
        pytest.param("POST", "/collect", {"content-type": "text/plain"}, b"\xff\xfe{", 400, "body is not valid JSON", id="not_utf8"),
        pytest.param("POST", "/collect", {"content-type": "application/json"}, b"{" + b" " * 4096 + b"}", 413, "request body larger than 2048 bytes", id="huge_body"),
        pytest.param("GET", "/collect", {}, b"", 405, "method not allowed", id="wrong_method_beacon"),
        pytest.param("DELETE", "/g/collect", {}, b"", 405, "method not allowed", id="wrong_method_ga4"),
        pytest.param("GET", "/g/collect?v=2&cid=1", {}, b"", 400, None, id="ga4_missing_en"),
        pytest.param("GET", "/nowhere", {}, b"", 404, "not found", id="unknown_path"),
    ],
)
def test_bad_request_gets_its_4xx_and_leaves_nothing(make_client, db_path, method, path, headers, body, status, error):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.request(method, path, headers=headers, content=body)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    if error is not None:
        assert response.json()["error"] == error
    assert outbox_rows(db_path) == 0


def test_oversized_body_announced_by_content_length_is_refused_before_reading(make_client, db_path):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.post("/collect", headers={"content-type": "application/json", "content-length": "999999"}, content=b"{}")

    assert response.status_code == 413


def test_preflight_from_allowed_origin_gets_cors_headers(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.options("/collect", headers={"origin": "https://shop.example", "access-control-request-method": "POST"})

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in response.headers["access-control-allow-methods"]


def test_preflight_from_other_origin_is_refused(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.options("/collect", headers={"origin": "https://evil.example"})

    assert response.status_code == 403


def test_beacon_as_text_plain_is_accepted_and_stored(make_client, db_path):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.post(
        "/collect",
        headers={"content-type": "text/plain;charset=UTF-8", "origin": "https://shop.example"},
        content=b'{"events": [{"event_name": "page_view"}, {"event_name": "scroll", "timestamp": 1732360000123}]}',
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert outbox_rows(db_path) == 2
