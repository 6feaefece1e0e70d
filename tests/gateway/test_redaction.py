"""With ad_user_data denied, nothing personal reaches the outbox: requests through the real app, a real SQLite file.

Each test sends a request whose consent denies ``ad_user_data`` and then
looks for the canaries in every byte SQLite keeps (main file and WAL) and in
each outbox item: raw, lower-cased, percent-encoded, and as a SHA-256 digest
in hex and base64. The items are what the ``http_request`` tag would send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConsentDefaults
from gateway.consent import PSEUDONYM_SECRET, apply_consent
from gateway.event import Event
from gateway.storage.postgres import PostgresStorage
from tests.postgres import fresh_database, shared_database

EMAIL = "Jane.Canary@Example.com"
PHONE_DOTS = "415.555.0107"
PHONE_DIGITS = "4155550107"
NAME = "Janeczka"
DIGEST = hashlib.sha256(EMAIL.lower().encode()).digest()
HEX = DIGEST.hex()
B64 = base64.b64encode(DIGEST).decode()
B64URL = base64.urlsafe_b64encode(DIGEST).decode().rstrip("=")
DENIED_GCD = "gcs=G100&gcd=13p3p3p2p5l1"
DENIED_JSON = {"ad_storage": "denied", "analytics_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"}

CONTAINER = """
clients:
  - type: ga4
  - type: json_beacon
triggers:
  everything: {all: []}
tags:
  - name: sink
    type: http_request
    trigger: everything
    url: http://127.0.0.1:9/unused
    mode: dry_run
