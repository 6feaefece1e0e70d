"""GA4 over real HTTP: gtag.js hits and order webhooks into the real gateway, out at the fake GA4.

The gateway runs under uvicorn on the test's own loop, beside the fake, so the
test sees what Google would receive: the page's hits with every parameter,
the visitor's IP and user agent, retried when Google is down and
dead-lettered when it refuses; and the order system's refunds as one
Measurement Protocol refund each, however often a webhook is redelivered.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson

from gateway.app import create_app
from tests.conftest import FIXTURES, container_from, load_fixture
from tests.fakes.ga4 import FakeGA4
from tests.running import serve_app_in_loop, wait_until

WEBHOOKS = FIXTURES / "webhooks"
HEADERS = load_fixture("webhooks", "headers.json")
SECRET = b"fixture-secret-0123456789"
TID = "G-ABC123XYZ"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def container_yaml(fake: FakeGA4) -> str:
    return f"""
server:
  trusted_proxies: ["127.0.0.1/32"]
delivery:
  backoff_initial: 10ms
  backoff_max: 50ms
  poll_interval: 20ms
  max_attempts: 3
orders:
  sweep_interval: 50ms
clients:
  - type: ga4
  - type: order_webhook
    secret: fixture-secret-0123456789
  - type: shopify
    secret: fixture-secret-0123456789
destinations:
  ga4:
    collect_base: ${{GA4_COLLECT_BASE}}
triggers:
  browser_hits:
    all: [{{field: extra.measurement_id, op: exists, value: true}}]
  refund_or_cancel:
    any: [{{field: event_name, op: in, value: [refund, order_cancelled]}}]
tags:
  - name: ga4_forward
    type: ga4
    trigger: browser_hits
  - name: ga4_refunds
    type: ga4_refund
    trigger: refund_or_cancel
    measurement_id: {TID}
    api_secret: ${{GA4_API_SECRET}}
