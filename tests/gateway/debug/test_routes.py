"""The /debug page and API: off unless enabled, behind the token, no CORS, and its actions."""

from __future__ import annotations

import json
import time

import aiohttp
import orjson
import pytest

from gateway.config import load_container_text
from gateway.debug.auth import DebugAuth
from gateway.errors import ConfigError
from tests.conftest import container_from
from tests.fakes.http_sink import HttpSink
from tests.gateway.debug.support import AUTH, EMAIL, TOKEN, debug_container, signed
from tests.gateway.debug.test_recorder import beacon, settled_trace, wait_for
from tests.running import ROOT, serve_in_loop, wait_until

API_PATHS = ["/debug/api/meta", "/debug/api/traces", "/debug/api/traces/0123456789abcdef", "/debug/api/dead-letters",
             "/debug/api/dry-runs", "/debug/api/orders/ORD-1"]


@pytest.mark.parametrize("path", ["/debug", *API_PATHS, "/debug/static/debugger.js"])
def test_debugger_answers_404_everywhere_when_not_enabled(make_client, db_path, path):
    client = make_client(debug_container(db_path, enabled=False))

    response = client.get(path, headers=AUTH)

    assert response.status_code == 404
    assert response.json() == {"error": "not found", "detail": None}


@pytest.mark.parametrize("path", API_PATHS)
def test_api_answers_401_without_the_token_or_with_a_wrong_one(make_client, db_path, path):
    client = make_client(debug_container(db_path))

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.json() == {"error": "unauthorized", "detail": None}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_page_without_the_token_is_a_401_login_form(make_client, db_path):
    client = make_client(debug_container(db_path))

    response = client.get("/debug")

    assert response.status_code == 401
    assert '<form method="post" action="/debug/login"' in response.text
    assert client.get("/debug", headers=AUTH).status_code == 200


