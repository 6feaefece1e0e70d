"""``python -m bench --instructions``: CPU instructions per request, counted by callgrind.

Wall-clock figures on a shared machine move by tens of percent from run to
run; the number of instructions a request costs does not. For each server and
scenario the server runs under ``valgrind --tool=callgrind`` twice, answering
N1 and then N2 requests (500 and 2,500 by default) sent over 16 keep-alive
connections by ``bench.loadgen`` from outside valgrind, each request with its
own number (a new ``cid``, event or order id), and is stopped by SIGTERM to
its PID. ``(Ir(N2) - Ir(N1)) / (N2 - N1)`` is one request: start-up, the
first requests' one-off work (imports, caches) and shutdown are in both runs
and cancel out. Counting starts when the server first answers (``bench.callgrind``),
which only makes start-up faster. Every thread and child process is counted.

The servers:

- ``ceiling``: the bare Starlette app of ``bench/ceiling.py`` answering 204 to
  the same request, on the uvicorn settings of ``gateway serve``;
- ``gateway``: ``gateway serve`` with the sample container
  (``examples/container.yaml``, its destinations in dry-run) and the
  dispatcher off (``bench/serve.py``): the request path and its durable commit;
- ``deliveries``: ``gateway serve`` with an ``http_request`` tag on every
  event delivering batches of up to 100 to ``bench/sink.py`` (outside
  valgrind), the dispatcher on; the second run ends only when every item
  was delivered, so each request's deliveries are in its figure.

The table and the command are in ``bench.instructions_report``.

Time-driven work (the metrics flush and outbox depth every second, the
dispatcher's poll) is counted too, by wall time rather than by request; it
was about 0.4M instructions per second here, 0.2% of the GA4 figure.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import orjson

from bench import callgrind, hits, loadgen, outbox, procs
from bench.gateway import GatewayUnderTest, Settings, http_sink_tag, standard_clients
from bench.hits import Hit
from bench.serve import MARK as DISPATCHER_OFF_MARK

ROOT = procs.ROOT
SAMPLE_CONTAINER = ROOT / "examples/container.yaml"
BASELINE = Path(__file__).with_name("instructions_baseline.json")

N1, N2 = 500, 2500
CI_N1, CI_N2 = 200, 600  # the CI test's small version: well under a minute for both runs
BASELINE_RUNS = 3
CONNECTIONS = 16
SEQ_START = 10**9  # every request number has ten digits, so N1's requests are N2's first ones, byte for byte
READY_TIMEOUT = 300.0  # s: start-up runs under valgrind, uncounted but slower
LOAD_TIME_LIMIT = 3600.0  # s: a safety net, not a duration
DRAIN_TIMEOUT = 600.0  # s: the deliveries server's outbox must empty before it is stopped
# Packages whose version moves the figure; the baseline records them so that a failure can say what changed.
PACKAGES = ("uvicorn", "uvloop", "httptools", "starlette", "pydantic", "pydantic_core", "orjson", "aiohttp",
            "prometheus-client")

SCENARIOS: dict[str, Hit] = {
    "get": hits.GA4_PAGE_VIEW,
    "items10": hits.GA4_ITEMS_10,
    "items50": hits.GA4_ITEMS_50,
    "post5": hits.GA4_BATCH,
    "post20": hits.GA4_BATCH_20,
    "beacon": hits.BEACON,
    "webhook": hits.ORDER_WEBHOOK,
}


@dataclass(frozen=True, slots=True)
class Server:
    """What runs under callgrind: the ceiling, or ``gateway serve`` on the sample or the sink's container."""

    description: str
    container: Literal["none", "sample", "sink"]  # none: bench/ceiling.py
    dispatcher: bool = False
    args: tuple[str, ...] = ()  # more arguments: bench.ceiling's --asgi, bench.serve's --until


SERVERS: dict[str, Server] = {
    "ceiling": Server("bare Starlette (bench/ceiling.py) answering 204", "none"),
    "gateway": Server("gateway serve, examples/container.yaml, dispatcher off", "sample"),
    "deliveries": Server("gateway serve, http_request tag -> bench/sink.py in batches of up to 100, dispatcher on",
                         "sink", dispatcher=True),
}


