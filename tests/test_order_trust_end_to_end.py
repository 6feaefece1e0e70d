"""Only the order system moves money: the trust boundary and the ledger's defences, over the real app.

Every destination is in dry run and the dispatcher is off, so what the tags
built stays in the outbox where the test reads it: ``gads_refund`` items are
the adjustments Google would receive, ``meta_orders`` items the Meta events,
and ``forward`` items the events the tags saw. The refund trigger here is the
old, unguarded one (any refund or cancellation): the ledger and the tags must
hold the boundary even when a container does not.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FIXTURES, load_fixture
from tests.running import ROOT

SECRET = b"fixture-secret-0123456789"
WEBHOOKS = FIXTURES / "webhooks"

CONTAINER = """
consent:
  default: {ad_storage: granted, analytics_storage: granted, ad_user_data: granted, ad_personalization: granted}
orders:
  hold_unknown_refunds: 72h
clients:
  - {type: ga4}
  - {type: json_beacon}
  - {type: order_webhook, secret: fixture-secret-0123456789}
  - {type: shopify, secret: fixture-secret-0123456789}
  - {type: woocommerce, secret: fixture-secret-0123456789}
destinations:
  google_ads: {mode: dry_run}
  meta: {mode: dry_run}
triggers:
  purchase: {all: [{field: event_name, op: equals, value: purchase}]}
  refund_or_cancel: {any: [{field: event_name, op: in, value: [refund, order_cancelled]}]}
  orders: {any: [{field: event_name, op: in, value: [purchase, refund, order_cancelled]}]}
tags:
  - {name: gads_purchase, type: google_ads_click_conversion, trigger: purchase, customer_id: "1234567890",
     conversion_action_id: "987654321"}
  - {name: gads_refund, type: google_ads_conversion_adjustment, trigger: refund_or_cancel, customer_id: "1234567890",
     conversion_action_id: "987654321", delay_after_conversion: 0s}
  - {name: meta_orders, type: meta_capi, trigger: orders, pixel_id: "1234567890123456"}
  - {name: forward, type: http_request, trigger: orders, url: "http://127.0.0.1:9/orders", mode: dry_run}