def test_login_form_sets_an_httponly_samesite_strict_cookie_that_opens_the_api(make_client, db_path):
    client = make_client(debug_container(db_path))

    wrong = client.post("/debug/login", data={"token": "guess"}, follow_redirects=False)
    right = client.post("/debug/login", data={"token": TOKEN}, follow_redirects=False)

    assert wrong.status_code == 401 and "That token is not the debug token." in wrong.text
    assert right.status_code == 303 and right.headers["location"] == "/debug"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("gateway_debug=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/debug" in cookie
    assert client.get("/debug/api/meta").status_code == 200  # the client keeps the cookie
    client.post("/debug/logout", json={})
    assert client.get("/debug/api/meta").status_code == 401


def test_session_cookie_expires_and_cannot_be_forged():
    auth = DebugAuth(TOKEN)
    now = time.time()
    cookie = auth.session_cookie(now)
    expires, _, mac = cookie.partition(".")

    assert auth.cookie_ok(cookie, now)
    assert not auth.cookie_ok(cookie, now + 9 * 3600)
    assert not auth.cookie_ok(f"{int(expires) + 3600}.{mac}", now)
    assert not DebugAuth("another-token").cookie_ok(cookie, now)
    assert not auth.cookie_ok("garbage", now)


def test_enabling_the_debugger_without_a_token_is_a_config_error():
    for token in ("", "   "):
        with pytest.raises(ConfigError) as caught:
            load_container_text(f"debug: {{enabled: true, token: '{token}'}}", {})
        assert caught.value.errors == ["debug: Value error, debug.token must be set when debug.enabled is true"]


def test_debug_routes_never_answer_with_cors_headers(make_client, db_path):
    client = make_client(debug_container(db_path))
    origin = {"Origin": "https://shop.example"}

    preflight = client.options("/debug/api/traces", headers={**origin, "Access-Control-Request-Method": "GET"})
    read = client.get("/debug/api/traces", headers={**origin, **AUTH})

    for response in (preflight, read):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    assert preflight.status_code == 405
    assert read.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert read.headers["Cache-Control"] == "no-store"


def test_api_posts_need_a_json_content_type(make_client, db_path):
    client = make_client(debug_container(db_path))

    response = client.post("/debug/api/explain", content=b"request=x", headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == 415


def test_list_filters_by_client_event_tag_outcome_and_searches_ids(make_client, db_path):
    client = make_client(debug_container(db_path))
    purchase = beacon(client, {"event_name": "purchase", "transaction_id": "ORD-42", "value": 150, "currency": "EUR"})
    view = client.get("/g/collect?v=2&tid=G-TEST&en=page_view").headers["X-Gateway-Trace"]
    refused = client.post("/collect", json={"value": 1}).headers["X-Gateway-Trace"]
    settled_trace(client, purchase)

    def ids(query: str) -> list[str]:
        return [t["id"] for t in client.get(f"/debug/api/traces?{query}", headers=AUTH).json()["traces"]]

    assert ids("client=ga4") == [view]
    assert ids("event=purchase") == [purchase]
    assert ids("tag=big_only") == [purchase]
    assert ids("outcome=rejected") == [refused]
    assert ids("q=ORD-42") == [purchase]
    assert ids(f"q={view[:6]}") == [view]
    assert ids("q=ORD-404") == []


def test_list_answers_unchanged_when_nothing_changed_since_the_last_poll(make_client, db_path):
    client = make_client(debug_container(db_path))
    settled_trace(client, beacon(client, {"event_name": "page_view"}))
    seq = client.get("/debug/api/traces", headers=AUTH).json()["seq"]

    assert client.get(f"/debug/api/traces?known={seq}", headers=AUTH).json() == {"seq": seq, "unchanged": True}
    beacon(client, {"event_name": "scroll"})
    assert len(client.get(f"/debug/api/traces?known={seq}", headers=AUTH).json()["traces"]) == 2


def test_explain_shows_the_path_of_a_pasted_request_and_stores_nothing(make_client, db_path):
    client = make_client(debug_container(db_path), run_dispatcher=False)
    gateway = client.app.state.gateway
    request = {"method": "POST", "path": "/collect", "headers": {"Content-Type": "application/json"},
               "body": {"event_name": "purchase", "transaction_id": "ORD-5", "value": 120, "currency": "EUR",
                        "gclid": "Cj0-test", "consent": {"ad_user_data": "granted"}, "user_data": {"email_address": EMAIL}}}

    response = client.post("/debug/api/explain", json={"request": request}, headers=AUTH)

    assert response.status_code == 200
    result = response.json()
    assert result["note"] == "explain: nothing was stored or sent"
    assert result["runs"][0]["fired"] == ["forward", "gads_purchase", "big_only"]
    outgoing = {d["tag"]: d["attempts"][0]["requests"][0] for d in result["delivery_items"]}
    event = outgoing["gads_purchase"]["body"]["events"][0]
    assert event["adIdentifiers"]["gclid"] == "Cj0-test" and event["transactionId"] == "ORD-5"
    assert event["userData"]["userIdentifiers"][0]["emailAddress"].endswith("…")
    assert outgoing["gads_purchase"]["url"] == "https://datamanager.googleapis.com/v1/events:ingest"
    assert "jane" not in json.dumps(result)
    assert client.get("/debug/api/traces", headers=AUTH).json()["traces"] == []
    assert client.get("/debug/api/dry-runs", headers=AUTH).json() == []

    async def pending() -> int:
        return await gateway.storage.pending_count()

    assert client.portal.call(pending) == 0


def test_explain_of_a_recorded_request_and_of_a_bad_description(make_client, db_path):
    client = make_client(debug_container(db_path))
    trace_id = beacon(client, {"event_name": "page_view"})

    recorded = client.post("/debug/api/explain", json={"trace_id": trace_id}, headers=AUTH)
    bad = client.post("/debug/api/explain", json={"request": {"method": "POST", "path": "no-slash"}}, headers=AUTH)
    missing = client.post("/debug/api/explain", json={"trace_id": "0000000000000000"}, headers=AUTH)

    assert recorded.status_code == 200 and recorded.json()["runs"][0]["fired"] == ["forward"]
    assert bad.status_code == 400 and bad.json()["detail"] == {"problem": "path: expected a path starting with /"}
    assert missing.status_code == 404


def test_resend_puts_the_recorded_event_through_dry_run_destinations_without_its_personal_data(make_client, db_path):
    client = make_client(debug_container(db_path))
    original = beacon(client, {"event_name": "purchase", "transaction_id": "ORD-6", "value": 30, "currency": "EUR",
                               "gclid": "Cj0-resend", "consent": {"ad_user_data": "granted"}, "user_data": {"email_address": EMAIL}})
    settled_trace(client, original)
    before = len(client.get("/debug/api/dry-runs?last=100", headers=AUTH).json())

    response = client.post(f"/debug/api/traces/{original}/resend", json={}, headers=AUTH)

    assert response.status_code == 200
    resent = response.json()
    assert resent["note"] == f"resend of {original} to dry-run destinations; masked values were left out"
    assert resent["runs"][0]["event"].get("user_data") is None
    assert {d["tag"]: d["status"] for d in resent["delivery_items"]} == {"forward": "dry_run", "gads_purchase": "dry_run"}
    records = client.get("/debug/api/dry-runs?last=100", headers=AUTH).json()
    assert len(records) == before + 2
    assert client.get(f"/debug/api/traces/{resent['id']}", headers=AUTH).status_code == 200


async def test_dead_letters_are_listed_masked_and_replayed_from_the_api(tmp_path):
    async with HttpSink() as sink:
        sink.script(400)
        container = container_from(debug_container(tmp_path / "g.db", sink_url=sink.url), tmp_path / "g.db")
        async with serve_in_loop(container) as base, aiohttp.ClientSession(headers=AUTH) as session:
            async with session.post(f"{base}/collect", json={"event_name": "sign_up", "consent": {"ad_user_data": "granted"},
                                                             "user_data": {"email_address": EMAIL}}) as response:
                trace_id = response.headers["X-Gateway-Trace"]
            letters: list = []

            async def listed() -> bool:
                async with session.get(f"{base}/debug/api/dead-letters") as r:
                    letters[:] = await r.json()
                return bool(letters)

            await wait_until(listed)
            async with session.post(f"{base}/debug/api/dead-letters/replay", json={"ids": [letters[0]["id"]]}) as r:
                replayed = await r.json()
            await wait_until(lambda: len(sink.requests) == 2)
            async with session.post(f"{base}/debug/api/dead-letters/replay", json={"ids": []}) as r:
                empty = r.status

    assert letters[0]["trace_id"] == trace_id
    assert (letters[0]["tag"], letters[0]["code"]) == ("forward", "http_400")
    assert letters[0]["item"]["user_data"] == {"email_address": "j***@g***.com"}
    assert replayed == {"replayed": 1}
    assert empty == 400


def test_order_lookup_shows_the_ledger_report(make_client, db_path):
    client = make_client(debug_container(db_path))
    body = orjson.dumps({"order_id": "ORD-77", "event": "order_paid", "order_value": 20.0, "currency": "EUR", "gclid": "Cj0-x"})
    assert client.post("/webhooks/order-update", content=body, headers=signed(body)).status_code == 200

    report = wait_for(lambda: client.get("/debug/api/orders/ORD-77", headers=AUTH).json())

    assert report["order"]["order_id"] == "ORD-77" and report["order"]["gclid"] == "Cj0-x"
    assert client.get("/debug/api/orders/ORD-404", headers=AUTH).status_code == 404


def test_page_assets_are_served_and_shipped_with_the_package(make_client, db_path):
    client = make_client(debug_container(db_path))
    pyproject = (ROOT / "pyproject.toml").read_text()

    script = client.get("/debug/static/debugger.js")
    style = client.get("/debug/static/debugger.css")

    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert client.get("/debug/static/../routes.py").status_code == 404
    assert '"debug/static/*"' in pyproject


def test_explain_shows_an_ids_pseudonym_as_it_is_stored_under_the_installs_key(make_client, db_path):
    # An operator matches what the debugger shows with what the outbox holds: with ad_user_data denied, a
    # client id that is an address is the install's keyed pseudonym in both, not one made with a key of its own.
    from tests.gateway.test_redaction import pseudonym

    client = make_client(debug_container(db_path), run_dispatcher=False)
    request = {"method": "POST", "path": "/collect", "headers": {"Content-Type": "application/json"},
               "body": {"event_name": "page_view", "client_id": EMAIL, "consent": {"ad_user_data": "denied"}}}

    response = client.post("/debug/api/explain", json={"request": request}, headers=AUTH)

    assert response.status_code == 200
    outgoing = {d["tag"]: d["attempts"][0]["requests"][0] for d in response.json()["delivery_items"]}
    assert outgoing["forward"]["body"]["client_id"] == pseudonym(db_path, EMAIL)
