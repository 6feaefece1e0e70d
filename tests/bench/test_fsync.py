"""The disk probe the benchmark records beside its latency figures."""

from __future__ import annotations

from bench import fsync


def test_probe_times_each_fsync_and_names_the_filesystem(tmp_path):
    result = fsync.probe(tmp_path, count=20)
    assert result["count"] == 20
    assert 0 <= result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["filesystem"] != "? (?)"
    assert list(tmp_path.iterdir()) == []  # its file is gone
    assert "p99" in fsync.render(result)