"""


# -- requests ------------------------------------------------------------------------------------


def generic(client: Any, payload: dict[str, Any], **headers: str) -> Any:
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/order-update", content=body, headers={"X-Signature": signature, **headers})


def shopify(client: Any, payload: dict[str, Any] | bytes, topic: str, webhook_id: str) -> Any:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    digest = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id,
               "X-Shopify-Shop-Domain": "trail-shop.myshopify.com"}
    return client.post("/webhooks/shopify", content=body, headers=headers)


def woocommerce(client: Any, body: bytes, topic: str, delivery_id: str) -> Any:
    digest = base64.b64encode(hmac.new(SECRET, body, hashlib.sha256).digest()).decode()
    headers = {"X-WC-Webhook-Signature": digest, "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Delivery-ID": delivery_id,
               "Content-Type": "application/json"}
    return client.post("/webhooks/woocommerce", content=body, headers=headers)


def ga4(client: Any, **params: str) -> Any:
    query = {"v": "2", "tid": "G-TEST", "cid": "555.1732360000", "gcs": "G111", **params}
    return client.get("/g/collect?" + urlencode(query))


def ga4_purchase(client: Any, order_id: str, value: str, currency: str = "USD") -> Any:
    return ga4(client, en="purchase", cu=currency, **{"ep.transaction_id": order_id, "epn.value": value},
               dl="https://trail-shop.example/thanks?gclid=Cj0-browser-gclid")


def shopify_order(order_id: int, total: str, **fields: Any) -> dict[str, Any]:
    order = load_fixture("webhooks", "shopify_orders_create.json")
    order.update({"id": order_id, "total_price": total, **fields})
    return order


def shopify_refund(order_id: int, refund_id: int, amount: str, status: str = "success") -> dict[str, Any]:
    return {"id": refund_id, "order_id": order_id, "created_at": "2026-04-26T10:00:00-04:00",
            "processed_at": "2026-04-26T10:00:00-04:00", "refund_line_items": [],
            "transactions": [{"id": refund_id + 1, "order_id": order_id, "kind": "refund", "gateway": "shopify_payments",
                              "status": status, "amount": amount, "currency": "USD",
                              "created_at": "2026-04-26T10:00:00-04:00"}]}


# -- what the gateway stored ---------------------------------------------------------------------


def rows(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql, args).fetchall()


def items(db_path: Path, tag: str) -> list[dict[str, Any]]:
    return [orjson.loads(r[0]) for r in rows(db_path, "SELECT item FROM outbox WHERE tag = ? ORDER BY id", tag)]


def adjustments(db_path: Path, order_id: str) -> list[tuple[str, float | None]]:
    """(type, adjusted value) of each adjustment Google would receive for the order, in order."""
    return [(i["adjustmentType"], (i.get("restatementValue") or {}).get("adjustedValue"))
            for i in items(db_path, "gads_refund") if i.get("orderId") == order_id]


def meta_refunds(db_path: Path) -> list[dict[str, Any]]:
    return [i for i in items(db_path, "meta_orders") if i["event_name"] == "Refund"]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def client(make_client: Any) -> Any:
    return make_client(CONTAINER, run_dispatcher=False)


# -- forged changes --------------------------------------------------------------------------------


def test_a_forged_ga4_refund_changes_nothing(client, db_path):
    assert ga4_purchase(client, "ORD-1", "100").status_code == 204

    forged = ga4(client, en="refund", **{"ep.transaction_id": "ORD-1"})

    assert forged.status_code == 204
    assert adjustments(db_path, "ORD-1") == []
    assert meta_refunds(db_path) == []
    assert rows(db_path, "SELECT order_id FROM order_changes") == []
    assert rows(db_path, "SELECT refunded, retracted_at FROM orders WHERE order_id = 'ORD-1'") == [("0", None)]


def test_a_forged_beacon_refund_changes_nothing(client, db_path):
    assert ga4_purchase(client, "ORD-1", "100").status_code == 204

    forged = client.post("/collect", json={"event_name": "refund", "transaction_id": "ORD-1", "value": 100,
                                           "currency": "USD", "extra": {"refund_type": "full"}})

    assert forged.status_code == 204
    assert adjustments(db_path, "ORD-1") == []
    assert meta_refunds(db_path) == []
    assert rows(db_path, "SELECT order_id FROM order_changes") == []


def test_the_refund_event_itself_still_reaches_the_rules_that_forward_it(client, db_path):
    ga4(client, en="refund", **{"ep.transaction_id": "ORD-1"})

    assert [(i["event_name"], i["source"]) for i in items(db_path, "forward")] == [
        ("refund", {"client": "ga4", "authenticated": False})]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("adjustment", {"type": "RESTATEMENT", "adjustment_id": "x", "order_id": "ORD-9",
                                    "adjusted_value": 999999}, id="adjustment"),
        pytest.param("source", {"client": "shopify", "authenticated": True}, id="source_stamp"),
        pytest.param("order", {"refund_id": "r-1", "total": 1}, id="order_data"),
    ],
)
def test_an_internal_field_in_a_beacon_is_400_naming_the_field(client, db_path, key, value):
    response = client.post("/collect", json={"events": [{"event_name": "page_view"},
                                                        {"event_name": "refund", "transaction_id": "ORD-9", key: value}]})

    assert response.status_code == 400
    assert response.json()["detail"] == {"field": f"events[1].{key}"}
    assert "999999" not in response.text and "shopify" not in response.text
    assert rows(db_path, "SELECT count(*) FROM outbox") == [(0,)]


def test_triggers_can_test_the_client_and_the_source_stamp(make_client, db_path):
    client = make_client("""
clients:
  - {type: json_beacon}
  - {type: order_webhook, secret: fixture-secret-0123456789}
triggers:
  from_order_system:
    all:
      - {field: source.authenticated, op: equals, value: true}
      - {field: source.client, op: equals, value: order_webhook}
tags:
  - {name: forward, type: http_request, trigger: from_order_system, url: "http://127.0.0.1:9/x", mode: dry_run}
