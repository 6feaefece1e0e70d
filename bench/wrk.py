"""Closed-loop load with wrk (Debian's package), driven by ``wrk.lua``.

wrk holds a fixed number of connections, each sending its next request as
soon as the previous answer arrives: the classic "maximum requests/s" figure.
Its latency histogram is corrected by nothing and suffers from coordinated
omission, which is why the p99 at a fixed rate comes from ``loadgen.open_loop``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson

from bench.hits import Hit
from bench.loadgen import LoadResult
from bench.procs import NICE_GENERATOR, pinned

SCRIPT = Path(__file__).with_name("wrk.lua")


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal that cannot be closed by the text itself."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"  # a leading newline would be dropped; templates never start with one


def _spec(hit: Hit, start: int) -> str:
    headers = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in hit.headers.items())
    secret = _lua_string(hit.secret) if hit.secret is not None else "nil"
    return (
        f"return {{method = {_lua_string(hit.method)}, path = {_lua_string(hit.path)}, headers = {{{headers}}},"
        f" body = {_lua_string(hit.body)}, secret = {secret}, start = {start}}}\n"
    )


def closed_loop(
    url: str, hit: Hit, duration: float, connections: int, seq_start: int, core: int | None, timeout: float = 10.0
) -> LoadResult:
    """Run ``wrk -t1 -c<connections> -d<duration>`` against ``url`` (scheme://host:port)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as spec:
        spec.write(_spec(hit, seq_start))
    try:
        argv = [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", f"--timeout={int(timeout)}s",
            "--latency", "-s", str(SCRIPT), url,
        ]
        proc = subprocess.run(
            pinned(argv, core, NICE_GENERATOR), capture_output=True, text=True,
            env={**os.environ, "BENCH_SPEC": spec.name}, timeout=duration + timeout + 30,
        )
    finally:
        os.unlink(spec.name)
    match = re.search(r"^BENCH_JSON (.*)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
    data = orjson.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    lat = data["latency_us"]
    statuses = {int(k): v for k, v in data["statuses"].items()}
    errors = data["errors"]
    return LoadResult(
        sent=data["requests"],
        statuses=statuses,
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        seconds=seconds,
        latency_ms={k: lat[k] / 1000 for k in ("p50", "p90", "p99", "p99.9", "max")},
        generator="wrk",
    )
