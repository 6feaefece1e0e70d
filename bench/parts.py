"""Instructions of one part of the request path, counted in process: ``python -m bench.parts``.

    python -m bench.parts                                   # every part, GET /g/collect
    python -m bench.parts --scenario post5 --parts parse,pipeline --calls 200

``python -m bench --instructions`` counts whole requests through the server;
this counts one function of the path, called in a loop, which is what an
optimisation of that function needs to show. The process runs under
``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce``:
counting is on only while the loop, which runs inside ``functools.reduce``,
does (nothing on the request path calls it), so imports, the container's
loading and the first calls (warm-up) are not counted. The figure is the
count divided by the number of calls; two runs of the same code differed by
0.4% at most here (the requests carry the time they are built, and the
garbage collector runs at slightly different points).

The parts (the sample container, ``examples/container.yaml``):

- ``parse``: the GA4 client's ``parse`` of the request;
- ``first_party``: ``parse`` then the server-managed cookies (minus ``parse`` for their own cost);
- ``pipeline``: consent, rules and every tag's ``build`` for the parsed events;
- ``ga4_tag``, ``http_request_tag``: one tag's ``build`` of each event (consent applied);
- ``event_json``: each event's JSON as the http_request tag takes it
  (``Event.to_json_bytes``, the body and outbox row; before the event model
  was a ``msgspec.Struct`` this part was ``to_json_dict``, pydantic's
  ``model_dump``, which the outbox then encoded).

With ``--scenario webhook`` (the signed order webhook): ``parse``, the order
webhook client's, and ``ledger``, the order ledger's step for a new order
(``Ledger.run``: what the SQLite writer thread runs inside its transaction);
and the phone number work inside them, each call on a number of its own:
``order_id``, whether a 10-digit order number is a phone number
(``gateway.personal.digits_read_as_phone``, asked of the id a log line
shows), ``phone``, one read of ``+49 170 ...`` (``phones.e164_of``, then
``gateway.identity.forget`` as after a request), and ``national_phone``, one read of
``0170 ...`` with the region DE.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bench import callgrind
from bench.instructions import SAMPLE_CONTAINER, SCENARIOS, SEQ_START

PARTS = ("parse", "first_party", "pipeline", "ga4_tag", "http_request_tag", "event_json")
WEBHOOK_PARTS = ("parse", "ledger", "order_id", "phone", "national_phone")  # --scenario webhook
PHONE_PARTS = ("order_id", "phone", "national_phone")  # inputs of their own, not requests
WARMUP = 20


Parts = dict[str, tuple[Callable[[Any], Any], bool]]  # part -> (the function, whether it takes a request)


def _setup(scenario: str, calls: int) -> tuple[Parts, list[Any], Callable[[Any], list[Any]]]:
    if scenario == "webhook":
        return _webhook_setup(calls)
    from clients import ga4
    from gateway.client import RawRequest, stamp
    from gateway.config import load_container_file
    from gateway.consent import ConsentPolicy, apply_consent
    from gateway.first_party import FirstPartyCookies
    from gateway.pipeline import Pipeline

    hit = SCENARIOS[scenario]
    container = load_container_file(SAMPLE_CONTAINER, env={})
    entry = next(c for c in container.clients if c.config.type == "ga4")
    tags = {t.config.name: t for t in container.tags}
    pipeline = Pipeline(container)
    cookies = FirstPartyCookies(container.file.cookies, ConsentPolicy.for_container(container))

    def raw(n: int) -> RawRequest:
        path, headers, body = hit.render(n)
        route, _, query = path.partition("?")
        lowered = {k.lower(): v for k, v in headers.items()} | {"host": "shop.example"}
        return RawRequest(hit.method, route, query, lowered, body, "203.0.113.7", datetime.now(timezone.utc))

    def events(request: RawRequest) -> list[Any]:
        parsed = ga4.parse(request, entry.config)
        stamp(parsed.events, entry.source)
        cookies.apply(request, parsed.events)
        for event in parsed.events:
            apply_consent(event, container.consent_defaults)
        return parsed.events

    def one_tag(name: str) -> Callable[[list[Any]], Any]:
        tag = tags[name]
        return lambda evs: [tag.module.build(e, tag.config) for e in evs]

    requests = [raw(SEQ_START + i) for i in range(WARMUP + calls)]
    parts: Parts = {
        "parse": (lambda r: ga4.parse(r, entry.config), True),
        "first_party": (lambda r: cookies.apply(r, ga4.parse(r, entry.config).events), True),
        "pipeline": (lambda evs: pipeline.process(evs, "ga4"), False),
        "ga4_tag": (one_tag("ga4_forward"), False),
        "http_request_tag": (one_tag("forward_everything"), False),
        "event_json": (lambda evs: [e.to_json_bytes() for e in evs], False),
    }
    return parts, requests, events


def _webhook_setup(calls: int) -> tuple[Parts, list[Any], Callable[[Any], list[Any]]]:
    """The signed order webhook on the sample container: its client's ``parse``, and the ledger's step.

    ``ledger`` is ``Ledger.run`` for a new order (an empty ledger state), which is what the storage's writer
    thread runs inside its transaction: the ledger's decisions, then the pipeline with every tag that fires
    on the purchase (Google Ads, Meta, the http_request tag), then the identifiers the ledger keeps.
    """
    from datetime import timedelta

    from bench.hits import WEBHOOK_SECRET
    from clients import order_webhook
    from gateway.app import click_tags
    from gateway.client import RawRequest, stamp
    from gateway.config import load_container_file
    from gateway.ledger import LedgerState
    from gateway.orders import Ledger
    from gateway.pipeline import Pipeline

    hit = SCENARIOS["webhook"]
    container = load_container_file(SAMPLE_CONTAINER, env={"ORDER_WEBHOOK_SECRET": WEBHOOK_SECRET})
    entry = next(c for c in container.clients if c.config.type == "order_webhook")
    ledger = Ledger(Pipeline(container).process, click_tags(container), timedelta(days=7))

    def raw(n: int) -> RawRequest:
        path, headers, body = hit.render(n)
        lowered = {k.lower(): v for k, v in headers.items()} | {"host": "shop.example"}
        return RawRequest(hit.method, path, "", lowered, body, "203.0.113.7", datetime.now(timezone.utc))

    def events(request: RawRequest) -> list[Any]:
        parsed = order_webhook.parse(request, entry.config)
        stamp(parsed.events, entry.source)
        return parsed.events

    requests = [raw(SEQ_START + i) for i in range(WARMUP + calls)]
    parts: Parts = {
        "parse": (lambda r: order_webhook.parse(r, entry.config), True),
        "ledger": (lambda evs: ledger.run(evs, "order_webhook", LedgerState(), datetime.now(timezone.utc)), False),
    }
    return parts, requests, events


def _phone_setup(part: str, calls: int) -> tuple[Callable[[Any], Any], list[Any]]:
    """One of ``PHONE_PARTS``: the function, and a distinct input for each call (no answer is remembered)."""
    from gateway import identity
    from gateway.identity import phones
    from gateway.personal import digits_read_as_phone

    numbers = range(WARMUP + calls)
    if part == "order_id":
        return digits_read_as_phone, [str(1_000_000_123 + 7919 * n) for n in numbers]
    region, written = (None, "+49 170 {}") if part == "phone" else ("DE", "0170 {}")

    def read(text: str) -> None:
        phones.e164_of(text, region, bare_digits_have_country_code=False)
        identity.forget()

    return read, [written.format(1_000_000 + n) for n in numbers]


def child(scenario: str, part: str, calls: int) -> None:
    if part in PHONE_PARTS:
        fn, inputs = _phone_setup(part, calls)
    else:
        parts, requests, events = _setup(scenario, calls)
        fn, takes_request = parts[part]
        inputs = requests if takes_request else [events(r) for r in requests]
    for each in inputs[:WARMUP]:
        fn(each)
    functools.reduce(lambda _, each: fn(each), inputs[WARMUP:], None)  # counted


def count(scenario: str, part: str, calls: int) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"bench-parts-{part}-"))
    argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
            "--dump-instr=no", f"--callgrind-out-file={out}/callgrind.%p", f"--log-file={out}/valgrind.log",
            sys.executable, "-m", "bench.parts", "--child", "--scenario", scenario, "--parts", part,
            "--calls", str(calls)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(argv, check=True, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=1800)
    totals = [int(m.group(1)) for p in out.glob("callgrind.*")
              for m in [re.search(r"^totals: (\d+)", p.read_text(errors="replace"), re.MULTILINE)] if m]
    if not totals:
        raise RuntimeError(f"callgrind wrote no totals in {out}")
    return sum(totals) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="get", choices=[s for s in SCENARIOS if s != "beacon"])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    parser.add_argument("--calls", type=int, default=100, help="calls counted (default 100)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    wanted = [p for p in args.parts.split(",") if p]
    if args.scenario == "webhook" and args.parts == parser.get_default("parts"):
        wanted = list(WEBHOOK_PARTS)
    known = WEBHOOK_PARTS if args.scenario == "webhook" else PARTS
    unknown = [p for p in wanted if p not in known]
    if unknown:
        parser.error(f"--parts: {', '.join(unknown)} not among {', '.join(known)} for --scenario {args.scenario}")
    if args.child:
        child(args.scenario, wanted[0], args.calls)
        return 0
    why = callgrind.missing()
    if why is not None:
        print(f"bench.parts: {why}", file=sys.stderr)
        return 2
    for part in wanted:
        figure = count(args.scenario, part, args.calls)
        print(f"{args.scenario} {part}: {figure:,.0f} instructions per call", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
