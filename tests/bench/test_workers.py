"""``python -m bench.workers --smoke``: the workers benchmark runs, and its no-loss checks hold with N workers.

A real run, very short: ``gateway serve --workers N`` on a SQLite file (N = 1
and 2) and on a fresh PostgreSQL database (N = 2), wrk for a second, then the
outbox read back. It fails if the harness rots (a changed CLI, metrics that no
longer add up across workers) and if several workers lose a 2xx hit,
deliver an item twice or do not stop cleanly. Speed is not checked here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench import pgstats, procs, wrk

pytestmark = pytest.mark.skipif(not wrk.available(), reason="the workers benchmark drives load with wrk")

CHECKS = {"probe request accepted", "every 2xx committed durably", "client's 2xx count matches the gateway's",
          "no errors or non-2xx", "outbox drained", "no duplicate deliveries", "every worker stopped cleanly"}


def run_smoke(tmp_path: Path, storage: str, workers: str) -> dict:
    output = tmp_path / "workers.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.workers", "--smoke", "--storage", storage, "--workers", workers,
         "--output", str(output)],
        cwd=procs.ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return orjson.loads(output.read_bytes())


def assert_no_loss(result: dict, storage: str, workers: int) -> None:
    assert (result["storage"], result["workers"]) == (storage, workers)
    checks = {c["name"]: c for c in result["checks"]}
    assert set(checks) == CHECKS
    assert all(c["ok"] for c in checks.values()), checks
    committed = result["committed"]
    # The probe and a second of wrk: some hundreds of hits, every one delivered exactly once.
    assert committed["server_2xx"] > 10
    assert committed["delivered"] == committed["server_2xx"] == committed["sink_items"]
    assert committed["pending"] == committed["dead"] == 0
    assert result["closed"]["ok"] > 0 and result["closed"]["requests_per_s"] > 0
    # The supervisor and N workers (uvicorn runs a single worker in its own process).
    assert result["gateway_processes"] >= (1 if workers == 1 else workers + 1)
    assert set(result["cpu_cores"]) >= {"gateway", "wrk", "sink", "postgresql", "machine"}


def test_one_and_two_workers_on_one_sqlite_file_commit_every_2xx_and_deliver_it_once(tmp_path: Path) -> None:
    document = run_smoke(tmp_path, "sqlite", "1,2")
    assert [r["workers"] for r in document["results"]] == [1, 2]
    for result in document["results"]:
        assert_no_loss(result, "sqlite", result["workers"])
        assert result["sqlite_file_bytes"] > 0


@pytest.mark.skipif(pgstats.available() is not None, reason=str(pgstats.available()))
def test_two_workers_on_postgresql_commit_every_2xx_and_report_what_a_hit_costs_the_database(tmp_path: Path) -> None:
    document = run_smoke(tmp_path, "postgresql", "2")
    (result,) = document["results"]
    assert_no_loss(result, "postgresql", 2)
    cost = result["postgresql"]["cost"]
    assert cost["hits"] == result["committed"]["server_2xx"]
    # Every hit is one outbox row, inserted once and updated twice (claimed with a lease, then settled).
    assert cost["totals"]["outbox_n_tup_ins"] == cost["hits"]
    assert cost["totals"]["outbox_n_tup_upd"] == 2 * cost["hits"]
    assert cost["per_hit"]["wal_bytes_lsn"] > 0
    assert result["postgresql"]["sizes"]["rows"] == cost["hits"]
