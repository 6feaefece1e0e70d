"""What each throughput scenario runs, and what it checks.

An endpoint scenario (GET/POST /g/collect, /collect, the order webhook):

1. a probe request, which also tells how many outbox items one request makes;
2. warm-up, then closed loop: max requests/s and latency under saturation;
3. the backlog drained: delivery items/s with no incoming load;
4. open loop at 50% of the closed-loop maximum: the p99 that visitors see,
   and the commit-to-delivered time of the items it made;
5. SIGTERM, then the outbox read back: every request the gateway answered 2xx
   must be there (pending, delivered or dead-lettered), and nothing else.

wrk does not wait for the requests in flight when its time is up: the gateway
may have committed up to one request per connection whose 2xx wrk never read.
So the exact check is against the gateway's own count of 2xx answers
(``gateway_requests_total``); the client's count must lie between that count
minus what wrk may have cut off, and that count.
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import hits, loadgen, outbox, procs, wrk
from bench.gateway import GatewayUnderTest, Settings, google_ads_missing, http_sink_tag, metric_sum, standard_clients
from bench.hits import Hit
from bench.loadgen import LoadResult

PHASE = 10**10  # sequence numbers per phase, so that no two requests of a run are alike
ADS_CUSTOMER = "1234567890"
ADS_BATCH = 2000  # rows per upload: the google_ads destination's default max_batch_size


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def skipped(name: str, reason: str) -> dict[str, Any]:
    print(f"bench: skipping {name}: {reason}", file=sys.stderr)
    return {"scenario": name, "skipped": reason}


# -- load phases -------------------------------------------------------------------

def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def closed(settings: Settings, url: str, hit: Hit, duration: float, seq: int) -> LoadResult | None:
    """Closed loop with wrk, or the Python fallback; None when ``duration`` is 0 (a skipped warm-up)."""
    if duration <= 0:
        return None
    if settings.use_wrk:
        return wrk.closed_loop(url, hit, duration, settings.connections, seq, settings.cores.load)
    return loadgen.run(loadgen.closed_loop(*_host_port(url), hit, duration, settings.connections, seq))


def open_loop(url: str, hit: Hit, rate: float, duration: float, seq: int) -> LoadResult:
    return loadgen.run(loadgen.open_loop(*_host_port(url), hit, rate, duration, seq))


def probe(url: str, hit: Hit) -> int | None:
    return loadgen.run(loadgen.request_once(*_host_port(url), hit, 1))


def drain(db: Path, timeout: float, floor: int = 0) -> dict[str, Any]:
    """Wait until the outbox has at most ``floor`` items pending; items delivered per second meanwhile.

    A floor of one batch leaves out the last, incomplete batch, which waits for its flush interval.
    """
    start = time.monotonic()
    first = left = outbox.pending(db)
    while left > floor and time.monotonic() - start < timeout:
        time.sleep(0.1)
        left = outbox.pending(db)
    seconds = time.monotonic() - start
    done = first - left
    return {"backlog": first, "left": left, "seconds": round(seconds, 3),
            "items_per_s": round(done / seconds, 1) if done > 0 and seconds > 0 else None}


def no_errors(phases: list[LoadResult]) -> Check:
    return Check("no errors or non-2xx", all(p.non_2xx == 0 and p.errors == 0 for p in phases),
                 "; ".join(f"{p.generator}: {p.non_2xx} non-2xx, {p.errors} errors" for p in phases))


def committed_check(committed: outbox.Committed, server_ok: int, per_request: int) -> Check:
    return Check("every 2xx committed durably", committed.total == server_ok * per_request,
                 f"outbox holds {committed.total} items ({committed.pending} pending, {committed.delivered} delivered,"
                 f" {committed.dead} dead); gateway answered {server_ok} x 2xx x {per_request} item(s)")


def client_check(phases: list[LoadResult], extra_ok: int, server_ok: int, connections: int) -> Check:
    client_ok = extra_ok + sum(p.ok for p in phases)
    cut_off = connections * sum(1 for p in phases if p.generator == "wrk")
    return Check("client's 2xx count matches the gateway's", client_ok <= server_ok <= client_ok + cut_off,
                 f"client saw {client_ok} x 2xx, gateway sent {server_ok} (up to {cut_off} may be cut off by wrk)")


def stopped_check(clean: bool) -> Check:
    return Check("gateway stopped cleanly", clean, "SIGTERM, graceful shutdown logged" if clean else "see gateway.log")


# -- the scenarios -------------------------------------------------------------------

def open_rate(settings: Settings, closed_rps: float) -> float:
    """The open loop's rate: ``--open-rate`` when given (to compare arrangements at one rate), else a fraction of the max."""
    return settings.open_rate if settings.open_rate else max(1.0, closed_rps * settings.open_fraction)


