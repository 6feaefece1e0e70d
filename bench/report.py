"""The printed tables (Markdown, so BENCHMARKS.md can take them as they are) and the JSON file."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

import orjson

from bench import histogram


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg()}


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _checks_ok(result: dict[str, Any]) -> str:
    checks = result.get("checks", [])
    failed = [c for c in checks if not c["ok"]]
    return "ok" if not failed else "FAILED: " + "; ".join(c["name"] for c in failed)


def render(results: list[dict[str, Any]]) -> str:
    """Throughput and latency, delivery, memory, Google Ads and the checks, as Markdown tables."""
    ceiling = next((r for r in results if r["scenario"].startswith("ceiling") and "closed" in r), None)
    load = [r for r in results if "closed" in r and "open" in r]
    rows = []
    for r in load:
        cl, op = r["closed"], r["open"]
        share, slower = "-", "-"
        if ceiling is not None:
            share = f"{100 * cl['requests_per_s'] / ceiling['closed']['requests_per_s']:.0f}%"
            slower = f"{op['latency_ms']['p99'] / ceiling['open']['latency_ms']['p99']:.1f}x"
        rows.append([
            r["scenario"], _rate(cl["requests_per_s"]), share,
            _ms(cl["latency_ms"]["p50"]), _ms(cl["latency_ms"]["p99"]), _ms(cl["latency_ms"]["p99.9"]),
            _rate(op["target_rate"]), _ms(op["latency_ms"]["p50"]), _ms(op["latency_ms"]["p99"]), slower,
            _ms(op["send_lag_ms"].get("p99")), _checks_ok(r),
        ])
    out = ["### Requests: closed loop (max) and open loop (50% of each one's max)", "", _table(
        ["scenario", "req/s", "of ceiling", "p50 ms", "p99 ms", "p99.9 ms", "open req/s", "open p50 ms",
         "open p99 ms", "open p99 vs ceiling", "generator lag p99 ms", "checks"], rows), "",
        "generator lag: how late the open-loop generator sent (included in the open-loop latency); when it is"
        " large the load core was busy and the open-loop figures of that row say little about the server."]

    distributions = histogram.render(load)
    if distributions:
        out += ["", "### Open-loop latency distribution (bench/histogram.py)", "", distributions]

    deliveries = [r for r in load if "delivery" in r]
    if deliveries:
        rows = []
        for r in deliveries:
            d = r["delivery"]
            lag = d["commit_to_delivered_ms_open_loop"]
            rows.append([
                r["scenario"], _rate(d["items_committed_per_s_during_closed_loop"]),
                _rate(d["items_delivered_per_s_during_closed_loop"]), f"{d['after_closed_loop']['backlog']:,}",
                _rate(d["after_closed_loop"]["items_per_s"]), f"{d['after_open_loop']['backlog']:,}",
                _ms(lag["p50"]), _ms(lag["p99"]),
            ])
        out += ["", "### Delivery to the fake destination (http_request tag -> sink)", "", _table(
            ["scenario", "items committed/s (closed loop)", "items delivered/s (same time)", "backlog after",
             "drain items/s (no load)", "backlog after open loop", "2xx->delivered p50 ms (open loop)", "p99 ms"],
            rows)]

    memory = next((r for r in results if r["scenario"].startswith("memory") and "steady" in r), None)
    if memory is not None:
        rows = []
        for phase in ("steady", "outage"):
            m, lo = memory[phase]["rss"], memory[phase]["load"]
            rows.append([phase, _rate(memory["rate"]), f"{lo['seconds']:.0f}", f"{m['start_mb']:.1f}",
                         f"{m['end_mb']:.1f}", f"{m['min_mb']:.1f}-{m['max_mb']:.1f}", f"{m['drift_pct']:+.1f}%",
                         f"{m['anon_start_mb']:.1f} -> {m['anon_end_mb']:.1f}", f"{m['cpu_pct']:.0f}%",
                         f"{m['pending_start']:,.0f} -> {m['pending_end']:,.0f}", _ms(lo["latency_ms"]["p99"])])
        out += ["", "### Memory: gateway RSS (VmRSS, sampled every second), GET /g/collect open loop", "", _table(
            ["phase", "req/s", "s", "RSS start MB", "RSS end MB", "min-max MB", "drift", "heap (RssAnon) MB",
             "CPU", "outbox pending", "p99 ms"], rows)]
        lag = memory["steady"].get("commit_to_delivered_ms")
        if lag:
            out += ["", f"steady phase, 2xx->delivered: p50 {_ms(lag['p50'])} ms, p99 {_ms(lag['p99'])} ms"
                        f" ({lag['items']:,.0f} items)"]
        out += ["", f"memory checks: {_checks_ok(memory)}"]

    ads = next((r for r in results if r["scenario"].startswith("Google Ads")), None)
    if ads is not None:
        out += ["", "### Google Ads (fake API)", ""]
        if "skipped" in ads:
            out.append(f"skipped: {ads['skipped']}")
        else:
            out.append(_table(
                ["req/s (closed loop)", "conversions/s delivered (same time)", "conversions/s draining (no load)",
                 "requests per 10,000 conversions", "checks"],
                [[_rate(ads["closed"]["requests_per_s"]), _rate(ads["conversions_per_s_during_closed_loop"]),
                  _rate(ads["conversions_per_s_draining"]),
                  f"{ads['requests_per_10k_conversions']:.1f}" if ads["requests_per_10k_conversions"] else "-",
                  _checks_ok(ads)]]))

    noise = [f"{r['scenario']} {r['other_work_pct_of_a_core']:.0f}%" for r in results if "other_work_pct_of_a_core" in r
             and "skipped" not in r]
    if noise:
        out += ["", "Other work on the machine during each scenario, in % of one core (not the benchmark's own"
                    " processes): " + ", ".join(noise)]

    skipped = [r for r in results if "skipped" in r and not r["scenario"].startswith("Google Ads")]
    for r in skipped:
        out += ["", f"{r['scenario']}: skipped: {r['skipped']}"]
    return "\n".join(out)


def failures(results: list[dict[str, Any]]) -> list[str]:
    return [f"{r['scenario']}: {c['name']}: {c['detail']}"
            for r in results for c in r.get("checks", []) if not c["ok"]]


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


def main() -> None:
    """``python -m bench.report FILE``: print the tables of a results file again."""
    import sys

    from bench import profile

    document = orjson.loads(Path(sys.argv[1]).read_bytes())
    print(f"{document['date']}, {document['command']}, {document['machine']}\n")
    print(render(document["results"]))
    if document.get("profile") and "threads" in document["profile"]:
        print()
        print(profile.render(document["profile"]))


if __name__ == "__main__":
    main()
