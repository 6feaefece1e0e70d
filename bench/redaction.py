"""``python -m bench.redaction``: what consent costs per event, granted and denied, in microseconds.

The events are GA4 hits parsed by the GA4 client (a plain page view and a
purchase whose page URL, title and parameters hold an email address, a phone
number and a digest), run through ``ConsentPolicy.apply`` as the pipeline
runs it. ``apply`` changes its event, so each run gets fresh deep copies,
made before the clock starts. Small and single-threaded:
it says what the redaction pass adds to a hit, not what the server sustains.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import time
import timeit
from datetime import datetime, timezone
from urllib.parse import quote

from clients import ga4
from gateway.client import RawRequest
from gateway.config import load_container_text
from gateway.consent import ConsentPolicy
from gateway.event import Event, Source

CONTAINER = """
clients:
  - type: ga4
storage:
  url: sqlite:///unused.db
"""
GRANTED = "gcs=G111&gcd=13r3r3r2r5l1"
DENIED = "gcs=G100&gcd=13p3p3p2p5l1"
PAGE_VIEW = ("v=2&tid=G-ABC123XYZ&cid=1234567890.1732360000&sid=1732360000&sct=1&_p=1732360000123&en=page_view"
             "&dl=https%3A%2F%2Fshop.example%2Fproducts%2Fmug%3Fgclid%3DCj0KCQ&dt=Blue%20Mug&ul=en-us&_et=1200")
EMAIL = "jane.doe@example.com"
PURCHASE = (
    "v=2&tid=G-ABC123XYZ&cid=1234567890.1732360000&sid=1732360000&sct=1&_p=1732360000123&en=purchase&cu=EUR"
    f"&dl={quote(f'https://shop.example/thanks?order=1001&email={EMAIL}&tel=415.555.0107', safe='')}"
    f"&dt={quote(f'Thank you {EMAIL}')}&ep.transaction_id=1001&epn.value=49.9"
    f"&ep.hem={hashlib.sha256(EMAIL.encode()).hexdigest()}&ep.note=call%20415.555.0107"
    "&pr1=idSKU-1~nmBlue%20Mug~pr24.95~qt2"
)


def parse(query: str) -> Event:
    raw = RawRequest("GET", "/g/collect", query, {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0"},
                     b"", "203.0.113.7", datetime(2026, 12, 6, tzinfo=timezone.utc))
    (event,) = ga4.parse(raw, ga4.Config(type="ga4")).events
    event.source = Source(client="ga4", authenticated=False)
    return event


def per_event_us(policy: ConsentPolicy, event: Event, number: int, repeat: int) -> float:
    """CPU microseconds of ``policy.apply`` on one event: best of ``repeat`` timeit runs over ``number`` fresh copies.

    timeit with the process's CPU clock rather than the wall clock, so other work on a shared machine
    counts for less; the copies are made in the setup, before the clock starts.
    """
    namespace = {"policy": policy, "event": event, "number": number, "deepcopy": copy.deepcopy}
    timer = timeit.Timer("apply(next(copies))", setup="copies = iter([deepcopy(event) for _ in range(number)])"
                         "\napply = policy.apply", timer=time.process_time, globals=namespace)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redaction", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=2000, help="applications per timing (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings, the best is kept (default 5)")
    args = parser.parse_args(argv)
    policy = ConsentPolicy.for_container(load_container_text(CONTAINER, {}))
    print(f"{'event':<34}{'granted µs':>12}{'denied µs':>12}")
    for name, query in (("page view", PAGE_VIEW), ("purchase with personal data", PURCHASE)):
        granted = per_event_us(policy, parse(f"{query}&{GRANTED}"), args.number, args.repeat)
        denied = per_event_us(policy, parse(f"{query}&{DENIED}"), args.number, args.repeat)
        print(f"{name:<34}{granted:>12.1f}{denied:>12.1f}")


if __name__ == "__main__":
    main()
