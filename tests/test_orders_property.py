"""A property of the ledger over the real app: whatever the order systems send, in whatever order, how often,
the value Google ends up with is the uploaded value times the share of the order that remains.

Each example is one order: its purchase from one of the three order clients
(and, sometimes, the browser's copy first, uploaded net of tax and shipping),
partial refunds, maybe a cancellation or a full refund, every message sent
once or several times (a retry under a new delivery id or Idempotency-Key),
all in a random order. Then, from the adjustments Google would receive
(the ``gads_refund`` items in the outbox; the dispatcher is off):

- the last one is a RETRACTION exactly when the order was cancelled, fully
  refunded, or refunded down to zero; else it is a RESTATEMENT to the
  uploaded value times what remains of the order system's total, to the
  cent (none when nothing was refunded);
- no adjusted value is below zero;
- a RETRACTION is sent at most once, and nothing follows it.

One app serves every example (``ORDERS_PROPERTY_EXAMPLES``, default 40), each
with an order id of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.app import create_app
from tests.conftest import container_from

EXAMPLES = int(os.environ.get("ORDERS_PROPERTY_EXAMPLES", "40"))
SECRET = b"property-secret-0123456789"
T0 = datetime(2026, 4, 23, 10, 0, tzinfo=timezone.utc)
CENT = Decimal("0.01")

CONTAINER = """
consent:
  default: {ad_storage: granted, analytics_storage: granted, ad_user_data: granted, ad_personalization: granted}
storage:
  url: sqlite:///DB_PATH
  synchronous: normal
clients:
  - {type: json_beacon}
  - {type: order_webhook, secret: property-secret-0123456789}
  - {type: shopify, secret: property-secret-0123456789}
  - {type: woocommerce, secret: property-secret-0123456789}
destinations:
  google_ads: {mode: dry_run}
triggers:
  purchase: {all: [{field: event_name, op: equals, value: purchase}]}
  refund_or_cancel:
    all:
      - {field: event_name, op: in, value: [refund, order_cancelled]}
      - {field: source.authenticated, op: equals, value: true}
tags:
  - {name: gads_purchase, type: google_ads_click_conversion, trigger: purchase, customer_id: "1234567890",
     conversion_action_id: "987654321"}
  - {name: gads_refund, type: google_ads_conversion_adjustment, trigger: refund_or_cancel, customer_id: "1234567890",
     conversion_action_id: "987654321", delay_after_conversion: 0s}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    db = tmp_path_factory.mktemp("orders-property") / "g.db"
    client = TestClient(create_app(container_from(CONTAINER.replace("DB_PATH", str(db)), db), run_dispatcher=False),
                        client=("127.0.0.1", 50000))
    with client:
        yield client, db


_numbers = itertools.count(5800000000000)


# -- one order as each order system reports it --------------------------------------------------------


@dataclass
class Order:
    system: str  # order_webhook | shopify | woocommerce
    number: int
    total: Decimal
    refunds: list[Decimal]
    ending: str | None  # None | cancel | full_refund
    browser_value: Decimal | None  # the browser's copy, net of tax and shipping, when it is sent
    # (path, body, headers, the copy of the purchase it carries: "browser", "order_system" or None)
    messages: list[tuple[str, bytes, dict[str, str], str | None]] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return str(self.number)

    def at(self, hours: int) -> datetime:
        return T0 + timedelta(hours=hours)


def money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def generic_messages(order: Order) -> list[tuple[str, bytes]]:
    base = {"order_id": order.order_id, "currency": "EUR"}
    bodies = [base | {"event": "order_paid", "order_value": money(order.total), "gclid": f"gclid-{order.number}",
                      "updated_at": order.at(0).isoformat()}]
    for i, amount in enumerate(order.refunds, 1):  # no refund_id: each body differs by its time
        bodies.append(base | {"event": "partial_refund", "refund_amount": money(amount), "updated_at": order.at(i).isoformat()})
    if order.ending == "cancel":
        bodies.append(base | {"event": "cancelled", "updated_at": order.at(30).isoformat()})
    elif order.ending == "full_refund":
        bodies.append(base | {"event": "full_refund", "refund_id": f"full-{order.number}", "updated_at": order.at(30).isoformat()})
    return [("/webhooks/order-update", orjson.dumps(b)) for b in bodies]


def shopify_messages(order: Order) -> list[tuple[str, bytes]]:
    purchase = {"id": order.number, "total_price": money(order.total), "currency": "EUR", "processed_at": order.at(0).isoformat(),
                "landing_site": f"/?gclid=gclid-{order.number}", "line_items": []}
    out = [("orders/paid", purchase)]
    for i, amount in enumerate(order.refunds, 1):
        out.append(("refunds/create", {
            "id": order.number * 10 + i, "order_id": order.number, "processed_at": order.at(i).isoformat(),
            "transactions": [{"id": i, "kind": "refund", "status": "success", "amount": money(amount), "currency": "EUR"}]}))
    if order.ending == "cancel":
        out.append(("orders/cancelled", purchase | {"cancelled_at": order.at(30).isoformat()}))
    elif order.ending == "full_refund":  # Shopify has no full-refund topic: a refund of what is left
        left = order.total - sum(order.refunds, Decimal(0))
        if left > 0:
            out.append(("refunds/create", {
                "id": order.number * 10 + 9, "order_id": order.number, "processed_at": order.at(30).isoformat(),
                "transactions": [{"id": 9, "kind": "refund", "status": "success", "amount": money(left), "currency": "EUR"}]}))
    return [("/webhooks/shopify#" + topic, orjson.dumps(body)) for topic, body in out]