"""


def forms(value: str) -> list[str]:
    """Every form a canary could survive in."""
    digest = hashlib.sha256(value.strip().lower().encode()).digest()
    out = {value, value.lower(), quote(value, safe=""), quote(value.lower(), safe=""),
           quote(quote(value, safe=""), safe=""), digest.hex(), base64.b64encode(digest).decode().rstrip("="),
           base64.urlsafe_b64encode(digest).decode().rstrip("=")}
    return sorted(out)


def stored_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db_path, Path(f"{db_path}-wal")) if p.exists())


def outbox_items(db_path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return [orjson.loads(row[0]) for row in conn.execute("SELECT item FROM outbox ORDER BY id")]


def assert_nowhere(db_path: Path, *canaries: str) -> None:
    raw = stored_bytes(db_path)
    text = orjson.dumps(outbox_items(db_path)).decode()
    for canary in canaries:
        for form in forms(canary):
            assert form.encode() not in raw, f"a form of {canary!r} is stored"
            assert form not in text, f"a form of {canary!r} is in an outbox item"


def install_key(db_path: Path) -> bytes:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return bytes(conn.execute("SELECT secret FROM install_secrets WHERE name = ?", (PSEUDONYM_SECRET,)).fetchone()[0])


def pseudonym(db_path: Path, value: str) -> str:
    return "pid-" + hmac.new(install_key(db_path), value.encode(), hashlib.sha256).hexdigest()[:32]


def ga4(client: Any, query: str, **headers: str) -> None:
    response = client.get(f"/g/collect?v=2&tid=G-TEST&en=page_view&{DENIED_GCD}&{query}", headers=headers)
    assert response.status_code == 204, response.text


def beacon(client: Any, event: dict[str, Any]) -> None:
    response = client.post("/collect", json={"event_name": "page_view", "consent": DENIED_JSON, **event})
    assert response.status_code in (200, 202, 204), response.text


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"https://shop.example/thanks?email={EMAIL}&step=2", id="email_raw"),
        pytest.param(f"https://shop.example/thanks?e={quote(EMAIL, safe='')}&step=2", id="email_percent_encoded"),
        pytest.param(f"https://shop.example/thanks?e={quote(quote(EMAIL, safe=''), safe='')}&step=2", id="email_encoded_twice"),
        pytest.param(f"https://shop.example/thanks?contact={PHONE_DOTS}&step=2", id="phone_with_dots"),
        pytest.param(f"https://shop.example/thanks?name={NAME}&step=2", id="name_on_the_redaction_list"),
        pytest.param(f"https://shop.example/thanks?h={HEX}&step=2", id="hex_digest"),
        pytest.param(f"https://shop.example/u/{quote(EMAIL, safe='@')}/thanks?step=2", id="email_in_the_path"),
        pytest.param(f"https://shop.example/thanks?step=2#/done?who={EMAIL}", id="email_in_the_fragment"),
    ],
)
@pytest.mark.parametrize("field", ["dl", "dr"])
def test_a_ga4_page_url_or_referrer_loses_personal_query_values(make_client, db_path, url: str, field: str) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    ga4(client, f"cid=555.1&{field}={quote(url, safe='')}")

    assert_nowhere(db_path, EMAIL, PHONE_DOTS, NAME)
    (item,) = outbox_items(db_path)
    kept = item["page_location" if field == "dl" else "page_referrer"]
    assert kept.startswith("https://shop.example/") and "step=2" in kept  # the rest of the URL stays


def test_click_ids_stay_in_the_page_url(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)
    url = f"https://shop.example/?gclid=Cj0KCQ-gclid&fbclid=IwAR-fbclid&email={EMAIL}"

    ga4(client, f"cid=555.1&dl={quote(url, safe='')}")

    (item,) = outbox_items(db_path)
    assert item["page_location"] == "https://shop.example/?gclid=Cj0KCQ-gclid&fbclid=IwAR-fbclid&email=(redacted)"
    assert (item["gclid"], item["fbclid"]) == ("Cj0KCQ-gclid", "IwAR-fbclid")


@pytest.mark.parametrize("field", ["page_location", "page_referrer"])
def test_a_beacon_url_loses_personal_query_values(make_client, db_path, field: str) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    beacon(client, {field: f"https://shop.example/p?mail={quote(EMAIL)}&tel={PHONE_DIGITS}&ok=1"})

    assert_nowhere(db_path, EMAIL, PHONE_DIGITS)
    (item,) = outbox_items(db_path)
    assert item[field] == "https://shop.example/p?mail=(redacted)&tel=(redacted)&ok=1"


def test_the_redacted_query_parameters_are_the_containers_setting(make_client, db_path) -> None:
    client = make_client(CONTAINER + "consent:\n  redact_query_parameters: [coupon]\n", run_dispatcher=False)

    beacon(client, {"page_location": "https://shop.example/p?coupon=JANE10&name=Blue+Mug"})

    (item,) = outbox_items(db_path)
    assert item["page_location"] == "https://shop.example/p?coupon=(redacted)&name=Blue+Mug"


# -- free text -----------------------------------------------------------------------------------


def test_ga4_title_language_and_user_agent_lose_addresses_and_phone_numbers(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    ga4(client, f"cid=555.1&dt={quote(f'Order for {EMAIL}, call {PHONE_DOTS}')}&ul={quote(EMAIL)}",
        **{"user-agent": f"Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.6099.109 Safari/537.36 {EMAIL}"})

    assert_nowhere(db_path, EMAIL, PHONE_DOTS)
    (item,) = outbox_items(db_path)
    assert item["page_title"] == "Order for [redacted], call [redacted]"
    assert item["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.6099.109 Safari/537.36 [redacted]"


def test_beacon_title_language_and_user_agent_lose_addresses(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    beacon(client, {"page_title": f"Hi {EMAIL}", "language": EMAIL, "user_agent": f"Bot {PHONE_DOTS}"})

    assert_nowhere(db_path, EMAIL, PHONE_DOTS)


def test_custom_parameters_lose_digests_hashes_under_meta_names_and_numbers_that_are_phones(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    ga4(client, f"cid=555.1&ep.hem={HEX}&up.h={B64URL}&ep.em={HEX}&ep.ph=abc&ep.fn={NAME}&ep.x=sha256:{HEX}"
                f"&ep.y={quote(B64, safe='')}&ep.note={PHONE_DOTS}&epn.callback={PHONE_DIGITS}&ep.page_type=checkout")

    assert_nowhere(db_path, EMAIL, PHONE_DOTS, PHONE_DIGITS, NAME)
    (item,) = outbox_items(db_path)
    assert item["extra"]["page_type"] == "checkout"
    assert not {"hem", "em", "ph", "fn", "x", "y", "note", "callback"} & set(item["extra"])
    assert "h" not in item.get("user_properties", {})


def test_items_lose_addresses_and_phones_at_any_depth_and_an_address_used_as_a_key(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)
    items = [{"item_id": "0012345678905", "item_name": "Mug", "quantity": 2,
              "details": {"gift_for": f"for {EMAIL}", "more": [{"n": PHONE_DIGITS}, {"m": int(PHONE_DIGITS)}]}}]

    beacon(client, {"items": items, "extra": {EMAIL: "subscribed", "list": [[f"x {PHONE_DOTS}"]]},
                    "user_properties": {"backup": f"+1 {PHONE_DOTS}", "plan": "gold"}})

    assert_nowhere(db_path, EMAIL, PHONE_DOTS, PHONE_DIGITS)
    (item,) = outbox_items(db_path)
    assert item["items"] == [{"item_id": "0012345678905", "item_name": "Mug", "quantity": 2,
                              "details": {"gift_for": "for [redacted]", "more": [{}, {}]}}]
    assert item["extra"] == {"list": [["x [redacted]"]]}
    assert item["user_properties"] == {"plan": "gold"}


# -- identifiers ---------------------------------------------------------------------------------


def test_ga4_ids_holding_an_address_become_the_installs_keyed_pseudonym(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    ga4(client, f"cid={quote(EMAIL)}&ep.event_id={quote(EMAIL)}&uid=%2B1%20{PHONE_DOTS}")
    ga4(client, f"cid={quote(EMAIL)}&ep.event_id=ev-2")

    assert_nowhere(db_path, EMAIL, PHONE_DOTS)
    first, second = outbox_items(db_path)
    assert first["client_id"] == second["client_id"] == first["event_id"] == pseudonym(db_path, EMAIL)
    assert first["user_id"] == pseudonym(db_path, f"+1 {PHONE_DOTS}")
    assert second["event_id"] == "ev-2"


def test_a_purchase_whose_transaction_id_is_an_address_reaches_the_ledger_only_as_its_pseudonym(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    ga4(client, f"cid=555.1&en=purchase&cu=EUR&epn.value=10&ep.transaction_id={quote(EMAIL)}")
    beacon(client, {"event_name": "purchase", "transaction_id": EMAIL, "client_id": EMAIL, "event_id": EMAIL,
                    "currency": "EUR", "value": 10})

    assert_nowhere(db_path, EMAIL)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        orders = [row[0] for row in conn.execute("SELECT order_id FROM orders")]
    assert orders == [pseudonym(db_path, EMAIL)]  # the beacon's copy matched the GA4 hit's order


def test_numeric_order_numbers_stay_unless_they_read_as_a_phone_and_event_ids_that_read_as_one_go(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    beacon(client, {"event_name": "purchase", "transaction_id": "5678901234567", "event_id": "4155550107",
                    "currency": "EUR", "value": 10})
    beacon(client, {"event_name": "purchase", "transaction_id": "100200300", "currency": "EUR", "value": 10})
    beacon(client, {"event_name": "purchase", "transaction_id": PHONE_DIGITS, "currency": "EUR", "value": 10})
    beacon(client, {"event_name": "page_view", "event_id": "ev-1732360000"})

    shopify_sized, small, phone, page = outbox_items(db_path)
    assert (shopify_sized["transaction_id"], shopify_sized["event_id"]) == ("5678901234567", pseudonym(db_path, "4155550107"))
    assert small["transaction_id"] == "100200300"
    assert phone["transaction_id"] == pseudonym(db_path, PHONE_DIGITS)  # phonenumbers calls it a valid number
    assert page["event_id"] == "ev-1732360000"


def test_the_install_secret_outlives_a_restart_and_differs_between_installs(make_client, db_path, tmp_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)
    ga4(client, f"cid={quote(EMAIL)}")
    key = install_key(db_path)
    client.__exit__(None, None, None)

    client = make_client(CONTAINER, run_dispatcher=False)
    ga4(client, f"cid={quote(EMAIL)}")

    first, second = outbox_items(db_path)
    assert install_key(db_path) == key and len(key) == 32
    assert first["client_id"] == second["client_id"] == pseudonym(db_path, EMAIL)
    other = tmp_path / "other.db"
    client = make_client(CONTAINER.replace("clients:", f"storage:\n  url: sqlite:///{other}\nclients:"), run_dispatcher=False)
    ga4(client, f"cid={quote(EMAIL)}")
    (third,) = outbox_items(other)
    assert third["client_id"] != first["client_id"] and re.fullmatch(r"pid-[0-9a-f]{32}", third["client_id"])


def test_with_ad_user_data_granted_the_hit_is_left_as_it_is(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)
    url = f"https://shop.example/thanks?email={EMAIL}"

    response = client.get(f"/g/collect?v=2&tid=G-TEST&en=page_view&gcs=G111&gcd=13v3v3v2v5l1&cid={quote(EMAIL)}"
                          f"&dl={quote(url, safe='')}&ep.hem={HEX}")

    assert response.status_code == 204
    (item,) = outbox_items(db_path)
    assert (item["client_id"], item["page_location"], item["extra"]["hem"]) == (EMAIL, url, HEX)


# -- logs ----------------------------------------------------------------------------------------

WEBHOOK_CONTAINER = CONTAINER.replace("clients:", "clients:\n  - type: order_webhook\n    secret: fixture-secret-0123456789")


def webhook(client: Any, payload: dict[str, Any]) -> Any:
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(b"fixture-secret-0123456789", body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/order-update", content=body,
                       headers={"content-type": "application/json", "x-signature": signature})


def test_the_ledgers_log_lines_never_carry_an_address_used_as_an_order_id(make_client, db_path, caplog) -> None:
    client = make_client(WEBHOOK_CONTAINER, run_dispatcher=False)
    granted = dict.fromkeys(DENIED_JSON, "granted")  # consent lets the id travel; the log still must not show it
    caplog.set_level(logging.DEBUG)

    for payload in (
        {"order_id": EMAIL, "event": "order_paid", "order_value": 50.0, "currency": "EUR", "consent": granted},
        {"order_id": EMAIL, "event": "partial_refund", "refund_id": EMAIL, "refund_amount": 10.0, "currency": "EUR",
         "consent": granted},
    ):
        assert webhook(client, payload).status_code < 300
    assert webhook(client, {"order_id": EMAIL, "event": "partial_refund", "refund_id": EMAIL, "refund_amount": 10.0,
                            "currency": "EUR", "consent": granted}).status_code < 300  # redelivered

    ledger_lines = [r for r in caplog.records if r.getMessage() in ("order ledger", "redelivered request ignored")]
    assert ledger_lines
    for record in caplog.records:
        text = orjson.dumps({k: v for k, v in record.__dict__.items() if isinstance(v, (str, int, float, list))},
                            default=str).decode() + record.getMessage()
        for form in forms(EMAIL):
            assert form not in text, record.getMessage()


# -- the install secret on PostgreSQL ------------------------------------------------------------


async def test_postgres_install_secret_is_made_once_and_shared_by_instances_starting_together() -> None:
    async with fresh_database() as url:
        stores = [PostgresStorage(url, pool_size=1) for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            keys = await asyncio.gather(*(s.install_secret(PSEUDONYM_SECRET) for s in stores))
            other = await stores[0].install_secret("another")
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        again = PostgresStorage(url, pool_size=1)
        await again.open()
        try:
            reopened = await again.install_secret(PSEUDONYM_SECRET)
        finally:
            await again.close()

    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert reopened == keys[0] and other != keys[0]


def test_postgres_ids_are_pseudonymised_with_the_databases_secret(make_client, db_path) -> None:
    with shared_database() as url:
        client = make_client(CONTAINER + f"storage:\n  url: {url}\n", run_dispatcher=False)
        ga4(client, f"cid={quote(EMAIL)}")

        async def read() -> tuple[bytes, str]:
            conn = await asyncpg.connect(url)
            try:
                key = await conn.fetchval("SELECT secret FROM install_secrets WHERE name = $1", PSEUDONYM_SECRET)
                item = await conn.fetchval("SELECT item::text FROM outbox")
            finally:
                await conn.close()
            return bytes(key), item

        key, item = asyncio.run(read())
        client.__exit__(None, None, None)

    assert orjson.loads(item)["client_id"] == "pid-" + hmac.new(key, EMAIL.encode(), hashlib.sha256).hexdigest()[:32]
    assert EMAIL.lower() not in item.lower()


# -- canaries anywhere in an event (property) ----------------------------------------------------

ALL_DENIED = ConsentDefaults()
ALL_GRANTED = ConsentDefaults(ad_storage="granted", analytics_storage="granted", ad_user_data="granted",
                              ad_personalization="granted")


def canary_forms(canary: str) -> list[str]:
    digits = re.sub(r"\D", "", canary)
    return forms(canary) + ([digits] if canary[0] in "+0123456789(" else [])


@st.composite
def canaries(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 9999))
    return draw(st.sampled_from([f"Jx{n}.Doe@canary{n}.example", f"+44 20 7946 {n:04d}", f"415.555.{n:04d}",
                                 f"(415) 555-{n:04d}"]))


def encoded(value: str, times: int) -> str:
    for _ in range(times):
        value = quote(value, safe="")
    return value


@st.composite
def placed(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A canary and the event fields that hold it, in one of the places personal data hides."""
    canary = draw(canaries())
    where = draw(st.sampled_from(["query", "path", "fragment", "title", "agent", "language", "id", "extra", "text",
                                  "key", "deep_item", "user_property", "list"]))
    times = draw(st.integers(0, 2))
    param = draw(st.sampled_from(["q", "ref", "email", "x"]))
    url_field = draw(st.sampled_from(["page_location", "page_referrer"]))
    if where == "query":
        return canary, {url_field: f"https://shop.example/p?step=1&{param}={encoded(canary, times)}"}
    if where == "path":
        return canary, {url_field: f"https://shop.example/u/{encoded(canary, times)}/done"}
    if where == "fragment":
        return canary, {url_field: f"https://shop.example/p#/thanks?{param}={encoded(canary, times)}"}
    if where in ("title", "agent", "language"):
        name = {"title": "page_title", "agent": "user_agent", "language": "language"}[where]
        return canary, {name: f"Hello {canary} there"}
    if where == "id":
        return canary, {draw(st.sampled_from(["client_id", "event_id", "transaction_id", "user_id"])): canary}
    if where == "extra":
        return canary, {"extra": {draw(st.sampled_from(["note", "ref", "v"])): canary}}
    if where == "text":
        return canary, {"extra": {"note": f"reach me at {canary} please"}}
    if where == "key":
        return canary, {"extra": {canary: "yes"}}
    if where == "deep_item":
        return canary, {"items": [{"item_id": "SKU-1", "details": {"deep": [{"v": canary}, [f"to {canary}"]]}}]}
    if where == "user_property":
        return canary, {"user_properties": {"p": canary}}
    return canary, {"extra": {"list": [[canary]]}}


