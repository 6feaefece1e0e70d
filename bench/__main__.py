"""``python -m bench``: run every scenario once, print the tables, write bench/results/<timestamp>.json.

    python -m bench                  # the full run (~11 minutes)
    python -m bench --smoke          # ~20 s: the harness works and every 2xx was committed (for CI)
    python -m bench --only get,memory --duration 10 --memory-duration 30
    python -m bench --profile        # also py-spy under GET /g/collect load
    python -m bench --instructions   # CPU instructions per request under callgrind instead (bench/instructions.py)

Exits 1 when a check failed (a 2xx missing from the outbox, an error, a
gateway that did not stop cleanly), 2 when the harness itself broke.
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
from typing import Any, Callable

from bench import fsync, hits, memory, procs, profile, report, scenarios, wrk
from bench.gateway import Settings, order_webhook_missing

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ["ceiling", "get", "post", "beacon", "webhook", "ads", "memory"]
DEFAULT_MEMORY_RATE = 500.0  # requests/s of the memory run when GET /g/collect was not measured first


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each load phase (default 20)")
    parser.add_argument("--memory-duration", type=float, default=180.0,
                        help="seconds of the steady and of the outage memory phase (default 180)")
    parser.add_argument("--memory-rate", type=float, default=None,
                        help="requests/s of the memory phases (default: 80%% of what GET /g/collect sustains"
                        " with delivery keeping up, see bench/memory.py)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop connections (default 64)")
    parser.add_argument("--open-fraction", type=float, default=0.5,
                        help="open-loop rate as a fraction of the closed-loop max (default 0.5)")
    parser.add_argument("--open-rate", type=float, default=None, metavar="REQ_PER_S",
                        help="open-loop rate in requests/s, overriding --open-fraction: arrangements compared at "
                             "one rate")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                        help="closed-loop generator: wrk when installed (auto), or the bundled Python one")
    parser.add_argument("--dispatcher", choices=["process", "inline"], default="inline",
                        help="gateway serve --dispatcher: deliveries on the HTTP worker's event loop (default: what"
                             " serve's auto picks on the one core the server is pinned to) or in a process of their own")
    parser.add_argument("--dispatcher-nice", type=int, default=None,
                        help="gateway serve --dispatcher-nice (default: serve's own default)")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full",
                        help="SQLite's storage.synchronous for the gateway scenarios (default full: a 2xx survives "
                             "power loss; normal, in WAL mode: it survives the process, not the machine, and a "
                             "commit does not wait for an fsync, only a checkpoint does)")
    parser.add_argument("--db-dir", type=Path, default=None, metavar="DIR",
                        help="put the gateway's SQLite files under DIR (/dev/shm takes the disk out of the "
                             "measurement); default: the scenario's temp dir")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--smoke", action="store_true", help="tiny durations: checks the harness, not speed")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for the machine to be idle (<10%% busy) before starting")
    parser.add_argument("--profile", action="store_true", help="also profile GET /g/collect with py-spy")
    parser.add_argument("--profile-duration", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default bench/results/<time>.json)")
    parser.add_argument("--instructions", action="store_true",
                        help="count CPU instructions per request with callgrind instead; its options:"
                             " python -m bench --instructions --help")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.memory_duration, args.warmup = 1.0, 1.0, 0.0
    return args


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if "--instructions" in given:
        from bench import instructions_report

        return instructions_report.main([a for a in given if a != "--instructions"])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so atexit stops the children
    if args.loadgen == "wrk" and not wrk.available():
        print("bench: --loadgen wrk but wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and wrk.available())
    cores = procs.Cores.detect()
    procs.pin_self(cores.load)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    settings = Settings(
        duration=args.duration, warmup=args.warmup, memory_duration=args.memory_duration,
        memory_rate=args.memory_rate, connections=args.connections, drain_timeout=0.0 if args.smoke else 180.0,
        open_fraction=args.open_fraction,
        use_wrk=use_wrk, cores=cores, workdir=workdir, smoke=args.smoke, dispatcher=args.dispatcher,
        dispatcher_nice=args.dispatcher_nice, synchronous=args.synchronous, db_dir=args.db_dir,
        open_rate=args.open_rate,
    )
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(wanted) - set(ALL)
    if unknown:
        print(f"bench: unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    busy = wait_quiet(args.wait_quiet)
    started = datetime.now(timezone.utc)
    machine = report.machine()
    generator = f"wrk -t1 -c{args.connections}" if use_wrk else "the bundled Python generator"
    print(f"bench: {cores.describe()}; closed loop by {generator}", file=sys.stderr)
    if not use_wrk:
        print("bench: wrk is not installed; the Python closed-loop generator may saturate before the ceiling does",
              file=sys.stderr)

    results: list[dict[str, Any]] = []
    harness_error = False
    get_result: dict[str, Any] = {}
    webhook_missing = order_webhook_missing()
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "ceiling": lambda: scenarios.run_ceiling(settings),
        "get": lambda: scenarios.run_endpoint(settings, hits.GA4_PAGE_VIEW, 1, webhook_missing is None),
        "post": lambda: scenarios.run_endpoint(settings, hits.GA4_BATCH, 5, webhook_missing is None),
        "beacon": lambda: scenarios.run_endpoint(settings, hits.BEACON, 1, webhook_missing is None),
        "webhook": lambda: (scenarios.skipped(hits.ORDER_WEBHOOK.name, webhook_missing) if webhook_missing
                            else scenarios.run_endpoint(settings, hits.ORDER_WEBHOOK, None, True)),
        "ads": lambda: scenarios.run_google_ads(settings),
        "memory": lambda: memory.run_memory(settings, memory_rate(settings, get_result)),
    }
    try:
        for name in [n for n in ALL if n in wanted]:
            print(f"bench: {name} ...", file=sys.stderr)
            begun = time.monotonic()
            busy0, mine0 = procs.cpu_accounting()
            try:
                result = steps[name]()
            except Exception as exc:  # noqa: BLE001 - report it, stop the processes, go on with the next
                harness_error = True
                traceback.print_exc()
                result = {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
            seconds = time.monotonic() - begun
            busy1, mine1 = procs.cpu_accounting()
            result["wall_seconds"] = round(seconds, 1)
            # What the rest of the machine did meanwhile, in % of one core: the benchmark's own processes
            # (all stopped and waited for by now) are taken out of the machine's busy time.
            result["other_work_pct_of_a_core"] = round(100 * max(0.0, (busy1 - busy0) - (mine1 - mine0)) / seconds, 1)
            results.append(result)
            if name == "get":
                get_result = result
        profile_result = None
        if args.profile:
            print("bench: profile ...", file=sys.stderr)
            try:
                profile_result = profile.run(settings, args.profile_duration, RESULTS / f"{_stamp(started)}-profile")
            except Exception as exc:  # noqa: BLE001 - the tables are still worth writing
                harness_error = True
                traceback.print_exc()
                profile_result = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        procs.stop_all()

    # The disk's own fsync latency where the outbox was, after the load (so it does not disturb it): with
    # synchronous full every commit waits for one, which puts a floor under the latency figures above.
    disk = None if args.smoke else fsync.probe(args.db_dir or workdir)
    document = {
        "date": started.isoformat(timespec="seconds"),
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": {**machine, "busy_pct_before_start": round(busy, 1), "fsync": disk,
                    "loadavg_at_end": list(os.getloadavg())},
        "settings": {"duration": settings.duration, "warmup": settings.warmup,
                     "memory_duration": settings.memory_duration, "connections": settings.connections,
                     "open_fraction": settings.open_fraction, "open_rate": settings.open_rate, "closed_loop_generator": "wrk" if use_wrk else "python",
                     "pinning": cores.describe(), "smoke": args.smoke, "dispatcher": args.dispatcher,
                     "dispatcher_nice": args.dispatcher_nice, "synchronous": args.synchronous,
                     "db_dir": str(args.db_dir) if args.db_dir else None},
        "results": results,
        "profile": profile_result,
    }
    output = args.output or RESULTS / f"{_stamp(started)}.json"
    report.write_json(output, document)
    print()
    print(report.render(results))
    if disk is not None:
        print()
        print(fsync.render(disk))
    if profile_result and "error" not in profile_result:
        print()
        print(profile.render(profile_result))
    failed = report.failures(results)
    errors = [f"{r['scenario']}: {r['error']}" for r in results if "error" in r]
    print(f"\nresults: {output}")
    for line in errors + failed:
        print(f"FAILED {line}", file=sys.stderr)
    if harness_error or failed:
        print(f"bench: logs and databases kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 2 if harness_error else (1 if failed else 0)


def wait_quiet(max_wait: float, threshold: float = 10.0) -> float:
    """The machine's busy % just before the run; waits (up to ``max_wait`` s) for it to drop below ``threshold``."""
    deadline = time.monotonic() + max_wait
    busy = procs.machine_busy_pct()
    while busy >= threshold and time.monotonic() < deadline:
        print(f"bench: the machine is {busy:.0f}% busy with other work; waiting", file=sys.stderr)
        time.sleep(5)
        busy = procs.machine_busy_pct()
    if busy >= threshold:
        print(f"bench: WARNING: the machine is {busy:.0f}% busy with other work: figures will be low and noisy",
              file=sys.stderr)
    return busy


def memory_rate(settings: Settings, get_result: dict[str, Any]) -> float:
    if settings.memory_rate is not None:
        return settings.memory_rate
    derived = memory.sustainable_rate(get_result)
    if derived is not None:
        return derived
    return 50.0 if settings.smoke else DEFAULT_MEMORY_RATE


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


if __name__ == "__main__":
    raise SystemExit(main())
