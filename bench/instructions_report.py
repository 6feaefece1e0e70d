"""The instruction count's table, its place in BENCHMARKS.md, and the command ``python -m bench --instructions``.

The measuring is in ``bench.instructions``; this module renders its figures
(the mean of repeated measurements, the growth per item and per POST event,
the split by thread, the repeatability), writes them between the markers in
BENCHMARKS.md after a complete run without a failed check, and stores every
count in ``bench/results/<time>-instructions.json``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from bench import callgrind, procs
from bench.instructions import (BASELINE, BASELINE_RUNS, CONNECTIONS, N1, N2, SCENARIOS, SERVERS, Figure, environment,
                                measure, workspace, write_baseline)

BENCHMARKS = procs.ROOT / "BENCHMARKS.md"
RESULTS = Path(__file__).with_name("results")
TABLE_BEGIN = "<!-- instructions table: written by python -m bench --instructions -->"
TABLE_END = "<!-- end of the instructions table -->"


# -- the table ---------------------------------------------------------------------

def _k(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:,.0f}k"


def _ratio(ceiling: float | None, value: float | None) -> str:
    return "-" if ceiling is None or not value else f"{ceiling / value:.2f}"


def _mean(figures: list[Figure]) -> float | None:
    return statistics.fmean(f.per_request for f in figures) if figures else None


def render(figures: list[Figure], n1: int, n2: int) -> str:
    """The Markdown tables: per scenario and server (the mean of repeated runs), growth, threads, repeatability."""
    cells: dict[tuple[str, str], list[Figure]] = {}
    for figure in figures:
        cells.setdefault((figure.scenario, figure.server), []).append(figure)

    def value(scenario: str, server: str) -> float | None:
        return _mean(cells.get((scenario, server), []))

    scenarios = [s for s in SCENARIOS if any(key[0] == s for key in cells)]
    rows = []
    for scenario in scenarios:
        ceiling, gateway, deliveries = (value(scenario, s) for s in SERVERS)
        batch = "-"
        runs = cells.get((scenario, "deliveries"), [])
        if runs and runs[-1].second.sink and runs[-1].second.sink["requests"]:
            sink = runs[-1].second.sink
            batch = f"{sink['items'] / sink['requests']:.1f}"
        rows.append([SCENARIOS[scenario].name, _k(ceiling), _k(gateway), _ratio(ceiling, gateway), _k(deliveries),
                     _ratio(ceiling, deliveries), batch])
    for label, low, high, extra in (("per extra item (10 -> 50 items)", "items10", "items50", 40),
                                    ("per extra POST event (x5 -> x20)", "post5", "post20", 15)):
        growth = []
        for server in SERVERS:
            a, b = value(low, server), value(high, server)
            growth.append(None if a is None or b is None else (b - a) / extra)
        if any(g is not None for g in growth):
            rows.append([f"*{label}*", _k(growth[0]), _k(growth[1]), "", _k(growth[2]), "", ""])
    out = [_table(["scenario", "ceiling", "gateway, sample container, dispatcher off", "ceiling / gateway",
                   "gateway + deliveries to the sink", "ceiling / (gateway + deliveries)", "items per sink request"],
                  rows)]

    thread_rows = []
    for scenario in scenarios:
        for server in ("gateway", "deliveries"):
            runs = cells.get((scenario, server), [])
            if not runs:
                continue
            shares = [r.per_request_by_thread() for r in runs]
            labels = (callgrind.MAIN_THREAD, callgrind.WRITER_THREAD, callgrind.OTHER_THREADS)
            means = [statistics.fmean(s.get(label, 0.0) for s in shares) for label in labels]
            thread_rows.append([SCENARIOS[scenario].name, server, *(_k(m) for m in means)])
    if thread_rows:
        out += ["", "By thread (instructions per request):", "",
                _table(["scenario", "server", callgrind.MAIN_THREAD, callgrind.WRITER_THREAD, callgrind.OTHER_THREADS],
                       thread_rows)]

    repeated = [(key, runs) for key, runs in cells.items() if len(runs) > 1]
    if repeated:
        spread_rows = []
        for (scenario, server), runs in repeated:
            values = [r.per_request for r in runs]
            spread = 100 * (max(values) - min(values)) / statistics.fmean(values)
            spread_rows.append([SCENARIOS[scenario].name, server, ", ".join(f"{v:,.0f}" for v in values),
                                f"{spread:.2f}%"])
        out += ["", "Repeatability (each figure measured again from scratch):", "",
                _table(["scenario", "server", "instructions per request, each measurement", "spread (max-min)/mean"],
                       spread_rows)]
    out += ["", f"Instructions per request = (Ir({n2:,}) - Ir({n1:,})) / {n2 - n1:,}, all threads, "
                f"{CONNECTIONS} keep-alive connections; k = 1,000 instructions."]
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_benchmarks(table: str, command: str, machine: str) -> bool:
    """Put the table between the markers in BENCHMARKS.md; False when the markers are missing."""
    text = BENCHMARKS.read_text()
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        return False
    block = f"{TABLE_BEGIN}\n\nCommand: `{command}` ({machine}).\n\n{table}\n\n"
    BENCHMARKS.write_text(text[:start] + block + text[end:])
    return True


# -- the command ---------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench --instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", default=f"{N1},{N2}", help=f"N1,N2 (default {N1},{N2})")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios, of {','.join(SCENARIOS)}")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"servers, of {','.join(SERVERS)}")
    parser.add_argument("--repeat", type=int, default=1, help="measure everything this many times (repeatability)")
    parser.add_argument("--no-write", action="store_true", help="do not put the table into BENCHMARKS.md")
    parser.add_argument("--baseline", action="store_true",
                        help=f"measure the CI test's small version {BASELINE_RUNS} times and write {BASELINE.name}")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results/<time>-instructions.json)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    why = callgrind.missing()
    if why is not None:
        print(f"bench: cannot count instructions: {why}", file=sys.stderr)
        return 2
    n1, n2 = (int(n) for n in args.requests.split(","))
    scenarios = [s.strip() for s in args.only.split(",") if s.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = (set(scenarios) - set(SCENARIOS)) | (set(servers) - set(SERVERS))
    if unknown or not 0 < n1 < n2:
        print(f"bench: unknown {', '.join(sorted(unknown))} or bad --requests", file=sys.stderr)
        return 2
    cores = procs.Cores.detect()
    procs.pin_self(cores.load)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-instructions-"))
    settings = workspace(workdir, cores)
    command = "python -m bench --instructions" + (" " + shlex.join(argv) if argv else "")
    started = datetime.now(timezone.utc)
    try:
        if args.baseline:
            baseline = write_baseline(settings)
            print(f"bench: {BASELINE}: {baseline['instructions_per_request']:,} per request "
                  f"(measured {baseline['measurements']})")
            return 0
        figures: list[Figure] = []
        for repeat in range(args.repeat):
            for scenario in scenarios:
                for server in servers:
                    print(f"bench: instructions: {server} / {SCENARIOS[scenario].name} ({repeat + 1}/{args.repeat})",
                          file=sys.stderr)
                    begun = time.monotonic()
                    figure = measure(server, scenario, n1, n2, settings)
                    figures.append(figure)
                    print(f"bench:   {figure.per_request:,.0f} per request ({time.monotonic() - begun:.0f} s)"
                          + "".join(f"; FAILED: {p}" for p in figure.checks), file=sys.stderr)
    finally:
        procs.stop_all()
    table = render(figures, n1, n2)
    output = args.output or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-instructions.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps({"date": started.isoformat(timespec="seconds"), "command": command,
                                     "n1": n1, "n2": n2, "connections": CONNECTIONS, "environment": environment(),
                                     "figures": [f.as_dict() for f in figures]}, option=orjson.OPT_INDENT_2))
    print(table)
    print(f"\nresults: {output}")
    failed = [f"{f.server} / {f.scenario}: {p}" for f in figures for p in f.checks]
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    complete = set(scenarios) == set(SCENARIOS) and set(servers) == set(SERVERS)
    if failed or args.no_write or not complete:
        print("bench: BENCHMARKS.md left as it is" + ("" if complete else " (not every scenario and server ran)"),
              file=sys.stderr)
    else:
        env = environment()
        machine = f"Python {env['python']}, {env['valgrind']}, {started.date().isoformat()}"
        if write_benchmarks(table, command, machine):
            print(f"bench: the table is in {BENCHMARKS.name}", file=sys.stderr)
        else:
            print(f"bench: {BENCHMARKS.name} has no instructions table markers; not written", file=sys.stderr)
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"bench: logs and callgrind files kept in {workdir}", file=sys.stderr)
    return 1 if failed else 0
