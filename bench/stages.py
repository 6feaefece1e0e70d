"""Where a GA4 hit's instructions go: the instruction count of servers cut short after each stage.

    python -m bench.stages                       # about 10 minutes; GET /g/collect
    python -m bench.stages --scenario items10 --requests 200,600

Under callgrind, CPython's own functions are one big interpreter loop: a
Python function of ours has no cost of its own in the profile. So the request
path is measured as a ladder instead, each rung counted exactly as
``python -m bench --instructions`` counts (two runs, differenced), and each
difference is what one stage adds:

- ``asgi``: a bare ASGI function answering 204 (``bench.ceiling --asgi``):
  uvicorn, httptools and uvloop alone;
- ``starlette``: the ceiling, the same behind Starlette;
- ``front``: the gateway (sample container, dispatcher off) whose client
  returns no event at once: Starlette's outer middleware, the collection
  front, reading the request, the client address, metrics, the answer;
- ``parse``: + the GA4 client's ``parse`` (query, event model, consent signals);
- ``pipeline``: + consent, rules and the tags' ``build`` (nothing committed);
- ``commit``: + the durable outbox commit: the whole request path;
- ``sink, dispatcher off`` and ``sink, dispatcher on``: the container with an
  ``http_request`` tag to the sink, without and with its deliveries.

The cuts are made through the seams ``Gateway._handle`` calls
(``bench/serve.py --until``). For the whole path, instructions are also
given by the binary they ran in (CPython, pydantic-core, SQLite, httptools,
OpenSSL ...), from callgrind's own per-function costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import instructions, procs
from bench.instructions import SCENARIOS, SERVERS, Figure, Server

LADDER: list[tuple[str, Server]] = [
    ("asgi", Server("bare ASGI function answering 204 (bench.ceiling --asgi)", "none", args=("--asgi",))),
    ("starlette", SERVERS["ceiling"]),
    ("front", Server("gateway, the client returning no event", "sample", args=("--until", "front"))),
    ("parse", Server("gateway, client parse, no pipeline", "sample", args=("--until", "parse"))),
    ("pipeline", Server("gateway, parse + pipeline, no commit", "sample", args=("--until", "pipeline"))),
    ("commit", SERVERS["gateway"]),
    ("sink, dispatcher off", Server("the sink's container, dispatcher off", "sink")),
    ("sink, dispatcher on", SERVERS["deliveries"]),
]
# Each stage against the one it adds to, and what that is. The gateway's collection front is outside
# Starlette's router, so ``front`` is compared with the bare ASGI server.
ADDS_TO: dict[str, tuple[str, str]] = {
    "starlette": ("asgi", "Starlette's app, router, Request and Response"),
    "front": ("asgi", "the gateway's front: outer middleware, request read, client address, metrics, answer"),
    "parse": ("front", "the GA4 client: query parsing, the event (a msgspec Struct), consent signals; first-party cookies"),
    "pipeline": ("parse", "consent, rules, the tags' build (ga4: the forwarded hit; http_request: the event's JSON, idempotency key)"),
    "commit": ("pipeline", "the outbox commit: loop side and SQLite writer thread"),
    "sink, dispatcher on": ("sink, dispatcher off", "delivering: claim, HTTP request to the sink, settle"),
}
TOP_FUNCTIONS = 25
# Binaries by file name, as the table names them.
BINARIES = {
    "libpython": "CPython (the interpreter, its objects, its C modules)",
    "_pydantic_core": "pydantic-core", "url_parser": "httptools (URL parser)", "parser.": "httptools (llhttp)",
    "loop.": "uvloop", "libuv": "uvloop (libuv)", "libsqlite3": "SQLite", "_sqlite3": "SQLite (Python module)",
    "libcrypto": "OpenSSL (SHA-256, HMAC)", "orjson": "orjson", "libc.so": "libc (malloc, memcpy, syscalls)",
    "_asyncio": "asyncio (C)", "_datetime": "datetime (C)", "_multidict": "multidict", "_http": "aiohttp (C)",
    "_quoting": "yarl (C)", "ld-linux": "dynamic loader",
}


def binary(path: str) -> str:
    name = Path(path).name
    if Path(path).parent.name == "msgspec":  # its module is plainly "_core.<abi>.so"
        return "msgspec"
    return next((label for prefix, label in BINARIES.items() if name.startswith(prefix)), name or "?")


def render(figures: list[tuple[str, Figure]], scenario: str) -> str:
    by_stage = {stage: figure.per_request for stage, figure in figures}
    lines = [f"Stages of {SCENARIOS[scenario].name} (instructions per request):", "",
             "| stage | instructions per request | added | over | what is added |", "| --- | --- | --- | --- | --- |"]
    for stage, value in by_stage.items():
        base, what = ADDS_TO.get(stage, (None, ""))
        added = f"{(value - by_stage[base]) / 1000:+,.0f}k" if base in by_stage else ""
        lines.append(f"| {stage} | {value / 1000:,.0f}k | {added} | {base or ''} | {what} |")
    commit = dict(figures).get("commit")
    if commit is not None:
        threads = commit.per_request_by_thread()
        lines += ["", "The whole path (commit) by thread: " + ", ".join(
            f"{label} {value / 1000:,.0f}k" for label, value in sorted(threads.items(), key=lambda kv: -kv[1]))]
        by_binary: dict[str, float] = {}
        for path, value in commit.per_request_by_object().items():
            by_binary[binary(path)] = by_binary.get(binary(path), 0.0) + value
        total = commit.per_request
        lines += ["", "The whole path (commit) by binary, own instructions (not those of what it calls):", "",
                  "| binary | instructions per request | share |", "| --- | --- | --- |"]
        lines += [f"| {name} | {value / 1000:,.1f}k | {100 * value / total:.1f}% |"
                  for name, value in sorted(by_binary.items(), key=lambda kv: -kv[1]) if value >= 50]
        functions = sorted(commit.per_request_by_function().items(), key=lambda kv: -kv[1])[:TOP_FUNCTIONS]
        lines += ["", f"The whole path by function, own instructions, top {TOP_FUNCTIONS}:", "",
                  "| function (binary:name) | instructions per request | share |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | {value / 1000:,.1f}k | {100 * value / total:.1f}% |" for name, value in functions]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="get", choices=list(SCENARIOS))
    parser.add_argument("--requests", default=f"{instructions.N1},{instructions.N2}", help="N1,N2")
    args = parser.parse_args(argv)
    why = instructions.callgrind.missing()
    if why is not None:
        print(f"bench.stages: {why}", file=sys.stderr)
        return 2
    n1, n2 = (int(n) for n in args.requests.split(","))
    cores = procs.Cores.detect()
    procs.pin_self(cores.load)
    settings = instructions.workspace(Path(tempfile.mkdtemp(prefix="gateway-stages-")), cores)
    figures: list[tuple[str, Figure]] = []
    try:
        for stage, server in LADDER:
            print(f"bench.stages: {stage} ...", file=sys.stderr)
            figure = instructions.measure(stage, args.scenario, n1, n2, settings, server, objects=stage == "commit")
            print(f"bench.stages:   {figure.per_request:,.0f}" + "".join(f"; FAILED: {p}" for p in figure.checks),
                  file=sys.stderr)
            figures.append((stage, figure))
    finally:
        procs.stop_all()
    print(render(figures, args.scenario))
    print(f"\n(Ir({n2:,}) - Ir({n1:,})) / {n2 - n1:,} per request; files in {settings.workdir}")
    return 1 if any(f.checks for _, f in figures) else 0


if __name__ == "__main__":
    raise SystemExit(main())
