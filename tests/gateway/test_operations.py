"""Health, readiness, metrics, config validation and registry completeness."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys

import clients
import tags
from tests.running import ROOT

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