@dataclass(slots=True)
class Run:
    """One server under callgrind, answering ``requests`` requests."""

    requests: int
    instructions: int
    by_thread: dict[str, int]
    seconds: float  # wall time from counting on to the process's end
    outbox_items: int | None = None  # items the outbox holds afterwards (gateway servers)
    sink: dict[str, Any] | None = None  # what the sink received (deliveries server)
    by_object: dict[str, int] | None = None  # own instructions by binary (libpython, SQLite ...), when asked for
    by_function: dict[str, int] | None = None  # own instructions by function, likewise


@dataclass(slots=True)
class Figure:
    """Instructions per request of one server on one scenario: the difference of two runs."""

    server: str
    scenario: str
    first: Run
    second: Run
    checks: list[str] = field(default_factory=list)  # what went wrong; empty when all is well

    @property
    def per_request(self) -> float:
        return (self.second.instructions - self.first.instructions) / (self.second.requests - self.first.requests)

    def per_request_by_thread(self) -> dict[str, float]:
        extra = self.second.requests - self.first.requests
        labels = sorted(set(self.first.by_thread) | set(self.second.by_thread))
        return {label: (self.second.by_thread.get(label, 0) - self.first.by_thread.get(label, 0)) / extra
                for label in labels}

    def per_request_by_object(self) -> dict[str, float]:
        return self._difference(self.first.by_object or {}, self.second.by_object or {})

    def per_request_by_function(self) -> dict[str, float]:
        return self._difference(self.first.by_function or {}, self.second.by_function or {})

    def _difference(self, first: dict[str, int], second: dict[str, int]) -> dict[str, float]:
        extra = self.second.requests - self.first.requests
        return {name: (second.get(name, 0) - first.get(name, 0)) / extra for name in set(first) | set(second)}

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "scenario": self.scenario, "per_request": round(self.per_request),
                "per_request_by_thread": {k: round(v) for k, v in self.per_request_by_thread().items()},
                "runs": [asdict(self.first), asdict(self.second)], "checks": self.checks}


def workspace(workdir: Path, cores: procs.Cores) -> Settings:
    """The harness's settings as far as a counted run uses them: where files go, which core runs the server."""
    return Settings(duration=0.0, warmup=0.0, memory_duration=0.0, memory_rate=None, connections=CONNECTIONS,
                    drain_timeout=DRAIN_TIMEOUT, open_fraction=0.0, use_wrk=False, cores=cores, workdir=workdir,
                    smoke=False)


