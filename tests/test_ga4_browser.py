"""GA4 from a real browser: a third-party GA4 library in headless Chromium, through the gateway, to the fake GA4.

The library is ``@minimal-analytics/ga4`` (npm, MIT): a maintained drop-in
for gtag.js that writes gtag.js's own ``/g/collect`` wire format itself
(``v``, ``tid``, ``_p``, ``cid``, ``sid``, ``sct``, ``seg``, ``_s``, ``_fv``,
``_ss``, ``_dbg``, ``_et``, ``ep.*``/``epn.*``) and sends it with
``navigator.sendBeacon`` to a configurable endpoint, as gtag.js does to a
server container. gtag.js itself cannot be had here (it is served by
Google, not by a registry), and a Measurement Protocol library would not
exercise the gtag.js wire format the gateway takes. The library knows
nothing of consent, so a hit's ``gcs``/``gcd`` are added as event
parameters, which it appends to the hit like any other.

The page and the gateway share one origin, ``http://localhost:<port>``, as a
first-party subdomain would: Chromium treats ``http://localhost`` as a
secure context, so it keeps the ``Secure`` cookies the gateway sets without
TLS. A small ASGI app in front of the gateway serves the page and the
library, and records each hit exactly as the browser sent it.

Needs Chromium, chromedriver and selenium (as the debugger's browser test),
and the library installed by ``npm ci --prefix tests/js`` (``.ci/run`` does);
without them the tests are skipped, saying which is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote

import pytest

from tests.conftest import container_from
from tests.fakes.ga4 import FakeGA4
from tests.fakes.threaded import ThreadedServer
from tests.gateway.debug.test_browser import _missing, browser  # noqa: F401 - the Chromium fixture
from tests.running import ROOT, serve_in_thread

LIBRARY = ROOT / "tests" / "js" / "node_modules" / "@minimal-analytics" / "ga4" / "dist" / "index.js"
TID = "G-ABC123XYZ"
FOUR_HUNDRED_DAYS = 400 * 86400


def _skip_reason() -> str | None:
    if not LIBRARY.exists():
        return f"{LIBRARY.relative_to(ROOT)} not found: npm ci --prefix tests/js"
    return _missing()


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")

PAGE = f"""<!doctype html>
<html><head><title>Blue Mug</title>
<script>window.minimalAnalytics = {{trackingId: "{TID}", analyticsEndpoint: "/g/collect", defineGlobal: true}};</script>
<script src="/js/ga4.js"></script>
</head><body><h1>Blue Mug</h1><button id="buy" name="buy">Buy</button></body></html>
""".encode()


class Site:
    """The shop's page and the library on the gateway's origin; every other request goes to the gateway."""

    def __init__(self) -> None:
        self.gateway: Any = None
        self.hits: list[dict[str, str]] = []  # each /g/collect query as the browser sent it, decoded

    def around(self, gateway: Any) -> "Site":
        self.gateway = gateway
        return self

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in ("/shop/mug", "/js/ga4.js"):
            page = scope["path"] == "/shop/mug"
            body = PAGE if page else LIBRARY.read_bytes()
            kind = b"text/html; charset=utf-8" if page else b"text/javascript"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"] == "/g/collect":
            self.hits.append(dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)))
        await self.gateway(scope, receive, send)


def container(db: Path, fake_url: str, cookies: str = "") -> Any:
    return container_from(f"""
consent:
  default: {{ad_storage: denied, analytics_storage: denied, ad_user_data: denied, ad_personalization: denied}}
delivery:
  poll_interval: 20ms
  backoff_initial: 10ms
clients:
  - type: ga4
{cookies}
destinations:
  ga4:
    collect_base: {fake_url}
triggers:
  all_events: {{all: []}}
tags:
  - name: ga4_forward
    type: ga4
    trigger: all_events
