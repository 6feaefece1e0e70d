"""/debug shows no personal data hidden in an order webhook's ids: shapes the canary test found at 2,000 examples.

A refund id built from an event id ("RF-<id>"), a delivery counter after a
digest ("<digest>-2"), base64url digests without padding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from tests.gateway.debug.support import AUTH, TOKEN
from tests.gateway.debug.test_what_is_shown import _shown

SECRET = "fixture-secret-0123456789"


def container(db_path: object) -> str:
    return f"""
storage:
  url: sqlite:///{db_path}
debug: {{enabled: true, token: {TOKEN}}}
delivery:
  poll_interval: 20ms
clients:
  - type: order_webhook
    secret: {SECRET}
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    mode: dry_run
    url: "https://hooks.example/in"
"""

B64 = base64.b64encode(hashlib.sha256(b"cnrykcgntw1595z@example.org").digest()).decode()


@pytest.mark.parametrize("event_id", [
    "RF-16023208017", "16023208017", "16023208017-2", B64 + "-2", B64.rstrip("=") + "-2",
    base64.urlsafe_b64encode(base64.b64decode(B64)).decode().rstrip("=") + "-2",
    "RF-" + base64.urlsafe_b64encode(base64.b64decode(B64)).decode().rstrip("="),
])
def test_debug_masks_a_phone_or_digest_inside_an_order_webhooks_ids(make_client, db_path, event_id: str) -> None:
    client = make_client(container(db_path))
    payload = orjson.dumps({"order_id": "ORD-7", "event": "order_paid", "event_id": event_id, "order_value": 5.0, "currency": "EUR"})
    sig = "sha256=" + hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()
    r = client.post("/webhooks/order-update", content=payload, headers={"content-type": "application/json", "x-signature": sig})
    assert r.status_code < 300, r.text
    shown = _shown(client, r.headers["X-Gateway-Trace"])
    hidden = event_id.removesuffix("-2").removeprefix("RF-").rstrip("=")
    assert len(hidden) >= 11
    assert hidden not in shown
    assert "order_paid" in shown  # masked, not dropped