def woocommerce_messages(order: Order) -> list[tuple[str, bytes]]:
    def update(status: str, refunds: int, hours: int) -> bytes:
        entries = [{"id": order.number * 10 + i, "total": "-" + money(a)} for i, a in enumerate(order.refunds[:refunds], 1)]
        return orjson.dumps({
            "id": order.number, "status": status, "currency": "EUR", "total": money(order.total),
            "date_paid_gmt": order.at(0).strftime("%Y-%m-%dT%H:%M:%S"),
            "date_modified_gmt": order.at(hours).strftime("%Y-%m-%dT%H:%M:%S"),
            "meta_data": [{"key": "_gclid", "value": f"gclid-{order.number}"}], "refunds": list(reversed(entries)),
        })

    out = [update("processing", 0, 0)] + [update("processing", i, i) for i in range(1, len(order.refunds) + 1)]
    if order.ending == "cancel":
        out.append(update("cancelled", len(order.refunds), 30))
    elif order.ending == "full_refund":
        out.append(update("refunded", len(order.refunds), 30))
    return [("/webhooks/woocommerce", body) for body in out]


def signed(path: str, body: bytes, delivery: str) -> tuple[str, bytes, dict[str, str], str | None]:
    """The request as the order system sends it: signed, with a delivery id of its own."""
    data = orjson.loads(body)
    purchase = "order_system" if data.get("event") == "order_paid" or data.get("status") == "processing" or (
        path.endswith("#orders/paid")) else None
    if path.startswith("/webhooks/order-update"):
        digest = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        return path, body, {"X-Signature": f"sha256={digest}", "Idempotency-Key": delivery}, purchase
    digest64 = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    if path.startswith("/webhooks/shopify"):
        topic = path.split("#", 1)[1]
        return "/webhooks/shopify", body, {"X-Shopify-Hmac-Sha256": digest64, "X-Shopify-Topic": topic,
                                           "X-Shopify-Webhook-Id": delivery}, purchase
    return path, body, {"X-WC-Webhook-Signature": digest64, "X-WC-Webhook-Topic": "order.updated",
                        "X-WC-Webhook-Delivery-ID": delivery, "Content-Type": "application/json"}, purchase


@st.composite
def orders(draw: st.DrawFn) -> Order:
    system = draw(st.sampled_from(["order_webhook", "shopify", "woocommerce"]))
    total = Decimal(draw(st.integers(1000, 50000))) / 100
    refunds = [Decimal(c) / 100 for c in draw(st.lists(st.integers(1, int(total * 60)), max_size=4))]
    ending = draw(st.sampled_from([None, None, "cancel", "full_refund"]))
    browser = draw(st.none() | st.integers(50, 100))  # percent of the total
    browser_value = None if browser is None else (total * browser / 100).quantize(CENT)
    order = Order(system, next(_numbers), total, refunds, ending, browser_value)
    bodies = {"order_webhook": generic_messages, "shopify": shopify_messages, "woocommerce": woocommerce_messages}[system](order)
    messages = []
    for n, (path, body) in enumerate(bodies):
        for copy in range(draw(st.integers(1, 3))):  # a retry is the same body under a new delivery id
            messages.append(signed(path, body, f"d-{order.number}-{n}-{copy}"))
    if browser_value is not None:
        messages.append(("/collect", orjson.dumps({
            "event_name": "purchase", "transaction_id": order.order_id, "value": float(browser_value), "currency": "EUR",
            "gclid": f"gclid-{order.number}", "timestamp": (T0 - timedelta(minutes=1)).isoformat()}),
            {"Content-Type": "application/json"}, "browser"))
    order.messages = draw(st.permutations(messages))
    return order


# -- what Google would receive ----------------------------------------------------------------------------


def adjustments(db: Path, order_id: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT item FROM outbox WHERE tag = 'gads_refund' ORDER BY id").fetchall()
    items = [orjson.loads(r[0]) for r in rows]
    return sorted((i for i in items if i.get("orderId") == order_id), key=lambda i: i["adjustmentDateTime"])


def uploaded_value(order: Order) -> Decimal:
    """The value of whichever copy of the purchase opened the order: the browser's when it came first."""
    first = next(copy for _, _, _, copy in order.messages if copy is not None)
    return order.browser_value if first == "browser" else order.total  # type: ignore[return-value]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          print_blob=True)
@given(order=orders())
def test_google_ends_with_the_uploaded_value_times_the_share_that_remains(app: tuple[TestClient, Path],
                                                                          order: Order) -> None:
    client, db = app
    for path, body, headers, _ in order.messages:
        response = client.post(path, content=body, headers=headers)
        assert response.status_code in (200, 204), (path, response.status_code, response.text)

    sent = adjustments(db, order.order_id)
    note(f"{order.system} total={order.total} refunds={order.refunds} ending={order.ending} "
         f"browser={order.browser_value} sent={[(a['adjustmentType'], a.get('restatementValue')) for a in sent]}")

    refunded = sum(order.refunds, Decimal(0))
    retracts = order.ending is not None or refunded >= order.total
    kinds = [a["adjustmentType"] for a in sent]
    values = [a["restatementValue"]["adjustedValue"] for a in sent if a["adjustmentType"] == "RESTATEMENT"]
    assert kinds.count("RETRACTION") <= 1
    assert "RETRACTION" not in kinds[:-1]
    assert all(v >= 0 for v in values)
    if retracts:
        assert kinds[-1:] == ["RETRACTION"]
    elif order.refunds:
        uploaded = uploaded_value(order)
        left = order.total - refunded
        expected = left if uploaded == order.total else (uploaded * left / order.total).quantize(CENT, ROUND_HALF_UP)
        assert kinds[-1] == "RESTATEMENT" and values[-1] == float(expected)
    else:
        assert sent == []
