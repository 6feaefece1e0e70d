"""Memory: the gateway's RSS over a steady run, then while its destination is down.

Both phases send GET /g/collect in open loop at one fixed rate, and a sampler
thread reads VmRSS and CPU time from /proc every second, with the outbox's
pending count. During the outage the sink is stopped (by its PID): deliveries
fail with connection refused and wait in the outbox, which must grow on disk
and not in the gateway's memory.

The default rate is one the gateway can sustain *with* delivery keeping up:
one core does both the requests (at most ``max`` per second) and the
deliveries (at most ``drain`` items per second with nothing else to do), so
``1 / (1/max + k/drain)`` requests/s is where the outbox stops growing; we
run at 80% of that, and never above the open-loop rate. A "steady" run whose
outbox grows without bound would be an outage in slow motion.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench import hits, outbox, procs
from bench.gateway import GatewayUnderTest, Settings, http_sink_tag, standard_clients
from bench.loadgen import LoadResult
from bench.scenarios import PHASE, Check, committed_check, no_errors, open_loop, stopped_check

SUSTAINABLE_SHARE = 0.8


def sustainable_rate(get_result: dict[str, Any]) -> float | None:
    """80% of the rate at which requests and their deliveries together fill the core, from the GET scenario."""
    try:
        max_rps = get_result["closed"]["requests_per_s"]
        drain = get_result["delivery"]["after_closed_loop"]["items_per_s"]
        per_request = get_result["items_per_request"]
        open_rate = get_result["open"]["target_rate"]
    except (KeyError, TypeError):
        return None
    if not max_rps or not drain:
        return open_rate
    return min(open_rate, SUSTAINABLE_SHARE / (1 / max_rps + per_request / drain))


class Sampler(threading.Thread):
    """Every second: the gateway's VmRSS (heap and mapped files apart), CPU time, and the outbox's pending count."""

    def __init__(self, proc: procs.Proc, db: Path, interval: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.proc, self.db, self.interval = proc, db, interval
        self.samples: list[dict[str, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while True:
            memory, cpu = self.proc.memory_kib(), self.proc.cpu_seconds()
            if "VmRSS" in memory and cpu is not None:
                self.samples.append({
                    "t": round(time.monotonic() - start, 2), "rss_mb": round(memory["VmRSS"] / 1024, 2),
                    "anon_mb": round(memory.get("RssAnon", 0) / 1024, 2),
                    "file_mb": round((memory.get("RssFile", 0) + memory.get("RssShmem", 0)) / 1024, 2),
                    "cpu_s": cpu, "pending": outbox.pending(self.db),
                })
            if self._done.wait(self.interval):
                return

    def finish(self) -> list[dict[str, float]]:
        self._done.set()
        self.join()
        return self.samples


def rss_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Start and end as medians of the first and last tenth, so one GC or arena blip does not decide."""
    if not samples:
        return {}
    rss = [s["rss_mb"] for s in samples]
    tenth = max(1, len(rss) // 10)
    start, end = sorted(rss[:tenth])[tenth // 2], sorted(rss[-tenth:])[tenth // 2]
    seconds = samples[-1]["t"] - samples[0]["t"]
    return {
        "samples": len(rss), "start_mb": start, "end_mb": end, "min_mb": min(rss), "max_mb": max(rss),
        "drift_pct": round(100 * (end - start) / start, 1),
        "anon_start_mb": samples[0]["anon_mb"], "anon_end_mb": samples[-1]["anon_mb"],
        "file_start_mb": samples[0]["file_mb"], "file_end_mb": samples[-1]["file_mb"],
        "span_pct": round(100 * (max(rss) - min(rss)) / start, 1),
        "cpu_pct": round(100 * (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / seconds, 1) if seconds > 0 else None,
        "pending_start": samples[0]["pending"], "pending_end": samples[-1]["pending"],
    }


def run_memory(settings: Settings, rate: float) -> dict[str, Any]:
    """GET /g/collect at ``rate``: a steady run, then the same with the destination down."""
    hit = hits.GA4_PAGE_VIEW
    gw = GatewayUnderTest(settings, "memory", [http_sink_tag()], standard_clients(False))
    out: dict[str, Any] = {"scenario": "memory (GET /g/collect, open loop)", "rate": round(rate, 1), "dir": str(gw.dir)}
    phases: list[LoadResult] = []
    windows: dict[str, tuple[float, float]] = {}  # phase -> (start, end), unix time
    try:
        gw.start_sink()
        gw.start()
        assert gw.gateway is not None
        if settings.warmup > 0:
            phases.append(open_loop(gw.url, hit, rate, settings.warmup, 1 * PHASE))
        for number, phase in enumerate(("steady", "outage"), start=2):
            if phase == "outage":
                gw.stop_sink()  # the destination goes away: connection refused, items wait in the outbox
            sampler = Sampler(gw.gateway, gw.db)
            sampler.start()
            windows[phase] = (time.time(), 0.0)
            try:
                load = open_loop(gw.url, hit, rate, settings.memory_duration, number * PHASE)
            finally:
                samples = sampler.finish()
            windows[phase] = (windows[phase][0], time.time())
            phases.append(load)
            out[phase] = {"load": load.as_dict(), "rss": rss_summary(samples), "samples": samples}
        server_ok = gw.server_2xx()
    finally:
        clean = gw.stop()
    if "steady" in out:
        out["steady"]["commit_to_delivered_ms"] = outbox.delivery_lag_ms(gw.db, *windows["steady"])
    committed = outbox.committed(gw.db)
    client_ok = sum(p.ok for p in phases)
    checks = [
        committed_check(committed, server_ok, 1),
        Check("client's 2xx count matches the gateway's", client_ok == server_ok,
              f"client saw {client_ok} x 2xx, gateway sent {server_ok}"),
        no_errors(phases),
        stopped_check(clean),
    ]
    out["checks"] = [c.as_dict() for c in checks]
    return out