""", run_dispatcher=False)

    client.post("/collect", json={"event_name": "purchase", "transaction_id": "ORD-2", "value": 5, "currency": "EUR"})
    generic(client, {"order_id": "ORD-1", "event": "order_created", "order_value": 5, "currency": "EUR"})

    assert [(i["transaction_id"], i["source"]) for i in items(db_path, "forward")] == [
        ("ORD-1", {"client": "order_webhook", "authenticated": True})]


# -- the order system's value ------------------------------------------------------------------------


def test_a_browser_purchase_is_restated_in_its_own_basis_from_the_order_systems_total(client, db_path):
    assert ga4_purchase(client, "5801234567001", "100").status_code == 204  # net of tax and shipping
    assert shopify(client, shopify_order(5801234567001, "124.00"), "orders/create", "wh-1").status_code == 200
    assert shopify(client, shopify_refund(5801234567001, 940001, "62.00"), "refunds/create", "wh-2").status_code == 200

    assert adjustments(db_path, "5801234567001") == [("RESTATEMENT", 50.0)]


def test_a_refund_of_most_of_the_order_total_restates_instead_of_retracting(client, db_path):
    ga4_purchase(client, "5801234567002", "100")
    shopify(client, shopify_order(5801234567002, "124.00"), "orders/create", "wh-1")
    shopify(client, shopify_refund(5801234567002, 940002, "100.00"), "refunds/create", "wh-2")

    assert adjustments(db_path, "5801234567002") == [("RESTATEMENT", 19.35)]  # 100 x 24/124


# -- once, whatever is resent ------------------------------------------------------------------------


def test_the_same_refund_without_ids_delivered_three_times_changes_the_value_once(client, db_path):
    generic(client, {"order_id": "ORD-7", "event": "order_created", "order_value": 100, "currency": "EUR",
                     "gclid": "gclid-7"})
    refund = {"order_id": "ORD-7", "event": "partial_refund", "refund_amount": 30, "currency": "EUR"}

    statuses = [generic(client, refund).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert adjustments(db_path, "ORD-7") == [("RESTATEMENT", 70.0)]
    assert rows(db_path, "SELECT refunded FROM orders WHERE order_id = 'ORD-7'") == [("30.0",)]


def test_a_replay_with_a_new_idempotency_key_changes_nothing(client, db_path):
    generic(client, {"order_id": "ORD-8", "event": "order_created", "order_value": 100, "currency": "EUR",
                     "gclid": "gclid-8", "updated_at": "2026-04-23T10:00:00+00:00"})
    refund = {"order_id": "ORD-8", "event": "partial_refund", "refund_amount": 40, "currency": "EUR",
              "updated_at": "2026-04-25T10:00:00+00:00"}

    statuses = [generic(client, refund, **{"Idempotency-Key": f"replay-{n}"}).status_code for n in range(4)]

    assert statuses == [200, 200, 200, 200]
    assert adjustments(db_path, "ORD-8") == [("RESTATEMENT", 60.0)]


def test_a_signed_timestamp_is_checked_against_the_tolerance(client, db_path):
    body = orjson.dumps({"order_id": "ORD-5", "event": "order_created", "order_value": 10, "currency": "EUR"})

    def signed_at(moment: int) -> dict[str, str]:
        digest = hmac.new(SECRET, f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
        return {"X-Signature": f"t={moment},sha256={digest}"}

    stale = client.post("/webhooks/order-update", content=body, headers=signed_at(int(time.time()) - 301))
    fresh = client.post("/webhooks/order-update", content=body, headers=signed_at(int(time.time())))

    assert (stale.status_code, stale.json()["detail"]) == (401, {"field": "headers.x-signature"})
    assert fresh.status_code == 200
    assert rows(db_path, "SELECT order_id FROM orders") == [("ORD-5",)]


def test_a_shopify_topic_that_disagrees_with_its_body_is_400(client, db_path):
    order = shopify_order(5801234567003, "149.00")
    assert shopify(client, order, "orders/paid", "wh-1").status_code == 200

    as_cancelled = shopify(client, order, "orders/cancelled", "wh-forged-1")
    as_refund = shopify(client, order, "refunds/create", "wh-forged-2")

    assert (as_cancelled.status_code, as_cancelled.json()["detail"]) == (400, {"field": "cancelled_at"})
    assert as_refund.status_code == 400
    assert adjustments(db_path, "5801234567003") == []
    assert rows(db_path, "SELECT retracted_at FROM orders WHERE order_id = '5801234567003'") == [(None,)]


# -- acknowledged, and nothing lost --------------------------------------------------------------------


def test_an_unknown_generic_event_is_acknowledged_counted_and_changes_nothing(client, db_path):
    before = counter("gateway_webhooks_ignored_total", client="order_webhook", reason="unknown_event")

    response = generic(client, {"order_id": "ORD-1", "event": "order_shipped", "tracking": "1Z999"})

    assert (response.status_code, response.json()) == (200, {"ignored": "unknown_event"})
    assert counter("gateway_webhooks_ignored_total", client="order_webhook", reason="unknown_event") - before == 1
    assert rows(db_path, "SELECT count(*) FROM orders") == [(0,)]
    assert rows(db_path, "SELECT count(*) FROM outbox") == [(0,)]


def test_shopify_orders_updated_is_acknowledged(client, db_path):
    response = shopify(client, shopify_order(5801234567004, "149.00"), "orders/updated", "wh-1")

    assert response.status_code == 200
    assert rows(db_path, "SELECT count(*) FROM outbox") == [(0,)]


def test_a_pending_shopify_refund_is_held_then_applied_once_by_the_orders_updated_that_shows_it_succeeded(
    client, db_path, tmp_path
):
    order = shopify_order(5801234567005, "1672.35")
    assert shopify(client, order, "orders/create", "wh-1").status_code == 200
    pending = shopify_refund(5801234567005, 950001, "1012.70", status="pending")

    assert shopify(client, pending, "refunds/create", "wh-2").status_code == 200

    assert adjustments(db_path, "5801234567005") == []
    assert [r[0] for r in rows(db_path, "SELECT change_id FROM held_changes")] == ["shopify:950001"]

    succeeded = {**order, "refunds": [shopify_refund(5801234567005, 950001, "1012.70", status="success")]}
    for n in range(2):
        assert shopify(client, succeeded, "orders/updated", f"wh-update-{n}").status_code == 200

    assert adjustments(db_path, "5801234567005") == [("RESTATEMENT", 659.65)]
    assert rows(db_path, "SELECT count(*) FROM held_changes") == [(0,)]


def test_a_legacy_woocommerce_body_is_accepted(client, db_path):
    body = (WEBHOOKS / "woocommerce_legacy_v3_order_created.json").read_bytes()

    response = woocommerce(client, body, "order.created", "legacy-1")

    assert response.status_code == 200
    assert rows(db_path, "SELECT order_id, value, currency FROM orders") == [("4822", "89.9", "EUR")]


# -- another currency --------------------------------------------------------------------------------


def test_a_refund_in_another_currency_is_dead_lettered_with_its_own_code(client, db_path):
    before = counter("gateway_dead_letters_total", destination="order_ledger", code="refund_currency_mismatch")
    generic(client, {"order_id": "ORD-3", "event": "order_created", "order_value": 100, "currency": "EUR",
                     "gclid": "gclid-3"})

    response = generic(client, {"order_id": "ORD-3", "event": "partial_refund", "refund_amount": 20, "currency": "USD",
                                "refund_id": "r-usd"})

    assert response.status_code == 200
    assert adjustments(db_path, "ORD-3") == []
    assert rows(db_path, "SELECT destination, batch_key, code FROM dead_letters") == [
        ("order_ledger", "ORD-3", "refund_currency_mismatch")]
    assert counter("gateway_dead_letters_total", destination="order_ledger", code="refund_currency_mismatch") - before == 1


def test_a_refund_in_another_currency_is_converted_by_the_rate_the_order_system_supplied(client, db_path):
    generic(client, {"order_id": "ORD-4", "event": "order_created", "order_value": 100, "currency": "EUR",
                     "gclid": "gclid-4"})

    generic(client, {"order_id": "ORD-4", "event": "partial_refund", "refund_amount": 20, "currency": "USD",
                     "refund_id": "r-usd", "exchange_rate": 0.9})

    assert adjustments(db_path, "ORD-4") == [("RESTATEMENT", 82.0)]
    assert rows(db_path, "SELECT count(*) FROM dead_letters") == [(0,)]


# -- Meta refunds that can leave -------------------------------------------------------------------------


def test_a_meta_refund_carries_the_purchases_hashed_identifiers_when_consent_allowed_keeping_them(client, db_path):
    shopify(client, shopify_order(5801234567006, "149.00"), "orders/create", "wh-1")  # ad_user_data granted
    shopify(client, shopify_refund(5801234567006, 960001, "31.93"), "refunds/create", "wh-2")

    (refund,) = meta_refunds(db_path)
    assert refund["user_data"]["em"] == [hashlib.sha256(b"jane.roe+news@example.com").hexdigest()]
    assert refund["user_data"]["ph"] == [hashlib.sha256(b"14155550132").hexdigest()]
    assert refund["action_source"] == "system_generated"


def test_nothing_is_kept_for_a_meta_refund_when_consent_was_denied(make_client, db_path):
    client = make_client(CONTAINER.replace("ad_user_data: granted", "ad_user_data: denied"), run_dispatcher=False)
    order = shopify_order(5801234567007, "149.00", note_attributes=[])
    shopify(client, order, "orders/create", "wh-1")
    shopify(client, shopify_refund(5801234567007, 970001, "31.93"), "refunds/create", "wh-2")

    assert meta_refunds(db_path) == []  # no customer information may leave: Meta would refuse the event
    assert rows(db_path, "SELECT identifiers FROM orders") == [(None,)]


def test_a_shopify_web_order_goes_to_meta_as_a_website_event_with_the_browsers_user_agent(client, db_path):
    order = shopify_order(5801234567008, "149.00", source_name="web",
                          client_details={"browser_ip": "0.0.0.0", "user_agent": "Mozilla/5.0 (X11; Linux) Firefox/133.0"})

    shopify(client, order, "orders/create", "wh-1")

    (purchase,) = [i for i in items(db_path, "meta_orders") if i["event_name"] == "Purchase"]
    assert (purchase["action_source"], purchase["event_source_url"]) == (
        "website", "https://trail-shop.myshopify.com/products/trail-shoe?utm_source=google&gclid=EAIaIQobChMIshopify-gclid-1042")
    assert purchase["user_data"]["client_user_agent"] == "Mozilla/5.0 (X11; Linux) Firefox/133.0"
    assert "client_ip_address" not in purchase["user_data"]


# -- what the operator sees --------------------------------------------------------------------------


def test_orders_show_says_which_value_each_adjustment_used_and_what_waits(make_client, db_path, tmp_path):
    config = tmp_path / "container.yaml"
    config.write_text(CONTAINER + f"\nstorage:\n  url: sqlite:///{db_path}\n")
    client = make_client(config.read_text(), run_dispatcher=False)
    ga4_purchase(client, "5801234567009", "100")
    shopify(client, shopify_order(5801234567009, "124.00"), "orders/create", "wh-1")
    shopify(client, shopify_refund(5801234567009, 980001, "62.00"), "refunds/create", "wh-2")
    shopify(client, shopify_refund(5801234567009, 980002, "12.00", status="pending"), "refunds/create", "wh-3")

    report = orjson.loads(run_cli("orders", "show", "5801234567009", "--config", str(config)))

    assert {k: report["order"][k] for k in ("value", "total", "refunded")} == {
        "value": "100.0", "total": "124.0", "refunded": "62.0"}
    assert [(u["conversion_action"], u["status"]) for u in report["order"]["uploads"]] == [
        ("customers/1234567890/conversionActions/987654321", "pending")]
    assert [(c["change_id"], c["basis"], c["adjusted_value"], c["retained_after"]) for c in report["changes"]] == [
        ("shopify:980001", "share_of_order_total", "50.00", "62.0")]
    assert [(h["change_id"], h["amount"], h["waiting_for"]) for h in report["held"]] == [
        ("shopify:980002", 12.0, "its money to move")]


def run_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_sample_containers_money_moving_triggers_fire_only_for_the_order_system():
    from gateway.config import load_container_file
    from gateway.event import Event, Source

    container = load_container_file(str(ROOT / "examples" / "container.yaml"))
    trigger = container.triggers["refund_or_cancel"]

    def fires(client: str, authenticated: bool) -> bool:
        return trigger.matches(Event(event_name="refund", transaction_id="ORD-1",
                                     source=Source(client=client, authenticated=authenticated)))

    assert [fires("ga4", False), fires("json_beacon", False), fires("shopify", True)] == [False, False, True]
