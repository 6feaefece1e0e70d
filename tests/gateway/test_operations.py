"""Health, readiness, metrics, config validation and registry completeness."""

from __future__ import annotations

import base64
import io
import logging
import pkgutil
import re
import subprocess
import sys

import orjson
from prometheus_client import REGISTRY

import clients
import tags
from gateway.logs import JsonFormatter
from gateway.rejections import RejectionLog
from tests.running import ROOT, SQLiteWriteLock

CONTAINER = """
clients:
  - type: json_beacon
triggers:
  everything: {all: []}
tags:
  - name: sink
    type: http_request
    trigger: everything
    url: http://127.0.0.1:9/unused
    mode: dry_run
"""


def test_health_and_readiness_answer_when_storage_and_dispatcher_are_up(make_client):
    client = make_client(CONTAINER)

    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"storage": True, "dispatcher": True}


def test_metrics_count_requests_events_and_consent_without_personal_data(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)
    client.post("/collect", json={"event_name": "metric_probe", "user_data": {"email_address": "probe@example.com"}})

    text = client.get("/metrics").text

    assert 'gateway_requests_total{client="json_beacon",status="204"}' in text
    # The label is the name itself, or "(other)" once a process has seen 200 names (other tests run first).
    assert re.search(r'gateway_events_total\{client="json_beacon",event_name="(metric_probe|\(other\))"\}', text)
    assert 'gateway_consent_decisions_total{signal="ad_user_data",source="default",state="denied"}' in text
    assert 'gateway_tag_fires_total{tag="sink"}' in text
    assert "probe@example.com" not in text


def test_validate_prints_every_error_with_its_path_and_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
limits: {max_body_bytes: -1}
clients:
  - type: ga5
triggers:
  t: {all: [{field: value, op: gte, value: lots}]}
tags:
  - {name: a, type: http_request, trigger: missing, url: "not a url"}
