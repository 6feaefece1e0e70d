"""``python -m bench.workers``: ``gateway serve --workers N`` on one SQLite file and on PostgreSQL, N = 1 and 2.

    python -m bench.workers                      # 4 runs of 15 s (about 3 minutes)
    python -m bench.workers --smoke              # 1 s each: the harness and the checks, not speed
    python -m bench.workers --storage sqlite --workers 1,2,4 --duration 20

Each run is the real ``gateway serve --workers N`` with the benchmark's
container: the GA4 client, and an ``http_request`` tag on every event
delivering in batches of 100 to ``bench.sink``. Live delivery rather than
dry-run, because with several workers every worker runs a dispatcher, and
their claims and settles compete with the request path for the same
database: that is part of what N workers cost, and the sink's count shows
whether two dispatchers ever delivered one item twice. wrk sends distinct
31-parameter ``GET /g/collect`` page views (a fresh ``cid`` each) at its
maximum (closed loop) for the duration, after a warm-up.

The checks, per run: every request the gateway answered 2xx is in the
outbox (pending, delivered or dead) and nothing else is; the client's 2xx
count agrees with the gateway's; no errors or non-2xx; the outbox drains;
the sink received exactly as many items as the outbox marks delivered (more
would be duplicate deliveries); every worker logged a clean stop.

Cores: with N = 1 the gateway is pinned to one core and wrk, the sink (and
PostgreSQL, which is not ours to pin) to the other, as in ``python -m bench``.
With N = 2 nothing is pinned: the two workers, wrk, the sink and PostgreSQL
share both cores, so the second worker only gets what the others leave.
Each run reports where the CPU went (``cpu_cores``), so the split is visible.

Exits 1 when a check failed, 2 when the harness broke.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from bench import hits, outbox, pgstats, procs, report, scenarios, wrk
from bench.gateway import GatewayUnderTest, Settings, http_sink_tag, metric_sum, standard_clients
from bench.loadgen import LoadResult
from bench.proc_counters import (
    children_seconds,
    count_syscalls,
    cpu_by_group,
    gateway_workers,
    machine_busy_seconds,
    read_syscalls,
)
from bench.scenarios import PHASE, Check

RESULTS = Path(__file__).resolve().parent / "results"
STORAGES = ("sqlite", "postgresql")
METRICS_FLUSH = 1.5  # s: each worker hands its buffered counts to the shared metric files every second


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default=",".join(STORAGES), help="comma-separated: sqlite,postgresql")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the measured load (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds to wait for the outbox to empty after the load (default 120)")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full",
                        help="SQLite's storage.synchronous (default full: a 2xx survives power loss)")
    parser.add_argument("--pool-size", type=int, default=10,
                        help="PostgreSQL's storage.pool_size, per worker (default 10, the gateway's default)")
    parser.add_argument("--smoke", action="store_true", help="1 s of load, no warm-up: checks the harness")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the machine to be idle (<10%% busy) before each run")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/<time>-workers.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.drain_timeout = 1.0, 0.0, 60.0
    args.storage = [s.strip() for s in args.storage.split(",") if s.strip()]
    args.workers = [int(n) for n in args.workers.split(",") if n.strip()]
    bad = set(args.storage) - set(STORAGES)
    if bad or not args.workers or min(args.workers) < 1:
        parser.error(f"--storage takes {','.join(STORAGES)}; --workers positive integers")
    return args


# -- one run ----------------------------------------------------------------------------

class WorkersGateway(GatewayUnderTest):
    """The benchmark's gateway, on SQLite or a PostgreSQL URL, started as ``gateway serve --workers N``."""

    def __init__(self, settings: Settings, storage_url: str | None, workers: int, storage: dict[str, Any]) -> None:
        """``storage``: settings of the container's storage section (``synchronous``, ``pool_size``)."""
        super().__init__(settings, f"workers-{workers}-{'postgresql' if storage_url else 'sqlite'}",
                         [http_sink_tag()], standard_clients(False))
        self.storage_url = storage_url
        self.workers = workers
        container = yaml.safe_load(self.config.read_text())
        if storage_url is not None:
            container["storage"] = {"url": storage_url, "pool_size": storage["pool_size"]}
        else:
            container["storage"]["synchronous"] = storage["synchronous"]
        self.config.write_text(yaml.safe_dump(container, sort_keys=False))

    def start_workers(self) -> None:
        core = self.settings.cores.server if self.workers == 1 else None
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config),
                "--port", str(self.port), "--workers", str(self.workers)]
        env = dict(self.env)
        if self.workers > 1:
            metrics_dir = self.dir / "metrics"
            metrics_dir.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        self.gateway = procs.Proc("gateway", argv, core, self.dir / "gateway.log", env=env, nice=procs.NICE_SERVER)
        self.gateway.wait_http(self.url + "/readyz", 60)
        # /readyz answered from one worker; wait until every worker has said it is up.
        deadline = time.monotonic() + 60
        while self.gateway.log_tail(1_000_000).count("Application startup complete") < self.workers:
            if time.monotonic() > deadline or not self.gateway.alive():
                raise RuntimeError(f"not every worker started:\n{self.gateway.log_tail()}")
            time.sleep(0.1)

    def committed(self) -> outbox.Committed:
        if self.storage_url is None:
            return outbox.committed(self.db)
        return outbox.Committed(*pgstats.committed(self.storage_url))

    def pending(self) -> int:
        return outbox.pending(self.db) if self.storage_url is None else pgstats.pending(self.storage_url)

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for the outbox to empty; the items still pending."""
        deadline = time.monotonic() + timeout
        left = self.pending()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.pending()
        return left

    def stop_workers(self) -> tuple[bool, str]:
        """SIGTERM to the supervisor; clean when it exits 0 (or -15, re-raised) and every worker logged its stop."""
        assert self.gateway is not None
        code = self.gateway.stop(timeout=60)
        stops = self.gateway.log_tail(10_000_000).count('"gateway stopped"')
        self.stop_sink()
        detail = f"exit {code}, {stops} of {self.workers} workers logged a stop"
        return code in (0, -15) and stops == self.workers, detail


def measure(settings: Settings, storage: str, workers: int, drain_timeout: float,
            options: dict[str, Any]) -> dict[str, Any]:
    """One storage, one worker count: warm-up, the measured closed loop, drain, stop, then the checks."""
    database = pgstats.fresh_database() if storage == "postgresql" else None
    url = database.__enter__() if database is not None else None
    try:
        return _measure(settings, storage, url, workers, drain_timeout, options)
    finally:
        if database is not None:
            database.__exit__(None, None, None)


def _measure(settings: Settings, storage: str, url: str | None, workers: int, drain_timeout: float,
             options: dict[str, Any]) -> dict[str, Any]:
    gw = WorkersGateway(settings, url, workers, options)
    hit = hits.GA4_PAGE_VIEW
    load_core = settings.cores.load if workers == 1 else None
    pinning = "nothing pinned: all processes share all cores"
    if workers == 1 and settings.cores.server is not None:
        pinning = (f"gateway on core {settings.cores.server}; wrk and the sink on core {settings.cores.load};"
                   " PostgreSQL not pinned")
    phases: list[LoadResult] = []
    checks: list[Check] = []
    pg_cost: dict[str, Any] | None = None
    syscalls: dict[str, int] | None = None
    before_pg: pgstats.Snapshot | None = None
    try:
        gw.start_sink()
        gw.start_workers()
        assert gw.gateway is not None and gw.sink is not None
        # From here to after the stop: every hit of the run, its delivery, and the dispatchers' polling.
        before_pg = pgstats.snapshot(url) if url else None
        status = scenarios.probe(gw.url, hit)
        per_request = gw.committed().total
        checks.append(Check("probe request accepted", status is not None and 200 <= status < 300 and per_request == 1,
                            f"status {status}, {per_request} outbox item(s) per request (1 expected)"))
        if settings.warmup > 0:
            phases.append(wrk.closed_loop(gw.url, hit, settings.warmup, settings.connections, 1 * PHASE, load_core))
            gw.drain(drain_timeout)
        lsn0 = pgstats.wal_lsn(url) if url else ""
        cpu0, busy0, wrk0 = cpu_by_group(gw.gateway.pid, gw.sink.pid), machine_busy_seconds(), children_seconds()
        t0 = time.monotonic()
        perf = None if url else count_syscalls(gateway_workers(gw.gateway.pid), settings.duration, gw.dir / "perf.csv")
        closed = wrk.closed_loop(gw.url, hit, settings.duration, settings.connections, 2 * PHASE, load_core)
        t1 = time.monotonic()
        cpu1, busy1, wrk1 = cpu_by_group(gw.gateway.pid, gw.sink.pid), machine_busy_seconds(), children_seconds()
        syscalls = read_syscalls(perf, gw.dir / "perf.csv")
        lsn1 = pgstats.wal_lsn(url) if url else ""
        phases.append(closed)
        left = gw.drain(drain_timeout)
        time.sleep(METRICS_FLUSH)  # every worker's counts (and PostgreSQL's statistics) are written out
        server_ok = metric_sum(gw.metrics(), "gateway_requests_total", r'status="2\d\d"')
        sink_items = gw.sink_received()
    finally:
        clean, stop_detail = gw.stop_workers() if gw.gateway is not None else (False, "never started")
        gw.stop_sink()
    committed = gw.committed()
    if url and before_pg is not None:
        time.sleep(1.0)  # the gateway's backends report their last statistics as they exit
        pg_cost = pgstats.cost(url, before_pg, pgstats.snapshot(url), committed.total)
        pg_cost["wal_bytes_per_s_during_load"] = round(pgstats.wal_between(url, lsn0, lsn1) / (t1 - t0))
    wall = t1 - t0
    cpu = {k: round((cpu1[k] - cpu0[k]) / wall, 2) for k in ("gateway", "sink", "postgresql")}
    cpu["wrk"] = round((wrk1 - wrk0) / wall, 2)
    cpu["machine"] = round((busy1 - busy0) / wall, 2)
    cpu["rest (kernel network, other processes)"] = round(max(0.0, cpu["machine"] - sum(
        cpu[k] for k in ("gateway", "sink", "postgresql", "wrk"))), 2)
    checks += [
        scenarios.committed_check(committed, int(server_ok), per_request),
        scenarios.client_check(phases, 1, int(server_ok), settings.connections),
        scenarios.no_errors(phases),
        Check("outbox drained", left == 0, f"{left} item(s) still pending after {drain_timeout:.0f} s"),
        Check("no duplicate deliveries", sink_items == committed.delivered,
              f"sink received {sink_items} item(s), outbox marks {committed.delivered} delivered"),
        Check("every worker stopped cleanly", clean, stop_detail),
    ]
    result: dict[str, Any] = {
        "storage": storage, "workers": workers, "pinning": pinning, "dir": str(gw.dir),
        "storage_settings": {"pool_size": options["pool_size"]} if url else {"synchronous": options["synchronous"]},
        "closed": closed.as_dict(), "cpu_cores": cpu, "gateway_processes": int(cpu1["gateway_processes"]),
        "hits_per_gateway_cpu_second": round(closed.ok / max(1e-9, cpu1["gateway"] - cpu0["gateway"]), 1),
        "committed": {"pending": committed.pending, "delivered": committed.delivered, "dead": committed.dead,
                      "server_2xx": int(server_ok), "sink_items": sink_items},
        "checks": [c.as_dict() for c in checks],
    }
    if url:
        result["postgresql"] = {"cost": pg_cost, "sizes": pgstats.sizes(url)}
    else:
        result["sqlite_file_bytes"] = sum(p.stat().st_size for p in gw.dir.glob("gateway.db*"))
        # Over the measured load (perf ran for its duration, from just before wrk started).
        result["syscalls"] = syscalls
        if syscalls and closed.ok:
            syncs = syscalls.get("fdatasync", 0) + syscalls.get("fsync", 0)
            result["hits_per_fsync"] = round(closed.ok / syncs, 1) if syncs else None
            result["busy_sleeps_per_s"] = round(
                (syscalls.get("clock_nanosleep", 0) + syscalls.get("nanosleep", 0)) / closed.seconds, 1)
    return result


# -- the table ----------------------------------------------------------------------------

def render(results: list[dict[str, Any]]) -> str:
    lines = ["| storage | workers | req/s | p50 ms | p99 ms | non-2xx / errors | CPU (cores): gateway, wrk, sink,"
             " PostgreSQL, machine | hits per gateway CPU-s | machine busy before | checks |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['storage']} | {r['workers']} | error: {r['error']} | | | | | | | |")
            continue
        c, cpu = r["closed"], r["cpu_cores"]
        failed = [ch["name"] for ch in r["checks"] if not ch["ok"]]
        lines.append(
            f"| {r['storage']} | {r['workers']} | {c['requests_per_s']:,.0f} | {c['latency_ms']['p50']:.1f}"
            f" | {c['latency_ms']['p99']:.1f} | {c['responses'] - c['ok']} / {c['errors']}"
            f" | {cpu['gateway']}, {cpu['wrk']}, {cpu['sink']}, {cpu['postgresql']}, {cpu['machine']}"
            f" | {r['hits_per_gateway_cpu_second']:,.0f} | {r.get('busy_pct_before', '-')}%"
            f" | {'ok' if not failed else 'FAILED: ' + ', '.join(failed)} |")
    return "\n".join(lines)


def failures(results: list[dict[str, Any]]) -> list[str]:
    return [f"{r['storage']} x{r['workers']}: {ch['name']}: {ch['detail']}"
            for r in results for ch in r.get("checks", []) if not ch["ok"]]


def wait_quiet(max_wait: float, threshold: float = 10.0) -> float:
    """The machine's busy % (all cores) just before a run, after waiting up to ``max_wait`` s for it to drop."""
    deadline = time.monotonic() + max_wait
    busy = procs.machine_busy_pct()
    while busy >= threshold and time.monotonic() < deadline:
        time.sleep(4)
        busy = procs.machine_busy_pct()
    return busy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so atexit stops the children
    if not wrk.available():
        print("bench.workers: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    if "postgresql" in args.storage and (missing := pgstats.available()) is not None:
        print(f"bench.workers: {missing}", file=sys.stderr)
        return 2
    cores = procs.Cores.detect()
    procs.pin_self(cores.load)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-workers-"))
    settings = Settings(duration=args.duration, warmup=args.warmup, memory_duration=0.0, memory_rate=None,
                        connections=args.connections, drain_timeout=args.drain_timeout, open_fraction=0.0,
                        use_wrk=True, cores=cores, workdir=workdir, smoke=args.smoke)
    started = datetime.now(timezone.utc)
    results: list[dict[str, Any]] = []
    harness_error = False
    try:
        for storage in args.storage:
            for workers in args.workers:
                busy = wait_quiet(args.wait_quiet)
                print(f"bench.workers: {storage}, --workers {workers} (machine {busy:.0f}% busy before) ...",
                      file=sys.stderr)
                try:
                    options = {"synchronous": args.synchronous, "pool_size": args.pool_size}
                    results.append({**measure(settings, storage, workers, args.drain_timeout, options),
                                    "busy_pct_before": round(busy, 1), "loadavg_after": list(os.getloadavg())})
                except Exception as exc:  # noqa: BLE001 - report it, go on with the next
                    harness_error = True
                    traceback.print_exc()
                    results.append({"storage": storage, "workers": workers, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        procs.stop_all()
    document = {"date": started.isoformat(timespec="seconds"),
                "command": "python -m bench.workers " + shlex.join(argv if argv is not None else sys.argv[1:]),
                "machine": {**report.machine(), "loadavg_at_end": list(os.getloadavg())},
                "settings": {"duration": args.duration, "warmup": args.warmup, "connections": args.connections,
                             "synchronous": args.synchronous, "pool_size": args.pool_size,
                             "generator": f"wrk -t1 -c{args.connections}", "smoke": args.smoke},
                "results": results}
    output = args.output or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-workers.json"
    report.write_json(output, document)
    print(render(results))
    print(f"\nresults: {output}")
    failed = failures(results)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    if harness_error or failed:
        print(f"bench.workers: logs and databases kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 2 if harness_error else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