"""


@contextlib.asynccontextmanager
async def gateway_with_fake(tmp_path: Path) -> AsyncIterator[tuple[str, FakeGA4, aiohttp.ClientSession, Any]]:
    async with FakeGA4(api_secrets={TID: "test-secret"}) as fake:
        env = {"GA4_COLLECT_BASE": fake.url, "GA4_API_SECRET": "test-secret"}
        app = create_app(container_from(container_yaml(fake), tmp_path / "g.db", env))
        async with serve_app_in_loop(app) as base, aiohttp.ClientSession() as session:
            yield base, fake, session, app.state.gateway


async def post_fixture(session: aiohttp.ClientSession, base: str, name: str, **headers: str) -> int:
    body = (WEBHOOKS / name).read_bytes()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()  # signed here, with this test's secret
    async with session.post(base + "/webhooks/order-update", data=body,
                            headers={**HEADERS[name], "X-Signature": signature, **headers}) as response:
        return response.status


async def post_shopify(session: aiohttp.ClientSession, base: str, name: str, webhook_id: str) -> int:
    body = (WEBHOOKS / name).read_bytes()
    digest = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    headers = {**HEADERS[name], "X-Shopify-Hmac-Sha256": digest, "X-Shopify-Webhook-Id": webhook_id}
    async with session.post(base + "/webhooks/shopify", data=body, headers=headers) as response:
        return response.status


async def drained(gateway: Any) -> bool:
    """Everything accepted so far is delivered (or dead): nothing more will reach the fake."""
    return await gateway.storage.pending_count() == 0


def refunds(fake: FakeGA4) -> list[tuple[str, float, str]]:
    return [(e["params"]["transaction_id"], e["params"]["value"], e["params"]["currency"]) for e in fake.mp_events(TID)]


async def test_a_refund_webhook_is_one_ga4_refund_whatever_is_redelivered(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session, gateway):
        assert await post_fixture(session, base, "order_created.json") == 200
        for _ in range(3):  # the order system retries: the same signed body, three times
            assert await post_fixture(session, base, "partial_refund.json") == 200
        assert await post_fixture(session, base, "partial_refund_rest.json") == 200
        assert await post_fixture(session, base, "partial_refund_rest.json") == 200

        await wait_until(lambda: drained(gateway))

    assert refunds(fake) == [("ORD-10492", 30.0, "EUR"), ("ORD-10492", 99.95, "EUR")]
    assert len(fake.mp_requests) == 2  # nothing sent twice
    assert all(not r.messages for r in fake.mp_requests)  # the validation checks find nothing


async def test_a_shopify_refund_counts_once_even_under_another_webhook_id(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session, gateway):
        assert await post_shopify(session, base, "shopify_orders_create.json", "wh-create") == 200
        for webhook_id in ("wh-refund", "wh-refund", "wh-refund-again"):
            assert await post_shopify(session, base, "shopify_refunds_create.json", webhook_id) == 200
        await wait_until(lambda: drained(gateway))

    assert refunds(fake) == [("5801234567890", 31.93, "USD")]
    assert len(fake.mp_requests) == 1


async def test_a_browser_refund_hit_never_becomes_a_measurement_protocol_refund(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session, _):
        assert await post_fixture(session, base, "order_created.json") == 200
        forged = f"/g/collect?v=2&tid={TID}&cid=1.2&gcs=G111&en=refund&ep.transaction_id=ORD-10492&epn.value=129.95&cu=EUR"
        async with session.get(base + forged, headers={"User-Agent": UA}) as response:
            assert response.status == 204
        await wait_until(lambda: len(fake.events(TID)) >= 1)

    assert fake.mp_events(TID) == []  # forwarded as the page's own hit, as sGTM would, and nothing more
    assert [e["en"] for e in fake.events(TID)] == ["refund"]


async def test_captured_hits_reach_google_with_every_parameter_the_ip_and_the_user_agent(tmp_path):
    case = load_fixture("ga4", "batched_post.json")
    async with gateway_with_fake(tmp_path) as (base, fake, session, _):
        headers = {**case["headers"], "X-Forwarded-For": "198.51.100.23"}
        async with session.post(f"{base}/g/collect?{case['query']}", data=case["body"].encode(), headers=headers) as response:
            assert response.status == 204
        await wait_until(lambda: len(fake.events(TID)) >= 2)

    [hit] = fake.hits  # one page, one POST, two lines: as gtag.js sent it
    assert hit.user_agent == case["headers"]["User-Agent"] and fake.problems() == []
    view, cart = hit.events
    assert {k: view[k] for k in ("en", "cid", "sid", "sct", "seg", "_p", "_s", "_et", "dl", "dt", "cu", "epn.value",
                                 "_uip", "gcs", "gcd", "npa")} == {
        "en": "view_item", "cid": "1234567890.1732360000", "sid": "1732360000", "sct": "3", "seg": "1",
        "_p": "1732360000123", "_s": "2", "_et": "3100", "dl": "https://shop.example/mug", "dt": "Blue Mug",
        "cu": "EUR", "epn.value": "12.5", "_uip": "198.51.100.23", "gcs": "G111", "gcd": "13r3r3r2r5l1", "npa": "0",
    }
    assert (cart["en"], cart["_s"], cart["_c"], cart["_et"]) == ("add_to_cart", "3", "1", "900")
    assert "richsstsse" in view


async def test_google_down_is_retried_and_a_refused_hit_is_dead_lettered(tmp_path):
    async with gateway_with_fake(tmp_path) as (base, fake, session, gateway):
        fake.fail_next(503, times=2, retry_after="0")
        async with session.get(f"{base}/g/collect?v=2&tid={TID}&cid=1.2&gcs=G111&en=page_view",
                               headers={"User-Agent": UA}) as response:
            assert response.status == 204
        await wait_until(lambda: len(fake.events(TID)) == 1)
        fake.fail_next(400, times=1)
        async with session.get(f"{base}/g/collect?v=2&tid={TID}&cid=1.2&gcs=G111&en=scroll",
                               headers={"User-Agent": UA}) as response:
            assert response.status == 204

        async def dead() -> bool:
            return len(await gateway.storage.list_dead_letters()) == 1

        await wait_until(dead)
        [letter] = await gateway.storage.list_dead_letters()

    assert fake.answered[:3] == [503, 503, 204]
    assert (letter.destination, letter.batch_key, letter.code, letter.attempts) == ("ga4", f"collect:{TID}", "http_400", 1)
    assert orjson.loads(orjson.dumps(letter.item))["line"].startswith("en=scroll")