"""
    )

    done = subprocess.run([sys.executable, "-m", "gateway.cli", "validate", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    lines = [line.strip() for line in done.stderr.splitlines()[1:]]
    assert lines[0].startswith("limits.max_body_bytes:")
    assert any(line.startswith("clients[0].type: unknown client type") for line in lines)
    assert "triggers.t.all[0].value: expected a number" in lines
    assert any(line.startswith("tags[0] (a).url:") for line in lines)
    assert "tags[0] (a).trigger: no trigger named 'missing' in triggers" in lines


def test_sample_container_validates():
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "validate", "examples/container.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr


def test_every_public_client_and_tag_module_is_registered():
    client_modules = {m.name for m in pkgutil.iter_modules(clients.__path__) if not m.name.startswith("_")}
    tag_modules = {m.name for m in pkgutil.iter_modules(tags.__path__) if not m.name.startswith("_")}

    assert client_modules == set(clients.CLIENTS)
    assert tag_modules == set(tags.TAGS)
    assert list(clients.CLIENTS) == sorted(clients.CLIENTS)
    assert list(tags.TAGS) == sorted(tags.TAGS)


def test_every_client_says_whether_it_verifies_a_signature():
    declared = {name: getattr(module, "AUTHENTICATED", None) for name, module in clients.CLIENTS.items()}

    assert declared == {"ga4": False, "json_beacon": False, "order_webhook": True, "shopify": True,
                        "woocommerce": True}
def test_a_locked_outbox_makes_readyz_fail_until_it_can_be_written_again(make_client, db_path):
    client = make_client(CONTAINER)

    with SQLiteWriteLock(db_path):
        locked = client.get("/readyz")
    unlocked = client.get("/readyz")

    assert (locked.status_code, locked.json()["storage"], locked.json()["dispatcher"]) == (503, False, True)
    assert "locked" in locked.json()["storage_problem"]
    assert (unlocked.status_code, unlocked.json()) == (200, {"storage": True, "dispatcher": True})


def test_metrics_start_at_zero_for_every_known_label_set_without_created_series(make_client):
    client = make_client(CONTAINER.replace("json_beacon", "json_beacon\n  - type: shopify\n    secret: ${NO_SUCH_SECRET:-}"),
                         run_dispatcher=False)

    text = client.get("/metrics").text
    series = {line.split(" ")[0] for line in text.splitlines() if line.startswith("gateway_")}

    assert {'gateway_requests_total{client="json_beacon",status="204"}',
            'gateway_requests_total{client="json_beacon",status="400"}',
            'gateway_requests_total{client="json_beacon",status="503"}',
            'gateway_requests_total{client="shopify",status="503"}',
            'gateway_requests_total{client="(none)",status="404"}',
            'gateway_request_duration_seconds_count{client="json_beacon"}',
            'gateway_tag_fires_total{tag="sink"}',
            'gateway_consent_decisions_total{signal="ad_personalization",source="request",state="granted"}',
            'gateway_deliveries_total{code="",destination="http_request",outcome="permanent"}',
            'gateway_dead_letters_total{code="",destination="http_request"}',
            'gateway_delivery_retries_total{destination="http_request"}',
            'gateway_storage_errors_total{operation="enqueue"}',
            'gateway_delivery_request_seconds_count{destination="http_request"}'} <= series
    assert [line for line in text.splitlines() if "_created" in line] == []


def test_each_request_is_timed_per_client(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    def timed() -> float:
        return REGISTRY.get_sample_value("gateway_request_duration_seconds_count", {"client": "json_beacon"}) or 0.0

    before = timed()
    client.post("/collect", json={"event_name": "timed"})
    client.post("/collect", json={"value": 3})  # a refusal is timed too
    client.get("/metrics")  # which hands the buffered observations over

    assert timed() == before + 2


def test_a_webhook_client_without_its_secret_answers_503_and_says_so_once_at_start(make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        client = make_client("clients:\n  - type: ga4\n  - type: shopify\n    secret: ${SHOPIFY_WEBHOOK_SECRET:-}\n")
    response = client.post("/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"})

    assert (response.status_code, response.json()) == (
        503, {"error": "webhook not configured", "detail": {"client": "shopify"}})
    assert [(r.getMessage(), r.client, r.variable) for r in caplog.records if r.name == "gateway.app"] == [
        ("webhook client switched off: its secret is not set", "shopify", "SHOPIFY_WEBHOOK_SECRET")]


def test_a_refused_webhook_leaves_one_log_line_with_its_trace_id(make_client):
    client = make_client("clients:\n  - type: shopify\n    secret: the-right-shopify-secret-0123\n")
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.requests")
    logger.addHandler(handler)
    try:
        response = client.post("/webhooks/shopify", content=b'{"id": 1}', headers={
            "X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode()})
    finally:
        logger.removeHandler(handler)

    [line] = [orjson.loads(text) for text in lines.getvalue().splitlines()]
    assert response.status_code == 401
    assert {k: line[k] for k in ("level", "message", "client", "status", "field", "trace_id")} == {
        "level": "warning", "message": "request refused", "client": "shopify", "status": 401,
        "field": "headers.x-shopify-hmac-sha256", "trace_id": response.headers["x-gateway-trace"]}


def test_refusal_lines_are_rate_limited_per_client_and_status_and_count_what_they_skipped(caplog):
    clock = [0.0]
    log = RejectionLog(burst=3, refill_seconds=10.0, clock=lambda: clock[0])

    with caplog.at_level(logging.INFO, logger="gateway.requests"):
        written = [log.note("ga4", 400, "missing event name", "en") for _ in range(5)]
        other = log.note("ga4", 413, "request body larger than 64 bytes", "body")  # its own budget
        clock[0] += 10.0
        later = log.note("ga4", 400, "missing event name", "en")

    assert (written, other, later) == ([True, True, True, False, False], True, True)
    assert [getattr(r, "suppressed", 0) for r in caplog.records] == [0, 0, 0, 0, 2]


def test_the_wait_for_the_durable_commit_is_timed_per_client(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    def waits() -> tuple[float, float]:
        labels = {"client": "json_beacon"}
        return (REGISTRY.get_sample_value("gateway_outbox_commit_seconds_count", labels) or 0.0,
                REGISTRY.get_sample_value("gateway_outbox_commit_seconds_sum", labels) or 0.0)

    before, before_sum = waits()
    assert client.post("/collect", json={"event_name": "committed"}).status_code == 204
    assert client.post("/collect", json={"value": 3}).status_code == 400  # refused before any commit: not timed
    client.get("/metrics")  # which hands the buffered observations over
    after, after_sum = waits()
    assert after - before == 1
    assert after_sum > before_sum