@settings(max_examples=300, deadline=None)
@given(placed())
def test_no_canary_survives_denied_consent_wherever_it_is_put(case: tuple[str, dict[str, Any]]) -> None:
    canary, fields = case
    denied = Event.from_data({"event_name": "purchase", **copy.deepcopy(fields)})
    granted = Event.from_data({"event_name": "purchase", **copy.deepcopy(fields)})

    apply_consent(denied, ALL_DENIED)
    apply_consent(granted, ALL_GRANTED)

    text = orjson.dumps(denied.to_json_dict()).decode()
    for form in canary_forms(canary):
        assert form not in text, (form, text)
    kept = orjson.dumps(granted.to_json_dict()).decode()
    assert any(form in kept for form in canary_forms(canary) + [encoded(canary, 1), encoded(canary, 2)])


def test_an_address_dressed_as_a_pseudonym_is_still_pseudonymised() -> None:
    event = Event(event_name="x", client_id=f"pid-{EMAIL}", user_id="pid-" + "0" * 32)

    apply_consent(event, ALL_DENIED)

    assert re.fullmatch(r"pid-[0-9a-f]{32}", event.client_id or "") and EMAIL not in (event.client_id or "")
    assert event.user_id == "pid-" + "0" * 32  # a real pseudonym is not pseudonymised again


