"""The operator kit: Prometheus alert rules that promtool accepts, a Grafana dashboard over real metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

import gateway.metrics  # noqa: F401 - registers the gateway's metrics
import tags  # noqa: F401 - registers the senders' own metrics
from tests.running import ROOT

OPS = ROOT / "ops"
ALERTS = OPS / "prometheus" / "alerts.yaml"
ALERT_TESTS = OPS / "prometheus" / "alerts_test.yaml"
DASHBOARD = OPS / "grafana" / "gateway-dashboard.json"
PROVISIONING = OPS / "grafana" / "provisioning" / "dashboards.yaml"
METRIC = re.compile(r"\bgateway_[a-z_]+\b")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH: apt-get install prometheus (Debian ships promtool in it)"
)


def exported_names() -> set[str]:
    """Every series name the gateway's registry can expose."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return {n for n in names if n.startswith("gateway_")}


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


@needs_promtool
def test_alert_rules_pass_promtool_check():
    run = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests():
    run = subprocess.run(["promtool", "test", "rules", "alerts_test.yaml"], cwd=ALERTS.parent,
                         capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr


def test_alerts_cover_failures_outbox_dead_letters_credentials_and_consent():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    names = {rule["alert"] for group in groups for rule in group["rules"]}

    assert {"GatewayDeliveryFailureRateHigh", "GatewayOutboxDepthHigh", "GatewayOutboxOldestItemOld",
            "GatewayDeadLettersGrowing", "GatewayTokenRefreshFailing", "GatewayDestinationPaused",
            "GatewayConsentDeniedShareChanged", "GatewayRefundNotApplied", "GatewayDown", "GatewayDispatcherStopped"} <= names
    assert all(rule["labels"]["severity"] in ("warning", "critical") for group in groups for rule in group["rules"])


def test_alerts_and_dashboard_use_only_metrics_the_gateway_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in alert_exprs() + dashboard_exprs(dashboard) for name in METRIC.findall(expr)}

    assert used - exported_names() == set()
    assert len(used) >= 15


def test_dashboard_panels_have_unique_ids_and_ask_for_a_prometheus_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    queried = [p for p in dashboard["panels"] if p["type"] != "row"]

    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "tagging-gateway"
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in queried)
    assert all(t["expr"] for p in queried for t in p["targets"])
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "destination"]


def test_grafana_provisioning_loads_the_dashboard_from_files():
    config = yaml.safe_load(PROVISIONING.read_text())

    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [e.replace("$__rate_interval", "5m").replace("$destination", ".*")
             for e in dashboard_exprs(dashboard) if not e.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:panel_{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))

    run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_promtool_case_in_which_it_fires():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case.get("alert_rule_test", []) if check["exp_alerts"]}

    assert sorted(alerts - fired) == []


def panel(dashboard: dict, title: str, kind: str) -> dict:
    [found] = [p for p in dashboard["panels"] if p.get("title") == title and p["type"] == kind]
    return found


@needs_promtool
def test_the_outbox_depth_stat_counts_an_outbox_two_instances_share_once(tmp_path):
    """Both instances report the shared database's depth: the stat takes the max per destination, then adds them."""
    dashboard = json.loads(DASHBOARD.read_text())
    [target] = panel(dashboard, "Outbox depth", "stat")["targets"]
    expr = target["expr"].replace("$destination", ".*")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(
        {"groups": [{"name": "stat", "rules": [{"record": "dashboard:outbox_depth", "expr": expr}]}]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'gateway_outbox_depth{destination="meta", instance="gw-1"}', "values": "100x5"},
                {"series": 'gateway_outbox_depth{destination="meta", instance="gw-2"}', "values": "100x5"},
                {"series": 'gateway_outbox_depth{destination="google_ads", instance="gw-1"}', "values": "50x5"},
                {"series": 'gateway_outbox_depth{destination="google_ads", instance="gw-2"}', "values": "50x5"},
            ],
            "promql_expr_test": [{"expr": "dashboard:outbox_depth", "eval_time": "2m",
                                  "exp_samples": [{"labels": "dashboard:outbox_depth", "value": 150}]}],
        }],
    }))

    run = subprocess.run(["promtool", "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)

    assert run.returncode == 0, run.stdout + run.stderr


def test_the_dashboard_shows_each_clients_answer_time_and_its_wait_for_the_commit():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for t in panel(dashboard, "Answer time by client (p50, p95)", "timeseries")["targets"]]

    assert all("by (client, le)" in e for e in exprs) and len(exprs) == 3
    assert ["gateway_request_duration_seconds_bucket" in e for e in exprs] == [True, True, False]
    assert "gateway_outbox_commit_seconds_bucket" in exprs[2]


def test_the_dead_letters_stat_reads_zero_before_the_first_dead_letter():
    dashboard = json.loads(DASHBOARD.read_text())
    [target] = panel(dashboard, "Dead letters (24h)", "stat")["targets"]

    assert target["expr"].endswith(" or vector(0)")
