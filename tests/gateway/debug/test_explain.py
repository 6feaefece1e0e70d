"""Explain: a request through the current container, with outgoing bodies, and nothing stored or sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.debug.explain import SpecError, explain, request_from_spec
from tests.conftest import FIXTURES, container_from
from tests.gateway.debug.support import debug_container
from tests.running import ROOT

GA4_PURCHASE = FIXTURES / "ga4" / "purchase_with_user_data.json"


def fires(tag: str) -> float:
    metrics.flush()  # the pipeline buffers its counts
    return REGISTRY.get_sample_value("gateway_tag_fires_total", {"tag": tag}) or 0.0


async def test_ga4_purchase_is_explained_down_to_the_google_ads_body_without_storage(tmp_path):
    container = container_from(debug_container(tmp_path / "never.db"), tmp_path / "never.db")
    spec = json.loads(GA4_PURCHASE.read_text())
    fired_before = fires("gads_purchase")

    trace = (await explain(container, spec)).to_json()

    assert (trace["client"], trace["status"]) == ("ga4", 204)
    run = trace["runs"][0]
    assert [c["source"] for c in run["consent"]] == ["gcd", "gcd", "gcd", "gcd"]
    assert run["fired"] == ["forward", "gads_purchase"]
    gads = next(d for d in trace["delivery_items"] if d["tag"] == "gads_purchase")
    [request] = gads["attempts"][0]["requests"]
    [event] = request["body"]["events"]  # the Data Manager API's IngestEventsRequest, the default route
    assert event["adIdentifiers"] == {"gbraid": "0AAAAAoGxexample-gbraid"}
    assert event["transactionId"] == "ORD-10042"
    assert event["userData"] == {"userIdentifiers": [{"emailAddress": "036e9a…"}, {"phoneNumber": "b4267a…"}]}
    assert request["headers"]["Authorization"] == "***"
    assert trace["ledger"] == [{"order_id": "ORD-10042", "decision": "explained_without_ledger", "change_id": None}]
    assert not (tmp_path / "never.db").exists()
    assert fires("gads_purchase") == fired_before  # explaining is not firing


async def test_request_for_no_client_or_refused_by_its_client_is_explained_as_such(tmp_path):
    container = container_from(debug_container(tmp_path / "g.db"), tmp_path / "g.db")

    nowhere = await explain(container, {"method": "GET", "path": "/nowhere"})
    wrong_method = await explain(container, {"method": "DELETE", "path": "/collect"})
    refused = await explain(container, {"method": "POST", "path": "/collect", "headers": {"Content-Type": "application/json"},
                                        "body": {"value": 3}})

    assert (nowhere.status, nowhere.error["error"]) == (404, "no client serves this path")
    assert wrong_method.status == 405
    assert refused.status == 400 and refused.error["error"] == "invalid event"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param([], "the request must be a JSON object with method, path, query, headers and body", id="not-an-object"),
        pytest.param({"method": "GET /x"}, "method: expected an HTTP method such as GET or POST", id="bad-method"),
        pytest.param({"query": 3}, "query: expected a query string or an object of parameters", id="bad-query"),
        pytest.param({"headers": {"a": 1}}, "headers: expected an object of header names to string values", id="bad-header"),
        pytest.param({"body": 3}, "body: expected a string, a JSON object or list, or null", id="bad-body"),
    ],
)
def test_malformed_request_description_names_the_key(spec, problem):
    with pytest.raises(SpecError) as caught:
        request_from_spec(spec)
    assert str(caught.value) == problem


def test_request_description_takes_a_url_a_query_object_and_a_json_body():
    assert request_from_spec({"method": "post", "url": "/g/collect?v=2&en=x", "body": {"a": 1},
                              "headers": {"Content-Length": "99", "X-Test": "1"}}) == (
        "POST", "/g/collect", "v=2&en=x", {"x-test": "1"}, b'{"a":1}', "127.0.0.1")
    assert request_from_spec({"query": {"en": "page view"}})[2] == "en=page+view"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "container.yaml"
    config.write_text(debug_container(tmp_path / "cli.db"))
    return config


def test_explain_command_prints_the_trace_as_json_and_stores_nothing(tmp_path):
    config = write_config(tmp_path)

    run = subprocess.run([sys.executable, "-m", "gateway.cli", "explain", str(GA4_PURCHASE), "--config", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr
    trace = json.loads(run.stdout)
    assert trace["note"] == "explain: nothing was stored or sent"
    assert [d["tag"] for d in trace["delivery_items"]] == ["forward", "gads_purchase"]
    assert not (tmp_path / "cli.db").exists()


def test_explain_command_refuses_a_file_that_is_not_a_request(tmp_path):
    config = write_config(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": 3}')

    run = subprocess.run([sys.executable, "-m", "gateway.cli", "explain", str(bad), "--config", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert run.returncode == 2
    assert run.stderr.strip() == f"gateway: {bad}: method: expected an HTTP method such as GET or POST"


def test_resend_command_records_the_dry_run_requests_for_deliveries_list(tmp_path):
    config = write_config(tmp_path)

    resend = subprocess.run([sys.executable, "-m", "gateway.cli", "resend", str(GA4_PURCHASE), "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    listed = subprocess.run([sys.executable, "-m", "gateway.cli", "deliveries", "list", "--config", str(config), "--last", "5"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert resend.returncode == 0, resend.stderr
    assert json.loads(resend.stdout)["note"] == f"resend of {GA4_PURCHASE} to dry-run destinations"
    assert sorted(r["destination"] for r in json.loads(listed.stdout)) == ["google_ads", "http_request"]
