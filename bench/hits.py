"""The requests the benchmark sends: realistic payloads, each made unique by a sequence number.

A ``Hit`` is a request template whose path and body hold ``{n}``; every
request sent gets its own ``n``, so no two are the same visitor, event or
order. That matters for the committed-count check: the outbox deduplicates on
idempotency keys (and webhooks on their request key), so repeating one
request would make "2xx count == items committed" false for a good reason.
The wrk Lua script (``wrk.lua``) renders the same template in the same way.

The GA4 hit is ``tests/fixtures/ga4/page_view_get_granted.json`` with the
user-agent client hints and timing parameters gtag.js adds (31 parameters),
the browser's usual headers and the ``_ga`` / ``_fbp`` cookies. The webhook is
``tests/fixtures/webhooks/order_created.json``, signed with ``WEBHOOK_SECRET``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
ORIGIN = "https://shop.example"

_BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Accept": "*/*",
    "Accept-Language": "de-DE,de;q=0.9,en;q=0.8",
    "Accept-Encoding": "gzip, deflate, br, zstd",
    "Referer": "https://shop.example/",
    "X-Forwarded-For": "203.0.113.7",  # the gateway sits behind a proxy on 127.0.0.1 (trusted_proxies)
}
_COOKIE = "_ga=GA1.1.{n}.1732360000; _fbp=fb.1.1732360000000.{n}; _ga_ABC123XYZ=GS1.1.1732360000.3.1.1732360100.0.0.0"


@dataclass(frozen=True, slots=True)
class Hit:
    name: str
    method: str
    path: str  # with {n}
    headers: dict[str, str] = field(default_factory=dict)  # values may hold {n}
    body: str = ""  # with {n}
    secret: str | None = None  # sign the body: X-Signature: sha256=<hex HMAC-SHA256>

    def render(self, n: int) -> tuple[str, dict[str, str], bytes]:
        """Path, headers and body of request number ``n``."""
        seq = str(n)
        body = self.body.replace("{n}", seq).encode()
        headers = {k: v.replace("{n}", seq) for k, v in self.headers.items()}
        if self.secret is not None:
            headers["X-Signature"] = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return self.path.replace("{n}", seq), headers, body

    def raw(self, n: int, host: str) -> bytes:
        """Request number ``n`` as HTTP/1.1 bytes, keep-alive."""
        path, headers, body = self.render(n)
        lines = [f"{self.method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or self.method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


GA4_PAGE_VIEW = Hit(
    "GET /g/collect",
    "GET",
    "/g/collect?v=2&tid=G-ABC123XYZ&gtm=45je5b10v9123456789za200&_p=1732360000123&gcs=G111&gcd=13r3r3r2r5l1"
    "&npa=0&dma=1&dma_cps=syphamo&cid={n}.1732360000&ul=de-de&sr=1920x1080&uaa=x86&uab=64&uamb=0&uap=Windows"
    "&uapv=15.0.0&uaw=0&pscdl=noapi&_eu=AAAI&_s=1&sid=1732360000&sct=3&seg=1"
    "&dl=https%3A%2F%2Fshop.example%2Fmug%3Fgclid%3DCj0KCQexample-gclid%26utm_source%3Dgoogle"
    "&dr=https%3A%2F%2Fwww.google.com%2F&dt=Blue%20Mug&en=page_view&_ss=1&tfd=1523&_et=5",
    {**_BROWSER_HEADERS, "Cookie": _COOKIE},
)

_BATCH_LINES = [
    "en=view_item&_s=2&cu=EUR&pr1=idSKU-123~nmBlue%20Mug~brAcme~caKitchen~pr12.5~qt1&epn.value=12.5&_et=3100",
    "en=add_to_cart&_s=3&cu=EUR&pr1=idSKU-123~nmBlue%20Mug~pr12.5~qt2~k0color~v0blue&epn.value=25&_c=1&_et=900",
    "en=view_cart&_s=4&cu=EUR&pr1=idSKU-123~nmBlue%20Mug~pr12.5~qt2&epn.value=25&_et=2400",
    "en=begin_checkout&_s=5&cu=EUR&pr1=idSKU-123~nmBlue%20Mug~pr12.5~qt2&epn.value=25&ep.coupon=SPRING&_et=5200",
    "en=scroll&_s=6&epn.percent_scrolled=90&_et=7000",
]


def _ga4_batch(events: int) -> Hit:
    """gtag.js's batched POST: shared parameters in the query, ``events`` body lines (the five above, repeated)."""
    lines = (_BATCH_LINES * (events // len(_BATCH_LINES) + 1))[:events]
    return Hit(
        f"POST /g/collect x{events}",
        "POST",
        "/g/collect?v=2&tid=G-ABC123XYZ&gtm=45je5b10v9123456789za200&_p=1732360000123&gcs=G111&gcd=13r3r3r2r5l1"
        "&npa=0&dma=1&cid={n}.1732360000&ul=de-de&sr=1920x1080&sid=1732360000&sct=3&seg=1"
        "&dl=https%3A%2F%2Fshop.example%2Fmug&dt=Blue%20Mug&richsstsse",
        {**_BROWSER_HEADERS, "Cookie": _COOKIE, "Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
        "\r\n".join(lines),
    )


GA4_BATCH = _ga4_batch(5)
GA4_BATCH_20 = _ga4_batch(20)


def _ga4_items(count: int) -> Hit:
    """The page_view's request as a view_item_list of ``count`` items, each as gtag.js encodes one (``pr<i>``)."""
    items = "".join(f"&pr{i}=idSKU-{1000 + i}~nmMug%20No.%20{i}~brAcme~caKitchen~c2Mugs~vaBlue~pr12.5~qt1~lp{i}"
                    "~lnSearch%20results" for i in range(1, count + 1))
    return Hit(f"GET /g/collect, {count} items", "GET",
               GA4_PAGE_VIEW.path.replace("&en=page_view", "&en=view_item_list" + items), GA4_PAGE_VIEW.headers)


GA4_ITEMS_10 = _ga4_items(10)
GA4_ITEMS_50 = _ga4_items(50)

BEACON = Hit(
    "POST /collect",
    "POST",
    "/collect",
    {**_BROWSER_HEADERS, "Cookie": _COOKIE, "Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
    orjson.dumps({
        "event_name": "generate_lead",
        "client_id": "{n}.1732360000",
        "event_id": "lead-{n}",
        "page_location": "https://shop.example/contact?gclid=Cj0KCQexample-gclid",
        "value": 25.0,
        "currency": "EUR",
        "user_data": {"email_address": "jane.doe@example.com", "phone_number": "+49 170 1234567"},
        "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
                    "ad_personalization": "denied"},
        "form_id": "contact",
    }).decode(),
)


def _order_webhook() -> Hit:
    fixture = orjson.loads((ROOT / "tests/fixtures/webhooks/order_created.json").read_bytes())
    fixture["order_id"] = "ORD-B{n}"
    return Hit(
        "POST /webhooks/order-update",
        "POST",
        "/webhooks/order-update",
        {"Content-Type": "application/json", "User-Agent": "shop-backend/2.3"},
        orjson.dumps(fixture, option=orjson.OPT_INDENT_2).decode(),
        secret=WEBHOOK_SECRET,
    )


ORDER_WEBHOOK = _order_webhook()

# A purchase with a gclid: what a google_ads_click_conversion tag turns into a ClickConversion.
GA4_PURCHASE = Hit(
    "GET /g/collect purchase",
    "GET",
    "/g/collect?v=2&tid=G-ABC123XYZ&gcs=G111&gcd=13r3r3r2r5l1&cid={n}.1732360000&sid=1732360000&sct=1"
    "&en=purchase&cu=EUR&ep.transaction_id=B-{n}&epn.value=49.9"
    "&dl=https%3A%2F%2Fshop.example%2Fthanks%3Fgclid%3DCj0KCQbench-{n}",
    dict(_BROWSER_HEADERS),
)
