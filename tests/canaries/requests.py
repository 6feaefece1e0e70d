"""One purchase request per client, as its sender writes it, with canaries put into slots.

Every request is a purchase that makes every tag of the sample container
fire when consent allows it: a click id in the page URL (or the order's
landing page and meta data), an order id, a value and a currency, a page
and a user agent for Meta's website events. Consent is carried by the
request itself, in the client's own way: ``gcs``/``gcd`` for GA4, a
``consent`` object for the beacon and the generic webhook, note attributes
for Shopify and meta data for WooCommerce. The webhooks are signed over the
final body, after the canaries went in.

A *draft* is the request under construction; the slots of ``tests.canaries.slots``
write into it. ``Built`` is what goes on the wire, bytes exactly.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import orjson

SECRET = "canary-webhook-secret-0123456789"
ORIGIN = "https://shop.example"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
MEASUREMENT_ID = "G-CANARY1234"
CLIENTS = ("ga4_get", "ga4_post", "json_beacon", "order_webhook", "shopify", "woocommerce")
GA4_SAFE = "-_.!~*'()"  # what encodeURIComponent leaves alone, as gtag.js encodes


@dataclass
class Built:
    client: str
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _joined(old: Any, new: Any) -> Any:
    """A second canary in a field that already holds one: both, side by side."""
    return new if old is None else f"{old} {new}"


@dataclass
class Ga4Draft:
    """A gtag.js hit: parameters (``dl``/``dr`` kept as a base and appended query parameters) and headers."""

    post: bool
    params: dict[str, str]
    headers: dict[str, str]
    urls: dict[str, list[str]] = field(default_factory=lambda: {"dl": [], "dr": []})
    em: list[str] = field(default_factory=list)
    item_pieces: list[str] = field(default_factory=list)
    placed: set[str] = field(default_factory=set)

    def set(self, name: str, value: str) -> None:
        self.params[name] = _joined(self.params.get(name) if name in self.placed else None, value)
        self.placed.add(name)

    def header(self, name: str, value: str) -> None:
        self.headers[name] = _joined(self.headers.get(name) if name in self.placed else None, value)
        self.placed.add(name)


@dataclass
class JsonDraft:
    """A JSON body and headers; ``put`` writes at a path of keys, creating objects and lists on the way."""

    client: str
    body: dict[str, Any]
    headers: dict[str, str]
    placed: set[tuple[Any, ...]] = field(default_factory=set)

    def put(self, path: tuple[Any, ...], value: Any) -> None:
        node: Any = self.body
        for key, nxt in zip(path, path[1:]):
            if isinstance(node, list):
                while len(node) <= key:
                    node.append({} if not isinstance(nxt, int) else [])
                node = node[key]
            else:
                node = node.setdefault(key, [] if isinstance(nxt, int) else {})
        last = path[-1]
        if isinstance(node, list):
            while len(node) <= last:
                node.append(None)
        old = node[last] if path in self.placed else None
        node[last] = _joined(old, value)
        self.placed.add(path)

    def header(self, name: str, value: str) -> None:
        key = ("header", name)
        self.headers[name] = _joined(self.headers.get(name) if key in self.placed else None, value)
        self.placed.add(key)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# -- the baseline request of each client -----------------------------------------------------------


def draft(client: str, token: str, serial: int, granted: bool) -> Ga4Draft | JsonDraft:
    """The purchase request of ``client`` before any canary, consent all granted or all denied."""
    state = "granted" if granted else "denied"
    consent = dict.fromkeys(("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"), state)
    gclid = f"Cj0KCQcanary-{token}"
    value = round(10 + serial % 500 + 0.95, 2)
    headers = {"User-Agent": USER_AGENT}
    if client in ("ga4_get", "ga4_post", "json_beacon"):  # a browser behind the sample's trusted proxy
        headers["X-Forwarded-For"] = f"198.51.100.{serial % 250 + 1}"
    if client in ("ga4_get", "ga4_post"):
        params = {"v": "2", "tid": MEASUREMENT_ID, "cid": f"{100000 + serial}.1765000000", "en": "purchase",
                  "dt": "Thank you", "ep.transaction_id": f"T-{token}", "ep.event_id": f"E-{token}",
                  "epn.value": str(value), "cu": "EUR", "sid": "1765000000", "sct": "1",
                  "gcs": "G111" if granted else "G100", "gcd": "13v3v3v3v5l1" if granted else "13q3q3q3q5l1"}
        ga4 = Ga4Draft(client == "ga4_post", params, headers)
        ga4.urls["dl"].append(f"{ORIGIN}/checkout/thanks?gclid={gclid}")
        ga4.item_pieces += ["idSKU-1", "nmMug", f"pr{value}", "qt1"]
        return ga4
    if client == "json_beacon":
        body = {"event_name": "purchase", "transaction_id": f"T-{token}", "event_id": f"E-{token}", "value": value,
                "currency": "EUR", "page_location": f"{ORIGIN}/checkout/thanks?gclid={gclid}",
                "page_title": "Thank you", "items": [{"item_id": "SKU-1", "item_name": "Mug", "price": value,
                                                       "quantity": 1}], "consent": consent}
        return JsonDraft(client, body, headers | {"Origin": ORIGIN, "Content-Type": "application/json"})
    now = _now()
    if client == "order_webhook":
        body = {"order_id": f"ORD-{token}", "event": "order_created", "order_value": value, "currency": "EUR",
                "updated_at": now.isoformat(), "gclid": gclid, "event_id": f"OE-{token}", "consent": consent}
        return JsonDraft(client, body, headers | {"Content-Type": "application/json", "Idempotency-Key": f"IK-{token}"})
    if client == "shopify":
        order_id = 7100000000000 + serial
        body = {"id": order_id, "name": f"#{serial}", "created_at": now.isoformat(), "processed_at": now.isoformat(),
                "currency": "USD", "total_price": f"{value:.2f}", "source_name": "web",
                "landing_site": f"/products/mug?gclid={gclid}", "referring_site": "https://www.google.com/",
                "order_status_url": f"{ORIGIN}/orders/{order_id}/authenticate",
                "note_attributes": [{"name": k, "value": v} for k, v in consent.items()],
                "client_details": {"browser_ip": "203.0.113.7", "user_agent": USER_AGENT},
                "line_items": [{"id": 1, "sku": "SKU-1", "title": "Mug", "quantity": 1, "price": f"{value:.2f}"}]}
        return JsonDraft(client, body, headers | {
            "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": f"wh-{token}", "X-Shopify-Shop-Domain": "shop.example",
            "X-Shopify-API-Version": "2026-10"})
    if client == "woocommerce":
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S")
        body = {"id": 900000 + serial, "status": "processing", "currency": "EUR", "total": f"{value:.2f}",
                "date_created_gmt": stamp, "date_paid_gmt": stamp, "date_modified_gmt": stamp,
                "customer_ip_address": "198.51.100.42", "customer_user_agent": USER_AGENT,
                "meta_data": [{"id": 1, "key": "_gclid", "value": gclid}]
                + [{"id": 2 + i, "key": f"_{k}", "value": v} for i, (k, v) in enumerate(consent.items())],
                "line_items": [{"id": 1, "name": "Mug", "product_id": 1, "sku": "SKU-1", "quantity": 1,
                                "price": value}]}
        return JsonDraft(client, body, headers | {
            "Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "created",
            "X-WC-Webhook-Source": f"{ORIGIN}/", "X-WC-Webhook-Delivery-ID": f"dl-{token}"})
    raise ValueError(f"unknown client {client!r}")


# -- the order's end, for the ledger ------------------------------------------------------------------


def followup(d: JsonDraft, kind: str) -> JsonDraft:
    """The same order, canaries and all, refunded in full (``refund``) or cancelled (``cancellation``), by its order system.

    The ledger turns it into a retraction for Google Ads, a refund for GA4
    and Meta: the paths through which what the ledger kept of the purchase
    could travel on. A header that identifies the delivery gets a new value
    (``-2`` added, so a canary placed there stays), or it would be a redelivery.
    """
    out = copy.deepcopy(d)
    when = _now()
    if d.client == "order_webhook":
        out.body["event"] = "full_refund" if kind == "refund" else "cancelled"
        out.body["refund_id"] = f"RF-{out.body['event_id']}"
        out.body["updated_at"] = when.isoformat()
        out.headers["Idempotency-Key"] += "-2"
    elif d.client == "shopify":
        out.body["cancelled_at"] = when.isoformat()
        out.headers["X-Shopify-Topic"] = "orders/cancelled"
        out.headers["X-Shopify-Webhook-Id"] += "-2"
    elif d.client == "woocommerce":
        out.body["status"] = "refunded" if kind == "refund" else "cancelled"
        out.body["date_modified_gmt"] = when.strftime("%Y-%m-%dT%H:%M:%S")
        out.headers["X-WC-Webhook-Topic"] = "order.updated"
        out.headers["X-WC-Webhook-Event"] = "updated"
        out.headers["X-WC-Webhook-Delivery-ID"] += "-2"
    else:
        raise ValueError(f"{d.client} reports no refunds")
    return out


# -- what goes on the wire ---------------------------------------------------------------------------


def build(d: Ga4Draft | JsonDraft) -> Built:
    if isinstance(d, Ga4Draft):
        return _ga4(d)
    body = orjson.dumps(d.body)
    headers = dict(d.headers)
    key = SECRET.encode()
    if d.client == "order_webhook":
        headers["X-Signature"] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        path = "/webhooks/order-update"
    elif d.client == "shopify":
        headers["X-Shopify-Hmac-Sha256"] = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        path = "/webhooks/shopify"
    elif d.client == "woocommerce":
        headers["X-WC-Webhook-Signature"] = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        path = "/webhooks/woocommerce"
    else:
        path = "/collect"
    return Built(d.client, "POST", path, b"", _header_list(headers), body)


def _ga4(d: Ga4Draft) -> Built:
    params = dict(d.params)
    for name, (base, *extra) in ((n, u) for n, u in d.urls.items() if u):
        params[name] = base + "".join(extra)
    params["pr1"] = "~".join(d.item_pieces)
    if d.em:
        params["em"] = "~".join(["tv.1", *d.em])
    # In a POST, the event's own parameters travel in the body line; the page's in the query.
    in_line = (lambda k: k in ("en", "cu", "pr1", "em") or k.split(".", 1)[0] in ("ep", "epn", "up", "upn")) \
        if d.post else (lambda k: False)
    query = "&".join(f"{quote(k, safe=GA4_SAFE)}={quote(v, safe=GA4_SAFE)}" for k, v in params.items() if not in_line(k))
    line = "&".join(f"{quote(k, safe=GA4_SAFE)}={quote(v, safe=GA4_SAFE)}" for k, v in params.items() if in_line(k))
    headers = dict(d.headers)
    if d.post:
        headers["Content-Type"] = "text/plain;charset=UTF-8"
    return Built("ga4_post" if d.post else "ga4_get", "POST" if d.post else "GET", "/g/collect", query.encode(),
                 _header_list(headers), line.encode() if d.post else b"")


def _header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    # Header values are bytes on the wire; a canary's non-ASCII never occurs, but be exact anyway.
    return [(k.lower().encode(), v.encode("utf-8")) for k, v in headers.items()]