def test_a_digest_inside_an_id_or_a_text_goes_too(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    beacon(client, {"event_id": f"cancel:{HEX}", "page_title": f"t {B64URL} t", "user_agent": f"UA sha256:{B64}"})

    assert_nowhere(db_path, EMAIL)
    (item,) = outbox_items(db_path)
    assert re.fullmatch(r"pid-[0-9a-f]{32}", item["event_id"])
    assert (item["page_title"], item["user_agent"]) == ("t [redacted] t", "UA [redacted]")


def test_a_phone_number_as_a_url_path_segment_goes(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    beacon(client, {"page_location": f"https://shop.example/call/{PHONE_DIGITS}/back"})

    (item,) = outbox_items(db_path)
    assert item["page_location"] == "https://shop.example/call/[redacted]/back"


def test_an_address_in_a_webhooks_idempotency_key_is_stored_only_as_its_pseudonym(make_client, db_path) -> None:
    client = make_client(WEBHOOK_CONTAINER, run_dispatcher=False)
    payload = orjson.dumps({"order_id": "ORD-7", "event": "order_paid", "order_value": 5.0, "currency": "EUR"})
    signature = "sha256=" + hmac.new(b"fixture-secret-0123456789", payload, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-signature": signature, "idempotency-key": EMAIL}

    first = client.post("/webhooks/order-update", content=payload, headers=headers)
    again = client.post("/webhooks/order-update", content=payload, headers=headers)

    assert first.status_code < 300 and again.status_code < 300
    assert_nowhere(db_path, EMAIL)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        keys = [row[0] for row in conn.execute("SELECT key FROM request_keys")]
    assert len(keys) == 1 and re.fullmatch(r"pid-[0-9a-f]{32}", keys[0])
    assert len(outbox_items(db_path)) == 1  # the redelivery was still recognised


def test_a_phone_number_as_a_webhooks_idempotency_key_is_stored_only_as_its_pseudonym(make_client, db_path) -> None:
    client = make_client(WEBHOOK_CONTAINER, run_dispatcher=False)
    payload = orjson.dumps({"order_id": "ORD-8", "event": "order_paid", "order_value": 5.0, "currency": "EUR"})
    signature = "sha256=" + hmac.new(b"fixture-secret-0123456789", payload, hashlib.sha256).hexdigest()

    response = client.post("/webhooks/order-update", content=payload, headers={
        "content-type": "application/json", "x-signature": signature, "idempotency-key": "1" + PHONE_DIGITS})

    assert response.status_code < 300
    assert_nowhere(db_path, PHONE_DIGITS)


def test_a_phone_number_of_digits_alone_used_as_a_key_goes(make_client, db_path) -> None:
    client = make_client(CONTAINER, run_dispatcher=False)

    beacon(client, {"items": [{"item_id": "SKU-1", PHONE_DIGITS: "call"}], "extra": {f"k {HEX}": 1}})

    assert_nowhere(db_path, PHONE_DIGITS, EMAIL)
    (item,) = outbox_items(db_path)
    assert item["items"] == [{"item_id": "SKU-1"}] and item["extra"] == {}


WOO_SECRET = "fixture-secret-0123456789"
WOO_CONTAINER = f"""
clients:
  - type: woocommerce
    secret: {WOO_SECRET}
triggers:
  everything: {{all: []}}
tags:
  - name: sink
    type: http_request
    trigger: everything
    url: http://127.0.0.1:9/unused
    mode: dry_run
"""


def test_a_phone_number_used_as_a_woocommerce_order_id_leaves_no_trace_through_its_refund(make_client, db_path) -> None:
    # Found by the canary test at 2,000 examples: the refund's id embeds the order number
    # ("woocommerce:<id>:refunded"), which the check for ids of digits alone did not look inside.
    from datetime import datetime, timezone

    SECRET = WOO_SECRET

    client = make_client(WOO_CONTAINER, run_dispatcher=False)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    consent = {"ad_storage": "denied", "analytics_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"}
    body = {"id": "13053290282", "status": "processing", "currency": "EUR", "total": "5.00",
            "date_created_gmt": stamp, "date_paid_gmt": stamp, "date_modified_gmt": stamp,
            "meta_data": [{"id": 2 + i, "key": f"_{k}", "value": v} for i, (k, v) in enumerate(consent.items())],
            "line_items": [{"id": 1, "name": "Mug", "product_id": 1, "sku": "SKU-1", "quantity": 1, "price": 5.0}]}
    raw = orjson.dumps(body)
    sig = base64.b64encode(hmac.new(SECRET.encode(), raw, hashlib.sha256).digest()).decode()
    r = client.post("/webhooks/woocommerce", content=raw, headers={"Content-Type": "application/json", "X-WC-Webhook-Topic": "order.created",
            "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "created", "X-WC-Webhook-Source": "https://shop.example/",
            "X-WC-Webhook-Delivery-ID": "dl-1", "X-WC-Webhook-Signature": sig})
    assert r.status_code < 300, r.text
    body["status"] = "refunded"
    raw = orjson.dumps(body)
    sig = base64.b64encode(hmac.new(SECRET.encode(), raw, hashlib.sha256).digest()).decode()
    r = client.post("/webhooks/woocommerce", content=raw, headers={"Content-Type": "application/json", "X-WC-Webhook-Topic": "order.updated",
            "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "updated", "X-WC-Webhook-Source": "https://shop.example/",
            "X-WC-Webhook-Delivery-ID": "dl-1-2", "X-WC-Webhook-Signature": sig})
    assert r.status_code < 300, r.text
    assert_nowhere(db_path, "13053290282")
    assert b"3053290282" not in stored_bytes(db_path)


def test_a_base64_digest_percent_encoded_in_a_path_or_with_a_bare_plus_in_a_query_goes() -> None:
    # Found by the canary test at 2,000 examples: "%2B"/"%2F"/"%3D" inside one path segment, and a "+" that
    # unquote_plus would have read as a space.
    from gateway.redact import redact_url

    digest = base64.b64encode(hashlib.sha256(b"cnryfgnrjw2821z@example.org").digest()).decode()
    assert "+" in digest
    for url in (f"https://shop.example/p/{quote(digest, safe='')}/x", f"https://shop.example/r?q={digest}",
                f"https://shop.example/r?q={digest.rstrip('=')}&a=1"):
        redacted = redact_url(url, frozenset())
        assert digest.rstrip("=") not in redacted and quote(digest, safe="")[:20] not in redacted, url
    assert redact_url("https://shop.example/s?q=red+shoes+size+42", frozenset()).endswith("q=red+shoes+size+42")


def test_a_digest_glued_to_an_ids_prefix_makes_the_id_personal() -> None:
    # Found by the canary test's third run at 2,000 examples: a refund id "RF-<event id>" whose event id was a
    # base64url digest was stored, logged and shown as it came.
    from gateway.redact import identifier_is_personal

    assert identifier_is_personal(f"RF-{B64URL}", numeric_id=True)
    assert identifier_is_personal("RF-" + base64.urlsafe_b64encode(
        hashlib.sha256(b"cnryovyxnw1217z@example.org").digest()).decode().rstrip("="), numeric_id=True)
    assert not identifier_is_personal("RF-ORD-1001", numeric_id=True)
