"""What /debug shows of a request that carried personal data and went to a tag with credentials: neither, unmasked.

The request's consent is granted, so the data legitimately reaches the tag
(a dry-run http_request whose URL and headers hold credentials); the debugger
must still show none of it: not in the trace, its list, the dry-run records or
the explain answer.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from urllib.parse import quote

from tests.gateway.debug.support import AUTH, TOKEN
from tests.gateway.debug.test_recorder import beacon, settled_trace

NAME, SURNAME = "Quentinella", "Zabriskowa"
EMAIL_KEY = "quentinella.z@example.org"
PHONE_NUMBER = 4155550107  # a US number written as a JSON number
PHONE_DOTS = "415.555.0108"
DIGEST = hashlib.sha256(b"quentinella.z@example.org").hexdigest()
DIGEST_B64 = base64.urlsafe_b64encode(hashlib.sha256(b"+14155550107").digest()).decode().rstrip("=")
ORDER_EMAIL = "order.of.quentinella@example.net"  # an email address where an order id goes
PERSONAL = (NAME, SURNAME, EMAIL_KEY, ORDER_EMAIL, "order.of.quentinella%40example.net", str(PHONE_NUMBER), PHONE_DOTS, "4155550108", DIGEST, DIGEST_B64)

USERINFO_PASSWORD, API_KEY, BEARER, X_API_KEY, SHOP_TOKEN = (
    "debug-userinfo-secret", "debug-query-api-key", "debug-bearer-secret", "debug-x-api-key", "debug-shop-token")
SECRETS = (USERINFO_PASSWORD, API_KEY, BEARER, X_API_KEY, SHOP_TOKEN)

GRANTED = {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
           "ad_personalization": "granted"}


def container(db_path: Path) -> str:
    return f"""
storage:
  url: sqlite:///{db_path}
debug: {{enabled: true, token: {TOKEN}}}
delivery:
  poll_interval: 20ms
clients:
  - type: json_beacon
  - type: ga4
triggers:
  everything: {{all: []}}
tags:
  - name: forward
    type: http_request
    trigger: everything
    mode: dry_run
    url: "https://hook:{USERINFO_PASSWORD}@hooks.example/in?api_key={API_KEY}&stream=web"
    headers: {{X-Api-Key: "{X_API_KEY}", X-Shop-Token: "{SHOP_TOKEN}"}}
  - name: forward_bearer              # an Authorization header cannot go with credentials in the url
    type: http_request
    trigger: everything
    mode: dry_run
    url: "https://hooks.example/bearer"
    headers: {{Authorization: "Bearer {BEARER}"}}