""", db)


@pytest.fixture
def fake() -> Iterator[tuple[FakeGA4, ThreadedServer]]:
    ga = FakeGA4()
    with ThreadedServer(ga.app()) as server:
        yield ga, server


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within 10s")
        time.sleep(0.05)


def local(base: str) -> str:
    """The same server under the name localhost, which Chromium treats as a secure context."""
    return base.replace("127.0.0.1", "localhost")


def test_a_third_party_ga4_librarys_hits_reach_google_intact_with_consent_ip_and_user_agent(tmp_path, browser, fake):
    ga, server = fake
    site = Site()
    with serve_in_thread(container(tmp_path / "g.db", server.url), wrap=site.around) as base:
        browser.get(f"{local(base)}/shop/mug")
        agent = browser.execute_script("return navigator.userAgent")
        # 1: consent granted, with the shop's own parameters; 2: the library's click event, no consent signal,
        # so the container's default (denied) makes it a cookieless ping; 3: ad_user_data denied, with an
        # email in a custom parameter that must not leave.
        browser.execute_script("window.track({type: 'view_item', debug: true, event: {gcs: 'G111', gcd: '13r3r3r2r5l1',"
                               " cu: 'EUR', 'epn.value': 12.5, 'ep.item_color': 'blue'}})")
        browser.find_element("id", "buy").click()
        browser.execute_script("window.track({type: 'generate_lead', event: {gcs: 'G111', gcd: '13r3r3p2r5l1',"
                               " 'ep.customer_email': 'jane.doe@example.com'}})")
        wait_for(lambda: len(ga.events(TID)) >= 3)

    sent = site.hits
    received = ga.events(TID)
    assert [h["en"] for h in sent] == [e["en"] for e in received] == ["view_item", "click", "generate_lead"]
    assert ga.problems() == [] and {hit.user_agent for hit in ga.hits} == {agent}
    assert all(e["_uip"] == "127.0.0.1" for e in received)

    # Consent granted: every parameter the library sent arrives as it sent it.
    view = received[0]
    assert {k: view.get(k) for k in sent[0]} == sent[0]
    assert {"_dbg", "_fv", "_ss", "seg", "sid", "sct", "_p", "cid", "ul", "sr", "dl", "dt"} <= set(sent[0])

    # No consent signal, default denied: a cookieless ping, the consent GA4 must apply written out.
    click = received[1]
    assert (click["gcs"], click["gcd"]) == ("G100", "13p3p3p2p5l1")
    assert not {"sid", "sct", "seg", "_fv", "_ss"} & set(click) and click["cid"] != sent[1]["cid"]
    assert (click["_et"], click["ep.button_text"]) == (sent[1]["_et"], "Buy")

    # ad_user_data denied: the email is gone, the rest is there.
    lead = received[2]
    assert "ep.customer_email" not in lead and "jane" not in str(ga.hits)
    assert {k: lead.get(k) for k in sent[2] if k != "ep.customer_email"} == {
        k: v for k, v in sent[2].items() if k != "ep.customer_email"}


COOKIES = """cookies:
  fpid: {enabled: true, migrate_from_ga: false}
  meta: {enabled: true}"""


def test_fpid_fbp_and_fbc_are_set_with_consent_and_expired_after_a_denial(tmp_path, browser, fake):
    ga, server = fake
    with serve_in_thread(container(tmp_path / "g.db", server.url, COOKIES), wrap=Site().around) as base:
        browser.get(f"{local(base)}/shop/mug?fbclid=IwAR-browser-test")
        started = time.time()
        browser.execute_script("window.track({type: 'page_view', event: {gcs: 'G111', gcd: '13r3r3r2r5l1'}})")
        wait_for(lambda: {"FPID", "_fbp", "_fbc"} <= {c["name"] for c in browser.get_cookies()})
        set_cookies = {c["name"]: c for c in browser.get_cookies()}
        page_cid = browser.execute_script("return localStorage.getItem('clientId')")
        wait_for(lambda: len(ga.events(TID)) >= 1)

        browser.execute_script("window.track({type: 'page_view', event: {gcs: 'G100', gcd: '13p3p3p2p5l1'}})")
        wait_for(lambda: not {"FPID", "_fbp", "_fbc"} & {c["name"] for c in browser.get_cookies()})
        wait_for(lambda: len(ga.events(TID)) >= 2)

    flags = {name: (c["httpOnly"], c["secure"], c["sameSite"], c["path"]) for name, c in set_cookies.items()
             if name in ("FPID", "_fbp", "_fbc")}
    assert flags == {"FPID": (True, True, "Lax", "/"), "_fbp": (False, True, "Lax", "/"), "_fbc": (False, True, "Lax", "/")}
    for name in ("FPID", "_fbp", "_fbc"):
        assert abs(set_cookies[name]["expiry"] - (started + FOUR_HUNDRED_DAYS)) < 120, name
    assert set_cookies["_fbc"]["value"].startswith("fb.0.") and set_cookies["_fbc"]["value"].endswith(".IwAR-browser-test")
    assert set_cookies["_fbp"]["value"].startswith("fb.0.")

    # The FPID's id is the client id GA4 gets while consent holds; the page's own id stays the page's.
    fpid = set_cookies["FPID"]["value"]
    assert fpid.startswith("FPID2.1.")
    granted, denied = ga.events(TID)
    assert granted["cid"] == unquote(fpid).split(".", 2)[2] != page_cid
    assert denied["cid"] not in (granted["cid"], page_cid)
