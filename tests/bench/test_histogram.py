"""The benchmark's latency histogram: buckets from the load generator, and the before/after table."""

from __future__ import annotations

from bench.histogram import render_runs
from bench.loadgen import histogram


def test_each_latency_falls_in_the_first_bucket_whose_bound_it_does_not_exceed():
    counts = dict(histogram([0.2, 0.5, 0.51, 4.9, 5.0, 5.01, 2000.0], bounds=(0.5, 1.0, 5.0)))
    assert counts == {0.5: 2, 1.0: 1, 5.0: 2, None: 2}


def test_the_table_puts_runs_side_by_side_with_shares_and_cumulative_shares():
    def run(histo: list[list[float | None | int]], p99: float) -> list[dict]:
        latency = {"p50": 1.0, "p90": 2.0, "p99": p99, "p99.9": 9.0, "max": 12.0}
        return [{"scenario": "GET /g/collect", "open": {"requests_per_s": 1000.0, "target_rate": 1000.0, "ok": 4,
                                                        "latency_ms": latency, "histogram_ms": histo}}]

    table = render_runs([("inline", run([[1.0, 3], [5.0, 0], [None, 1]], 20.0)),
                         ("process", run([[1.0, 4], [5.0, 0], [None, 0]], 0.9))])
    assert "| p99 ms | 20.00 | 0.90 |" in table
    assert "| <= 1 ms | 3 (75.00%, cum. 75.00%) | 4 (100.00%, cum. 100.00%) |" in table
    assert "| > 5 ms | 1 (25.00%, cum. 100.00%) | 0 (0.00%, cum. 100.00%) |" in table
    assert "1-5 ms" not in table  # a bucket empty in every run is left out
