"""The /debug page in a real browser: headless Chromium from Debian's packages, driven by Selenium.

The gateway runs under uvicorn on 127.0.0.1; the test logs in through the
form, sends hits while the page is open, and checks what a person would see:
the hit appears in the live list, its detail shows the consent decision and
the outgoing body, no personal data is anywhere in the page, and Explain
works. A screenshot is saved to ``tests/artifacts/debugger.png`` on every run
(and to ``docs/debugger.png`` when ``GATEWAY_DOCS_SCREENSHOT=1``, to refresh
the picture in docs/debugging.md), and one per laptop screen size
(``debugger-1280x800.png``, ``debugger-1920x1080.png``) where the test also
checks that nothing in the list or the detail is cut off.

Needs ``apt-get install chromium chromium-driver`` and ``pip install
selenium``; without them the tests are skipped, saying which is missing.
Selenium Manager never runs: the driver's and the browser's paths are given,
and ``SE_OFFLINE`` forbids it the network anyway.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tests.conftest import container_from
from tests.gateway.debug.support import EMAIL, PHONE, TOKEN, debug_container, signed
from tests.running import ROOT, serve_in_thread

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "tests" / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1440,1000"]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: apt-get install chromium chromium-driver"
    if not Path(CHROMEDRIVER).exists():
        return f"{CHROMEDRIVER} not found: apt-get install chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install selenium"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="gateway-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def post(base: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(f"{base}{path}", data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "text/plain", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["X-Gateway-Trace"]


def get(base: str, path: str) -> str:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        return response.headers["X-Gateway-Trace"]


def test_debugger_page_shows_a_live_hit_end_to_end_without_personal_data(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 10)
    container = container_from(debug_container(tmp_path / "g.db"), tmp_path / "g.db")
    with serve_in_thread(container) as base:
        browser.get(f"{base}/debug")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "list")))
        assert "gateway_debug" not in browser.execute_script("return document.cookie")  # HttpOnly

        # Hits sent while the page is open: a page view, a refused beacon, a purchase with user data.
        get(base, "/g/collect?v=2&tid=G-TEST&cid=555.1732360000&en=page_view&gcs=G100&gcd=13p3p3p2p5l1"
                  "&dl=https%3A%2F%2Fshop.example%2F")
        with pytest.raises(urllib.error.HTTPError):
            post(base, "/collect", {"value": 3})
        trace_id = post(base, "/collect", {
            "event_name": "purchase", "client_id": "555.1732360000", "transaction_id": "ORD-10492", "value": 59.9,
            "currency": "EUR", "gclid": "Cj0-browser-test", "consent": {"ad_user_data": "granted", "ad_storage": "granted"},
            "user_data": {"email_address": EMAIL, "phone_number": PHONE},
        }, {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
        row = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'tr[data-trace="{trace_id}"]')))
        row.click()
        detail = browser.find_element(By.ID, "detail")
        wait.until(lambda _: "events:ingest" in detail.text and "delivered" in detail.text)

        text = detail.text
        assert "consent signal" in text and "ad_user_data" in text and "json" in text
        assert "big_purchase" in text and "all[1]: value gte 100" in text  # the first failing condition
        assert "https://hooks.example/events" in text
        assert "j***@g***.com" in text and "+49 *** ** 67" in text
        page = browser.page_source
        for secret in ("jane.doe", "gmail.com", "23456767", "151 2345", TOKEN):
            assert secret not in page, secret

        ARTIFACTS.mkdir(exist_ok=True)
        browser.execute_script("document.querySelector('#detail .run').scrollIntoView()")
        browser.save_screenshot(str(ARTIFACTS / "debugger.png"))
        if os.environ.get("GATEWAY_DOCS_SCREENSHOT") == "1":
            browser.save_screenshot(str(ROOT / "docs" / "debugger.png"))

        # Explain: the example request in the form, through the current container.
        browser.find_element(By.CSS_SELECTOR, 'button[data-tab="explain"]').click()
        browser.find_element(By.ID, "explain-run").click()
        result = browser.find_element(By.ID, "explain-result")
        wait.until(lambda _: "explain: nothing was stored or sent" in result.text)
        assert "gads_purchase" in result.text and "events:ingest" in result.text
        browser.save_screenshot(str(ARTIFACTS / "debugger-explain.png"))

        # Script errors and CSP violations; the login form's own 401 is the one expected network error.
        severe = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert [m for m in severe if "/debug - Failed to load resource" not in m] == []


def _log_in(browser: Any, base: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 10)
    browser.get(f"{base}/debug")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.ID, "list")))
    return wait


def _viewport(browser: Any, width: int, height: int) -> None:
    """Make the page's own viewport (not the window around it) ``width`` x ``height``."""
    browser.set_window_size(width, height)
    inner = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    browser.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]") == [width, height]