"""


def body() -> dict[str, Any]:
    return {
        "event_name": "generate_lead",
        "transaction_id": ORDER_EMAIL,
        "event_id": ORDER_EMAIL.replace("@", "%40"),
        "consent": GRANTED,
        "user_data": {"email_address": "q@example.org", "address": {"first_name": NAME, "last_name": SURNAME}},
        "name": f"{NAME} {SURNAME}",
        "fn": NAME.lower(),
        "lead": {EMAIL_KEY: True, "callback": PHONE_NUMBER, "mobile_alt": PHONE_DOTS},
        "contact_ref": f"sha256:{DIGEST}",
        "ph_digest": f"sha256={DIGEST_B64}",
        "items": [{"item_id": "SKU-1", "note": {"owner": f"SHA256:{DIGEST.upper()}", "tel_number": PHONE_DOTS}}],
    }


def _shown(client: Any, trace_id: str) -> str:
    settled_trace(client, trace_id)
    parts = [client.get(path, headers=AUTH) for path in (
        f"/debug/api/traces/{trace_id}", "/debug/api/traces", "/debug/api/dry-runs", "/debug/api/dead-letters")]
    explain = client.post("/debug/api/explain", json={"trace_id": trace_id}, headers=AUTH)
    assert all(p.status_code == 200 for p in parts) and explain.status_code == 200, [p.text for p in parts]
    return "\n".join(p.text for p in [*parts, explain])


@pytest.mark.parametrize("secret", SECRETS)
def test_debug_never_shows_a_credential_of_the_tag(make_client, db_path, secret):
    client = make_client(container(db_path))
    shown = _shown(client, beacon(client, body()))

    assert secret not in shown
    assert "/in?api_key=***&stream=web" in shown  # the request is there, its credentials are not


@pytest.mark.parametrize("canary", PERSONAL)
def test_debug_never_shows_personal_data_even_when_consent_lets_it_travel(make_client, db_path, canary):
    client = make_client(container(db_path))
    shown = _shown(client, beacon(client, body()))

    assert canary not in shown
    assert canary.lower() not in shown.lower()
    assert "generate_lead" in shown and "SKU-1" in shown  # masked, not dropped


def test_the_masks_keep_the_shape_of_what_they_hide(make_client, db_path):
    client = make_client(container(db_path))
    trace = settled_trace(client, beacon(client, body()))
    (event,) = [e["event"] for e in trace["client_events"]]
    extra = event.get("extra", event)

    assert orjson.dumps(extra)  # JSON all the way down
    lead = extra["lead"]
    assert set(lead) == {"q***@e***.org", "callback", "mobile_alt"}
    assert str(lead["callback"]).endswith("07") and str(PHONE_NUMBER) not in str(lead["callback"])
    assert extra["contact_ref"] == f"sha256:{DIGEST[:6]}…"


# -- where personal data hides from a mask that reads values only -----------------------------------------

HIDDEN_HEX = hashlib.sha256(b"hidden.person@example.org").hexdigest()
HIDDEN_B64 = base64.b64encode(hashlib.sha256(b"+14155550199").digest()).decode()
HIDDEN_PHONE = "14155550199"  # a phone number written as digits alone
HIDDEN_NAME = "Hiddenova"
HIDDEN_DOTS = "202.555.0143"  # a phone number with dots, as a URL path segment


def test_debug_masks_digests_glued_to_ga4_prefixes_and_in_parameter_names(make_client, db_path):
    client = make_client(container(db_path))
    item = f"idSKU-1~nmMug~k0note~v0{HIDDEN_HEX}~k1{HIDDEN_HEX}~v11"
    query = (f"v=2&tid=G-TEST12345&cid=1.2&en=view_item&gcs=G111&pr1={quote(item, safe='')}"
             f"&ep.{HIDDEN_HEX}=1&up.{HIDDEN_PHONE}=1&ep.note={quote(HIDDEN_B64, safe='')}")
    response = client.get(f"/g/collect?{query}")
    assert response.status_code in (200, 204)
    shown = _shown(client, response.headers["X-Gateway-Trace"])

    for canary in (HIDDEN_HEX, HIDDEN_HEX.upper(), HIDDEN_B64[:43], HIDDEN_PHONE):
        assert canary not in shown, canary
    assert "view_item" in shown and "SKU-1" in shown


def test_debug_masks_a_name_by_the_name_beside_it_a_phone_in_digits_and_a_digest_in_a_header(make_client, db_path):
    client = make_client(container(db_path))
    payload = {"event_name": "generate_lead", "consent": GRANTED,
               "note_attributes": [{"name": "customer_name", "value": HIDDEN_NAME}],
               "customer_note": f"call me back on {HIDDEN_PHONE} please",
               "page_location": f"https://shop.example/{HIDDEN_DOTS}/orders?step=2"}
    response = client.post("/collect", content=orjson.dumps(payload),
                           headers={"Content-Type": "text/plain",
                                    "Referer": f"https://shop.example/back?ref={quote(HIDDEN_B64, safe='')}"})
    assert response.status_code == 204
    shown = _shown(client, response.headers["X-Gateway-Trace"])

    for canary in (HIDDEN_NAME, HIDDEN_PHONE, HIDDEN_B64[:43], quote(HIDDEN_B64, safe=""), HIDDEN_DOTS):
        assert canary not in shown, canary
    assert "customer_name" in shown and "call me back on" in shown and "/orders?step=2" in shown