def count_run(name: str, server: Server, hit: Hit, requests: int, settings: Settings,
              objects: bool = False) -> tuple[Run, list[str]]:
    """Start ``server`` under callgrind, send ``requests`` requests, stop it; its count and any failed check."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"callgrind-{name}-{requests}-", dir=settings.workdir))
    wrapper = callgrind.prefix(out_dir)
    env = {"PYTHONHASHSEED": "0"}  # the same dict and set layouts in every run
    problems: list[str] = []
    gw: GatewayUnderTest | None = None
    proc: procs.Proc | None = None
    if server.container == "none":
        port = procs.free_port()
        argv = [*wrapper, sys.executable, "-m", "bench.ceiling", "--port", str(port), *server.args]
        proc = procs.Proc("ceiling", argv, settings.cores.server, out_dir / "ceiling.log", env=env,
                          nice=procs.NICE_SERVER)
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", READY_TIMEOUT)
    else:
        if server.container == "sample":
            gw = GatewayUnderTest(settings, f"{name}-{hit.name}", [], [], container_file=SAMPLE_CONTAINER)
        else:
            gw = GatewayUnderTest(settings, f"{name}-{hit.name}", [http_sink_tag()], standard_clients(True))
            gw.start_sink()
        gw.start(dispatcher=server.dispatcher, wrapper=wrapper, env=env, timeout=READY_TIMEOUT,
                 serve_args=server.args)
        assert gw.gateway is not None
        proc, port = gw.gateway, gw.port
    started = time.monotonic()
    try:
        callgrind.instrument(proc.pid)
        load = loadgen.run(loadgen.closed_loop("127.0.0.1", port, hit, LOAD_TIME_LIMIT, CONNECTIONS, SEQ_START,
                                               count=requests))
        if load.ok != requests or load.errors:
            problems.append(f"{load.ok} of {requests} requests answered 2xx ({load.statuses}, {load.errors} errors)")
        delivering = gw is not None and server.dispatcher
        if delivering:
            left = _drain(gw.db)
            if left:
                problems.append(f"{left} item(s) still pending after {DRAIN_TIMEOUT:.0f} s")
        sink = _sink_stats(gw) if delivering and gw.sink is not None else None
    finally:
        if gw is not None:
            clean = gw.stop()
            log_head = gw.gateway.log_path.read_text(errors="replace")[:20_000]  # the mark comes before any request
            if not server.dispatcher and DISPATCHER_OFF_MARK not in log_head:
                problems.append("bench.serve did not build the app: the dispatcher may have run")
        else:
            clean = proc.stop(timeout=120) in (0, -15)
    seconds = time.monotonic() - started
    if not clean:
        problems.append(f"{name} did not stop cleanly (see {out_dir})")
    counted = callgrind.read(out_dir, proc.pid)
    items = None
    if gw is not None:
        committed = outbox.committed(gw.db)
        items = committed.total
        if delivering and (committed.pending or committed.dead):
            problems.append(f"{committed.pending} pending, {committed.dead} dead-lettered: not all delivered")
    by_object, by_function = callgrind.self_costs(out_dir) if objects else (None, None)
    run = Run(requests, counted.total, counted.by_thread, round(seconds, 1), items, sink,
              None if by_object is None else dict(by_object), None if by_function is None else dict(by_function))
    return run, problems


def _drain(db: Path) -> int:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    left = outbox.pending(db)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = outbox.pending(db)
    return left


def _sink_stats(gw: GatewayUnderTest) -> dict[str, Any]:
    with urllib.request.urlopen(gw.sink_url + "/_stats", timeout=10) as response:
        stats = orjson.loads(response.read())
    return {"requests": stats["requests"], "items": stats["items"]}


def measure(name: str, scenario: str, n1: int, n2: int, settings: Settings, server: Server | None = None,
            objects: bool = False) -> Figure:
    """The per-request figure of a server on ``scenario``: runs of ``n1`` and ``n2`` requests, differenced.

    ``server`` defaults to ``SERVERS[name]``; ``objects`` also reads each run's instructions by binary.
    """
    hit = SCENARIOS[scenario]
    server = server or SERVERS[name]
    first, problems = count_run(name, server, hit, n1, settings, objects)
    second, more = count_run(name, server, hit, n2, settings, objects)
    problems += more
    if first.outbox_items is not None and second.outbox_items is not None:
        if first.outbox_items * n2 != second.outbox_items * n1:
            problems.append(f"outbox items per request differ: {first.outbox_items}/{n1} vs {second.outbox_items}/{n2}")
    return Figure(name, scenario, first, second, problems)


def environment() -> dict[str, Any]:
    """What the figure depends on besides the code: the interpreter, valgrind and the libraries' versions."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "machine": platform.machine(), "valgrind": valgrind,
            "packages": versions}


# -- the baseline the CI test compares with -------------------------------------------

def measure_ci(settings: Settings) -> Figure:
    """The CI test's small version: GET /g/collect on the gateway server, CI_N1 and CI_N2 requests."""
    return measure("gateway", "get", CI_N1, CI_N2, settings)


def write_baseline(settings: Settings) -> dict[str, Any]:
    figures = [measure_ci(settings) for _ in range(BASELINE_RUNS)]
    problems = [p for f in figures for p in f.checks]
    if problems:
        raise RuntimeError("; ".join(problems))
    values = sorted(round(f.per_request) for f in figures)
    baseline = {
        "scenario": hits.GA4_PAGE_VIEW.name, "server": SERVERS["gateway"].description, "n1": CI_N1, "n2": CI_N2,
        "connections": CONNECTIONS, "instructions_per_request": values[len(values) // 2], "measurements": values,
        "tolerance": 0.10, "command": "python -m bench --instructions --baseline",
        "date": datetime.now(timezone.utc).date().isoformat(), "environment": environment(),
    }
    BASELINE.write_bytes(orjson.dumps(baseline, option=orjson.OPT_INDENT_2) + b"\n")
    return baseline
