"""What the debugger's tests share: a container with the debugger on, and signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

TOKEN = "test-debug-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK_SECRET = "debug-webhook-secret-0123456789"

EMAIL = "jane.doe@gmail.com"
PHONE = "+49 151 23456767"


def debug_container(db_path: Path, *, sink_url: str | None = None, enabled: bool = True, keep_last: int = 50,
                    max_attempts: int = 3) -> str:
    """GA4, beacon and order webhook in; a forwarding tag (live to ``sink_url``, else dry-run), Google Ads in dry-run."""
    forward = (f"url: {sink_url}/hook\n    headers: {{Authorization: \"Bearer sink-secret\"}}" if sink_url
               else "url: https://hooks.example/events\n    mode: dry_run")
    debug = f"{{enabled: true, token: {TOKEN}, keep_last: {keep_last}}}" if enabled else "{enabled: false}"
    return f"""
storage:
  url: sqlite:///{db_path}
debug: {debug}
delivery:
  max_attempts: {max_attempts}
  backoff_initial: 10ms
  backoff_max: 20ms
  poll_interval: 20ms
clients:
  - type: ga4
  - type: json_beacon
    allowed_origins: ["https://shop.example"]
  - type: order_webhook
    secret: {WEBHOOK_SECRET}
destinations:
  google_ads:
    mode: dry_run
    flush_interval: 10ms
triggers:
  everything: {{all: []}}
  purchase:
    all:
      - {{field: event_name, op: equals, value: purchase}}
  big_purchase:
    all:
      - {{field: event_name, op: equals, value: purchase}}
      - {{field: value, op: gte, value: 100}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    {forward}
  - name: gads_purchase
    type: google_ads_click_conversion
    trigger: purchase
    customer_id: "1234567890"
    conversion_action_id: "987654321"
    timezone: Europe/Berlin
  - name: big_only
    type: http_request
    trigger: big_purchase
    url: https://hooks.example/big
    mode: dry_run
"""


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Signature": f"sha256={digest}"}
