"""``python -m bench.thread_states``: what each thread of ``gateway serve --workers N`` waits on, under load.

    python -m bench.thread_states --workers 2 --synchronous full

A diagnostic for ``bench.workers``: it starts the same gateway on a SQLite
file, drives it with wrk for ``--duration`` seconds, and from the second
second on samples every thread of every worker every 5 ms from
``/proc/<pid>/task/<tid>/{stat,wchan}``: its state (R running or runnable,
S sleeping, D in I/O) and the kernel function it sleeps in. A main thread
in ``do_epoll_wait`` has nothing to do: every request it holds is waiting
for its commit; a writer thread in ``hrtimer_nanosleep`` is SQLite's busy
handler waiting for another process's write lock. Prints the share of
samples per (worker, thread, state, wait) above 3%. Not a speed figure:
the sampling itself takes some of the load core.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import hits, procs, wrk
from bench.gateway import Settings
from bench.proc_counters import gateway_workers
from bench.workers import WorkersGateway

Key = tuple[int, str, str, str]


def sample(pids: list[int], seconds: float, out: collections.Counter[Key]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                        state = stat.read().rsplit(")", 1)[1].split()[0]
                    with open(f"/proc/{pid}/task/{tid}/wchan") as wchan:
                        waits = wchan.read() or "-"
                    with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                        name = "main" if tid == str(pid) else comm.read().strip()
                except OSError:
                    continue
                out[(pid, name, state, waits)] += 1
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thread_states", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args(argv)
    cores = procs.Cores.detect()
    procs.pin_self(cores.load)
    settings = Settings(duration=args.duration, warmup=0.0, memory_duration=0.0, memory_rate=None, connections=64,
                        drain_timeout=30.0, open_fraction=0.0, use_wrk=True, cores=cores,
                        workdir=Path(tempfile.mkdtemp(prefix="gateway-thread-states-")), smoke=False)
    gw = WorkersGateway(settings, None, args.workers, {"synchronous": args.synchronous, "pool_size": 10})
    out: collections.Counter[Key] = collections.Counter()
    try:
        gw.start_sink()
        gw.start_workers()
        assert gw.gateway is not None
        # The workers: the processes with the event loop's helper threads (not uvicorn's resource tracker).
        pids = [p for p in gateway_workers(gw.gateway.pid) if len(os.listdir(f"/proc/{p}/task")) > 2]
        sampler = threading.Thread(target=lambda: (time.sleep(1.0), sample(pids, args.duration - 2.0, out)))
        sampler.start()
        result = wrk.closed_loop(gw.url, hits.GA4_PAGE_VIEW, args.duration, 64, 10**10,
                                 cores.load if args.workers == 1 else None)
        sampler.join()
    finally:
        if gw.gateway is not None:
            gw.stop_workers()
        procs.stop_all()
        shutil.rmtree(settings.workdir, ignore_errors=True)
    print(f"--workers {args.workers}, synchronous {args.synchronous}: {result.rps:,.0f} req/s"
          f" ({result.non_2xx} non-2xx, {result.errors} errors)")
    per_thread: collections.Counter[tuple[int, str]] = collections.Counter()
    for (pid, name, _, _), count in out.items():
        per_thread[(pid, name)] += count
    for (pid, name, state, waits), count in sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1])):
        share = count / per_thread[(pid, name)]
        if share > 0.03:
            print(f"pid {pid} {name:14} {state} {waits:26} {100 * share:3.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