# What a person would see cut off: the page wider than the window, a list or detail that scrolls
# sideways, a cell of a row beyond the list's right edge, panes below the window's bottom, a detail
# too narrow to read.
_LAYOUT = """
const pane = document.querySelector('.list-pane'), detail = document.getElementById('detail');
const right = pane.getBoundingClientRect().right;
const cut = [...document.querySelectorAll('#list tbody tr')].flatMap((row) =>
  [...row.cells].filter((cell) => cell.getBoundingClientRect().right > right + 1).map((cell) => row.dataset.trace + ' ' + cell.cellIndex));
return {
  page: document.documentElement.scrollWidth - window.innerWidth,
  list: pane.scrollWidth - pane.clientWidth,
  cut_cells: cut,
  detail: detail.scrollWidth - detail.clientWidth,
  detail_width: Math.round(detail.getBoundingClientRect().width),
  below: Math.max(pane.getBoundingClientRect().bottom, detail.getBoundingClientRect().bottom) - window.innerHeight,
};
"""


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1920, 1080)])
def test_the_list_and_a_request_fit_a_laptop_screen_with_nothing_cut_off(tmp_path, browser, width, height):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    container = container_from(debug_container(tmp_path / "g.db"), tmp_path / "g.db")
    with serve_in_thread(container) as base:
        _viewport(browser, width, height)
        wait = _log_in(browser, base)
        get(base, "/g/collect?v=2&tid=G-TEST&cid=555.1&en=view_item_list_with_a_long_custom_event_name"
                  "&dl=https%3A%2F%2Fshop.example%2Fcategory%2Fshoes%3Fgclid%3DCj0-a-rather-long-click-identifier")
        body = orjson.dumps({"order_id": "ORD-2026-000042-LONG-ORDER-NUMBER", "event": "order_paid",
                             "order_value": 120.0, "currency": "EUR"})
        request = urllib.request.Request(f"{base}/webhooks/order-update", data=body, method="POST", headers=signed(body))
        with urllib.request.urlopen(request, timeout=10) as response:
            order_trace = response.headers["X-Gateway-Trace"]
        trace_id = post(base, "/collect", {
            "events": [{"event_name": name, "transaction_id": "ORD-10492", "value": 159.9, "currency": "EUR", "gclid": "Cj0-fit",
                        "consent": {"ad_user_data": "granted", "ad_storage": "granted"}}
                       for name in ("purchase", "add_payment_info", "begin_checkout")]})
        for trace in (order_trace, trace_id):
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-trace="{trace}"]')))
        browser.find_element(By.CSS_SELECTOR, f'tr[data-trace="{trace_id}"]').click()
        detail = browser.find_element(By.ID, "detail")
        wait.until(lambda _: "events:ingest" in detail.text)

        layout = browser.execute_script(_LAYOUT)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / f"debugger-{width}x{height}.png"))

    assert layout == {"page": 0, "list": 0, "cut_cells": [], "detail": 0,
                      "detail_width": layout["detail_width"], "below": min(layout["below"], 0)}
    assert layout["detail_width"] >= 480


def test_a_filter_that_matches_nothing_says_so_and_offers_to_clear_it(tmp_path, browser):
    from selenium.webdriver.common.by import By

    container = container_from(debug_container(tmp_path / "g.db"), tmp_path / "g.db")
    with serve_in_thread(container) as base:
        wait = _log_in(browser, base)
        trace_id = get(base, "/g/collect?v=2&tid=G-TEST&cid=555.1&en=page_view")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-trace="{trace_id}"]'))

        browser.find_element(By.ID, "f-event").send_keys("no_such_event")
        empty = browser.find_element(By.ID, "list-empty")
        wait.until(lambda _: empty.is_displayed() and "match" in empty.text)
        said = empty.text
        empty.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-trace="{trace_id}"]'))
        cleared = browser.find_element(By.ID, "f-event").get_attribute("value")

    assert said.startswith("No request kept in memory matches these filters")
    assert "No requests yet" not in said
    assert cleared == ""