def run_ceiling(settings: Settings) -> dict[str, Any]:
    """The bare Starlette app, same request, same generators: what every ratio is against."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = procs.Proc("ceiling", [sys.executable, "-m", "bench.ceiling", "--port", str(port)],
                      settings.cores.server, settings.workdir / "ceiling.log", nice=procs.NICE_SERVER)
    hit = hits.GA4_PAGE_VIEW
    try:
        proc.wait_http(url + "/healthz")
        closed(settings, url, hit, settings.warmup, 1 * PHASE)
        cl = closed(settings, url, hit, settings.duration, 2 * PHASE)
        assert cl is not None
        op = open_loop(url, hit, open_rate(settings, cl.rps), settings.duration, 3 * PHASE)
    finally:
        proc.stop()
    return {"scenario": "ceiling (bare Starlette, GET)", "closed": cl.as_dict(), "open": op.as_dict(),
            "checks": [no_errors([cl, op]).as_dict()]}


def run_endpoint(settings: Settings, hit: Hit, expect_items: int | None, webhook_client: bool) -> dict[str, Any]:
    """One endpoint of the gateway, delivering through an http_request tag to the sink."""
    gw = GatewayUnderTest(settings, hit.name, [http_sink_tag()], standard_clients(webhook_client))
    checks: list[Check] = []
    phases: list[LoadResult] = []
    try:
        gw.start_sink()
        gw.start()
        status = probe(gw.url, hit)
        per_request = outbox.committed(gw.db).total
        checks.append(Check("probe request accepted", status is not None and 200 <= status < 300,
                            f"status {status}, {per_request} outbox item(s) per request"))
        if expect_items is not None:
            checks.append(Check("outbox items per request", per_request == expect_items,
                                f"{per_request}, expected {expect_items}"))
        warm = closed(settings, gw.url, hit, settings.warmup, 1 * PHASE)
        phases += [warm] if warm else []
        received = gw.sink_received()
        cl = closed(settings, gw.url, hit, settings.duration, 2 * PHASE)
        assert cl is not None
        phases.append(cl)
        during = gw.sink_received() - received
        after_closed = drain(gw.db, settings.drain_timeout)
        since = time.time()
        op = open_loop(gw.url, hit, open_rate(settings, cl.rps), settings.duration, 3 * PHASE)
        until = time.time()
        phases.append(op)
        after_open = drain(gw.db, settings.drain_timeout)
        server_ok = gw.server_2xx()
        sink_total = gw.sink_received()
    finally:
        clean = gw.stop()
    committed = outbox.committed(gw.db)
    checks += [committed_check(committed, server_ok, per_request),
               client_check(phases, 1, server_ok, settings.connections), no_errors(phases), stopped_check(clean)]
    if not settings.smoke:
        checks.append(Check("outbox drained", after_open["left"] == 0, f"{after_open['left']} item(s) still pending"))
    return {
        "scenario": hit.name, "dir": str(gw.dir), "items_per_request": per_request,
        "closed": cl.as_dict(), "open": op.as_dict(),
        "delivery": {
            "items_committed_per_s_during_closed_loop": round(cl.rps * per_request, 1),
            "items_delivered_per_s_during_closed_loop": round(during / cl.seconds, 1),
            "after_closed_loop": after_closed,
            "after_open_loop": after_open,
            "commit_to_delivered_ms_open_loop": outbox.delivery_lag_ms(gw.db, since, until),
            "sink_received": sink_total,
        },
        "committed": {"pending": committed.pending, "delivered": committed.delivered, "dead": committed.dead,
                      "server_2xx": server_ok},
        "checks": [c.as_dict() for c in checks],
    }


def run_google_ads(settings: Settings) -> dict[str, Any]:
    """Purchases with a gclid, batched into ``events:ingest`` calls to the fake Data Manager API.

    The Data Manager API is the google_ads destination's default route: since
    2026-06-15 the Google Ads API takes offline conversions only from the
    advertisers Google still allowlists, so it is what a new advertiser runs.
    """
    name = "Google Ads click conversions"
    missing = google_ads_missing()
    if missing is not None:
        return skipped(name, missing)
    from tests.fakes.google_oauth import CREDENTIALS

    hit = hits.GA4_PURCHASE
    fake_port = procs.free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    destinations: dict[str, Any] = {"google_ads": {"mode": "live", "api": "data_manager",
                                                   "data_manager_base": fake_url,
                                                   "token_url": f"{fake_url}/token", **CREDENTIALS}}
    if settings.smoke:  # not the 10 s default: the smoke run would wait for the last batch
        destinations["google_ads"]["flush_interval"] = "1s"
    tag = {"name": "gads_purchase", "type": "google_ads_click_conversion", "trigger": "purchase",
           "customer_id": ADS_CUSTOMER, "conversion_action_id": "987654321", "timezone": "Europe/Berlin"}
    gw = GatewayUnderTest(settings, "google-ads", [tag], standard_clients(False), destinations)
    fake = procs.Proc("data-manager-fake", [sys.executable, "-m", "tests.fakes.data_manager", "--port", str(fake_port)],
                      settings.cores.load, gw.dir / "data_manager_fake.log", nice=procs.NICE_FAKE)
    phases: list[LoadResult] = []
    try:
        _wait_port(fake, fake_port)
        gw.start()
        status = probe(gw.url, hit)
        warm = closed(settings, gw.url, hit, settings.warmup, 1 * PHASE)
        phases += [warm] if warm else []
        before = _delivered(gw.metrics(), "google_ads")
        cl = closed(settings, gw.url, hit, settings.duration, 2 * PHASE)
        assert cl is not None
        phases.append(cl)
        during = _delivered(gw.metrics(), "google_ads") - before
        full_batches = drain(gw.db, settings.drain_timeout, floor=ADS_BATCH - 1)
        # The last, incomplete batch waits flush_interval (10 s by default) before it is sent.
        rest = drain(gw.db, 5 if settings.smoke else settings.drain_timeout)
        text = gw.metrics()
        server_ok = gw.server_2xx()
        accepted = _accepted_clicks(fake_url)
    finally:
        clean = gw.stop()
        fake.stop()
    committed = outbox.committed(gw.db)
    uploads = metric_sum(text, "gateway_delivery_batch_size_count", 'destination="google_ads"')
    delivered = _delivered(text, "google_ads")
    checks = [Check("probe request accepted", status is not None and 200 <= status < 300, f"status {status}"),
              committed_check(committed, server_ok, 1), client_check(phases, 1, server_ok, settings.connections),
              no_errors(phases), stopped_check(clean),
              Check("outbox drained", rest["left"] == 0, f"{rest['left']} conversion(s) still pending"),
              Check("the fake accepted every delivered conversion", accepted == delivered,
                    f"fake accepted {accepted} rows, gateway counted {delivered:.0f} delivered")]
    return {
        "scenario": name, "dir": str(gw.dir), "closed": cl.as_dict(), "drain": full_batches, "drain_rest": rest,
        "conversions_per_s_during_closed_loop": round(during / cl.seconds, 1),
        "conversions_per_s_draining": full_batches["items_per_s"],
        "conversions_committed_per_s": round(cl.rps, 1),
        "requests_per_10k_conversions": round(10_000 * uploads / delivered, 1) if delivered else None,
        "delivered": delivered, "upload_requests": uploads,
        "token_refreshes": metric_sum(text, "gateway_token_refreshes_total", 'destination="google_ads"'),
        "checks": [c.as_dict() for c in checks],
    }


def _delivered(metrics_text: str, destination: str) -> float:
    return metric_sum(metrics_text, "gateway_deliveries_total", f'destination="{destination}",outcome="delivered"')


def _accepted_clicks(fake_url: str) -> int:
    """How many events the fake Data Manager API kept from accepted requests."""
    with urllib.request.urlopen(fake_url + "/fake/events", timeout=30) as response:
        return len(orjson.loads(response.read()))


def _wait_port(proc: procs.Proc, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout}s")
