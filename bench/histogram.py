"""The open-loop latency distribution of each endpoint scenario: percentiles and buckets, one column per run.

    python -m bench.histogram bench/results/BEFORE.json bench/results/AFTER.json

Each file is what ``python -m bench`` wrote; its runs are labelled by the
``--dispatcher`` they ran with (or the file name). The buckets are
``bench.loadgen.HISTOGRAM_MS``: the share of requests whose latency (from
their due time, so a stall counts on every request it delays) fell in each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")


def _bucket_name(lower: float | None, upper: float | None) -> str:
    if upper is None:
        return f"> {lower:g} ms"
    return f"<= {upper:g} ms" if lower is None else f"{lower:g}-{upper:g} ms"


def render_runs(runs: list[tuple[str, list[dict[str, Any]]]], phase: str = "open") -> str:
    """A table per scenario present in every run: percentiles, then each bucket's share (and cumulative share)."""
    names = [r["scenario"] for r in runs[0][1] if phase in r and r[phase].get("histogram_ms")]
    out: list[str] = []
    for name in names:
        phases = []
        for _, results in runs:
            found = next((r for r in results if r["scenario"] == name and phase in r), None)
            phases.append(found[phase] if found else None)
        if any(p is None for p in phases):
            continue
        header = ["", *(f"{label}" for label, _ in runs)]
        rows = [["requests/s (target)", *(f"{p['requests_per_s']:,.0f} ({p.get('target_rate') or 0:,.0f})"
                                          for p in phases)],
                ["requests", *(f"{p['ok']:,}" for p in phases)]]
        rows += [[f"{q} ms", *(f"{p['latency_ms'][q]:.2f}" for p in phases)] for q in PERCENTILES]
        totals = [sum(count for _, count in p["histogram_ms"]) or 1 for p in phases]
        cumulative = [0] * len(phases)
        lower: float | None = None
        for index, (upper, _) in enumerate(phases[0]["histogram_ms"]):
            cells = []
            for column, p in enumerate(phases):
                count = p["histogram_ms"][index][1]
                cumulative[column] += count
                cells.append(f"{count:,} ({100 * count / totals[column]:.2f}%, cum. {100 * cumulative[column] / totals[column]:.2f}%)")
            if any(p["histogram_ms"][index][1] for p in phases):
                rows.append([_bucket_name(lower, upper), *cells])
            lower = upper
        out += [f"#### {name} ({phase} loop)", "", "| " + " | ".join(header) + " |",
                "|" + "|".join(" --- " for _ in header) + "|", *("| " + " | ".join(row) + " |" for row in rows), ""]
    return "\n".join(out)


def render(results: list[dict[str, Any]]) -> str:
    """One run's distributions (for ``bench.report``)."""
    return render_runs([("this run", results)])


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    runs = []
    for path in paths:
        document = orjson.loads(path.read_bytes())
        label = document.get("settings", {}).get("dispatcher") or path.stem
        runs.append((f"{label} ({path.stem})", document["results"]))
    print(render_runs(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
