"""Where the gateway's time goes under GET /g/collect load: py-spy, summarised as top frames.

Two py-spy windows of the same closed-loop load: one recorded as collapsed
stacks (``--format raw``), which this module reduces to the top functions by
self time and by inclusive time per thread, and one as a flame graph (SVG)
for reading by eye. Under saturation the dispatcher hardly runs (requests
win the event loop), so a third window records the drain of the backlog
that load left behind: what one delivery costs. py-spy samples the process
from outside, from the load core, so the gateway runs unmodified; it pauses the
process for each sample (no ``--nonblocking``), because a stack read while the
process runs can mix frames of two coroutines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import hits, outbox, procs, scenarios
from bench.gateway import GatewayUnderTest, Settings, http_sink_tag, standard_clients
from bench.scenarios import PHASE

TOP = 25
RATE = 200  # py-spy samples per second
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def run(settings: Settings, duration: float, stem: Path) -> dict[str, Any]:
    spy = py_spy()
    if spy is None:
        return scenarios.skipped("profile", "py-spy is not installed (pip install py-spy)")
    stem.parent.mkdir(parents=True, exist_ok=True)
    raw, svg = Path(f"{stem}.collapsed.txt"), Path(f"{stem}.svg")
    drain_raw = Path(f"{stem}-drain.collapsed.txt")
    drain_seconds = max(1, int(min(duration, 15)))
    hit = hits.GA4_PAGE_VIEW
    gw = GatewayUnderTest(settings, "profile", [http_sink_tag()], standard_clients(False))
    try:
        gw.start_sink()
        gw.start()
        assert gw.gateway is not None
        pid = gw.gateway.pid
        scenarios.closed(settings, gw.url, hit, settings.warmup, 1 * PHASE)
        for number, (fmt, output) in enumerate((("raw", raw), ("flamegraph", svg)), start=2):
            recorder = _record(spy, pid, duration, fmt, output, settings.cores.load)
            load = scenarios.closed(settings, gw.url, hit, duration + 2, number * PHASE)
            _finish(recorder, duration)
        backlog = outbox.pending(gw.db)
        _finish(_record(spy, pid, drain_seconds, "raw", drain_raw, settings.cores.load), drain_seconds)
        drained = backlog - outbox.pending(gw.db)
    finally:
        gw.stop()
    assert load is not None
    return {
        "scenario": "profile: GET /g/collect, closed loop", "requests_per_s_while_profiled": round(load.rps, 1),
        "collapsed": str(raw), "flamegraph": str(svg), **summarise(raw.read_text(), duration),
        "drain": {"collapsed": str(drain_raw), "items_per_s": round(drained / drain_seconds, 1),
                  **summarise(drain_raw.read_text(), drain_seconds)},
    }


def _record(spy: str, pid: int, seconds: float, fmt: str, output: Path, core: int | None) -> subprocess.Popen[str]:
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE),
            "--threads", "--format", fmt, "--output", str(output)]
    return subprocess.Popen(procs.pinned(argv, core), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(recorder: subprocess.Popen[str], seconds: float) -> None:
    try:
        _, err = recorder.communicate(timeout=seconds + 60)
    finally:
        if recorder.poll() is None:
            recorder.kill()  # by its own handle: this py-spy only
            recorder.wait()
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed ({recorder.returncode}): {err[-1000:]}")


def _frame(text: str) -> tuple[str, str]:
    """``handle (/work/main/gateway/app.py:155)`` -> (``handle (gateway/app.py)``, ``gateway/app.py``)."""
    match = _FRAME.match(text)
    if match is None:
        return text, ""
    path = _PREFIX.sub("", match.group("file"))
    return f"{match.group('func')} ({path})", path


# Self time is charged to the first frame, from the leaf up, that belongs to one of these; the standard
# library (urllib.parse, re, datetime, asyncio's tasks ...) is charged to whoever called it.
COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("event loop: uvloop/asyncio (C), socket I/O", ("asyncio/runners.py", "uvicorn/_compat.py", "uvloop/")),
    ("HTTP: uvicorn + httptools", ("uvicorn/", "httptools/")),
    ("framework: starlette", ("starlette/",)),
    ("app glue: gateway/app.py, netaddr, client", ("gateway/app.py", "gateway/netaddr.py", "gateway/client.py",
                                                  "gateway/errors.py", "gateway/cookies.py")),
    ("clients: parse the request", ("clients/",)),
    ("consent", ("gateway/consent.py",)),
    ("pipeline + rules", ("gateway/pipeline.py", "rules/")),
    ("tags: build, identity, hashing", ("tags/http_request.py", "tags/google_ads_", "tags/_google_ads.py",
                                        "gateway/identity/", "gateway/tag.py", "gateway/delivery.py")),
    ("event model: msgspec (pydantic for configs)", ("msgspec/", "pydantic/", "pydantic_core/", "gateway/event.py")),
    ("metrics: prometheus_client", ("prometheus_client/", "gateway/metrics.py")),
    ("outbox: gateway/storage (caller side)", ("gateway/storage/",)),
    ("dispatcher, senders, aiohttp client", ("gateway/dispatcher.py", "gateway/sender.py", "tags/_http_sender.py",
                                             "tags/_google_ads_sender.py", "aiohttp/", "yarl/", "multidict/")),
    ("logging", ("logging/", "gateway/logs.py")),
    ("orjson", ("orjson",)),
]
_PREFIX = re.compile(r"^.*?(?:site-packages/|/lib/python3\.\d+/|" + re.escape(str(procs.ROOT)) + "/)")
_REPO = ("gateway/", "clients/", "tags/", "rules/")


def _component(paths: list[str]) -> str:
    for path in reversed(paths):
        for label, prefixes in COMPONENTS:
            if path.startswith(prefixes):
                return label
    return "other (threads' own frames, standard library)"


def summarise(collapsed: str, seconds: float) -> dict[str, Any]:
    """Per thread: how busy, where the time goes by component, top self frames and top inclusive repo frames.

    py-spy leaves idle samples out, so a thread's samples / (rate x seconds) is how busy it was, and the
    percentages are of its busy time.
    """
    threads: dict[str, dict[str, Any]] = {}
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        thread = next((p for p in parts if p.startswith("thread ")), "thread ?")
        frames = [_frame(p) for p in parts if not p.startswith(("thread ", "process "))]
        if not frames:
            continue
        entry = threads.setdefault(thread, {"samples": 0, "self": Counter(), "inclusive": Counter(),
                                            "components": Counter()})
        entry["samples"] += count
        entry["self"][frames[-1][0]] += count
        entry["components"][_component([path for _, path in frames])] += count
        for name in {name for name, path in frames if path.startswith(_REPO)}:
            entry["inclusive"][name] += count
    out = []
    for name, entry in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]):
        n = entry["samples"]

        def pct(counter: Counter[str], top: int, n: int = n) -> list[dict[str, Any]]:
            return [{"frame": f, "pct": round(100 * c / n, 1)} for f, c in counter.most_common(top)]

        out.append({"thread": re.sub(r"^thread \(\d+\): ", "", name), "samples": n,
                    "busy_pct": round(100 * n / (RATE * seconds), 1), "components": pct(entry["components"], 20),
                    "top_self": pct(entry["self"], TOP), "top_inclusive_repo": pct(entry["inclusive"], TOP)})
    return {"threads": out}


def render(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"profile: skipped: {result['skipped']}"
    lines = [f"### Profile: GET /g/collect, closed loop at {result['requests_per_s_while_profiled']:,.0f} req/s"
             f" (py-spy, {RATE} Hz)", "", f"flame graph: {result['flamegraph']}"]
    lines += _threads(result["threads"])
    drain = result["drain"]
    lines += ["", f"### Profile: draining the backlog at {drain['items_per_s']:,.0f} items/s, no incoming load"]
    lines += _threads(drain["threads"])
    return "\n".join(lines)


def _threads(threads: list[dict[str, Any]]) -> list[str]:
    lines = []
    for thread in threads[:2]:
        lines += ["", f"{thread['thread']}: busy {thread['busy_pct']}% of the time; shares of its busy samples:", ""]
        lines += ["| % | component (self time, library calls charged to their caller) |", "| --- | --- |"]
        lines += [f"| {c['pct']} | {c['frame']} |" for c in thread["components"] if c["pct"] >= 0.5]
        lines += ["", "| self % | function | | inclusive % | repository function |", "| --- | --- | --- | --- | --- |"]
        inclusive = thread["top_inclusive_repo"][:15] + [{"pct": "", "frame": ""}] * 15
        for own, inc in zip(thread["top_self"][:15], inclusive[:15], strict=False):
            lines.append(f"| {own['pct']} | {own['frame']} | | {inc['pct']} | {inc['frame']} |")
    return lines
