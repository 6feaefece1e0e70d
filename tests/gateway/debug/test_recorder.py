"""Recording over the real app: every step of a request's path lands in its trace, masked."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from typing import Any, Callable

import aiohttp
import orjson
import pytest

from clients import CLIENTS
from gateway.debug.recorder import CLIENT_CONSENT_SOURCE
from gateway.debug.senders import TracingSender
from gateway.logs import JsonFormatter
from tests.conftest import container_from
from tests.fakes.http_sink import HttpSink, Reply
from tests.gateway.debug.support import AUTH, EMAIL, PHONE, debug_container, signed
from tests.running import serve_in_loop, wait_until

TRACE_ID = re.compile(r"^[0-9a-f]{16}$")


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.02)


def settled_trace(client: Any, trace_id: str) -> dict[str, Any]:
    """The trace once no delivery of it is waiting any more."""

    def check() -> dict[str, Any] | None:
        response = client.get(f"/debug/api/traces/{trace_id}", headers=AUTH)
        if response.status_code != 200:
            return None
        trace = response.json()
        return trace if all(d["status"] != "pending" for d in trace["delivery_items"]) else None

    return wait_for(check)


def beacon(client: Any, body: dict[str, Any]) -> str:
    response = client.post("/collect", content=orjson.dumps(body), headers={"Content-Type": "text/plain"})
    assert response.status_code == 204, response.text
    return response.headers["X-Gateway-Trace"]


def test_every_collection_answer_carries_a_trace_id_even_with_the_debugger_off(make_client, db_path):
    client = make_client(debug_container(db_path, enabled=False))
    gateway = client.app.state.gateway

    ok = client.post("/collect", json={"event_name": "page_view"})
    refused = client.post("/collect", content=b"{", headers={"Content-Type": "application/json"})

    assert ok.status_code == 204 and TRACE_ID.match(ok.headers["X-Gateway-Trace"])
    assert refused.status_code == 400 and TRACE_ID.match(refused.headers["X-Gateway-Trace"])
    assert ok.headers["X-Gateway-Trace"] != refused.headers["X-Gateway-Trace"]
    assert "x-gateway-trace" not in client.get("/healthz").headers
    assert gateway.debug is None and gateway.pipeline.observe is None
    assert not any(isinstance(s, TracingSender) for s in gateway.dispatcher.senders.values())
    assert client.get("/debug", headers=AUTH).status_code == 404


def test_ga4_hit_records_each_consent_signal_with_the_field_that_set_it(make_client, db_path):
    client = make_client(debug_container(db_path))
    # gcs sets ad_storage (granted) and analytics_storage (denied); gcd only ad_user_data (r: granted).
    response = client.get("/g/collect?v=2&tid=G-TEST&cid=555.1&en=page_view&gcs=G110&gcd=13l3l3r2l5l1")

    trace = settled_trace(client, response.headers["X-Gateway-Trace"])

    assert trace["runs"][0]["consent"] == [
        {"signal": "ad_storage", "state": "granted", "source": "gcs"},
        {"signal": "analytics_storage", "state": "denied", "source": "gcs"},
        {"signal": "ad_user_data", "state": "granted", "source": "gcd"},
        {"signal": "ad_personalization", "state": "denied", "source": "default"},
    ]
    assert trace["client"] == "ga4" and trace["status"] == 204


def test_beacon_with_consent_granted_leaves_no_personal_data_in_its_trace(make_client, db_path):
    client = make_client(debug_container(db_path))
    trace_id = beacon(client, {
        "event_name": "generate_lead", "client_id": "555.1",
        "consent": {"ad_user_data": "granted", "ad_storage": "granted"},
        "user_data": {"email_address": EMAIL, "phone_number": PHONE},
    })

    trace = settled_trace(client, trace_id)
    text = json.dumps(trace)

    assert "jane" not in text and "gmail" not in text and "23456767" not in text
    run = trace["runs"][0]
    assert [c["source"] for c in run["consent"]] == ["json", "default", "json", "default"]
    assert run["removed"] == []
    assert run["event"]["user_data"] == {"email_address": "j***@g***.com", "phone_number": "+49 *** ** 67"}
    [delivery] = trace["delivery_items"]
    assert (delivery["tag"], delivery["status"]) == ("forward", "delivered")
    [attempt] = delivery["attempts"]
    assert (attempt["outcome"], attempt["code"]) == ("delivered", "dry_run")
    assert attempt["requests"][0]["url"] == "https://hooks.example/events"
    assert attempt["requests"][0]["body"]["user_data"] == {"email_address": "j***@g***.com", "phone_number": "+49 *** ** 67"}


def test_consent_denied_trace_lists_the_fields_consent_removed(make_client, db_path):
    client = make_client(debug_container(db_path))
    trace_id = beacon(client, {"event_name": "generate_lead", "consent": {"ad_user_data": "denied", "ad_storage": "denied"},
                               "user_data": {"email_address": EMAIL}, "fbp": "fb.1.1732360000.42"})

    run = settled_trace(client, trace_id)["runs"][0]

    assert run["removed"] == ["user_data", "fbp"]
    assert "user_data" not in run["event"]


def test_false_trigger_names_its_first_failing_condition_and_skipped_tags_their_reason(make_client, db_path):
    client = make_client(debug_container(db_path))
    trace_id = beacon(client, {"event_name": "purchase", "transaction_id": "ORD-7", "value": 50, "currency": "EUR"})

    trace = settled_trace(client, trace_id)
    run = trace["runs"][0]

    assert run["triggers"] == [
        {"trigger": "everything", "tags": ["forward"], "result": True, "failed": None},
        {"trigger": "purchase", "tags": ["gads_purchase"], "result": True, "failed": None},
        {"trigger": "big_purchase", "tags": ["big_only"], "result": False, "failed": "all[1]: value gte 100"},
    ]
    assert run["fired"] == ["forward", "gads_purchase"]
    assert run["skipped"] == [{"tag": "gads_purchase", "reason": "no_click_id_or_identifier"}]


def test_refused_request_is_traced_with_its_status_and_error(make_client, db_path):
    client = make_client(debug_container(db_path))
    response = client.post("/collect", json={"value": 3, "user_data": {"email_address": EMAIL}})
    assert response.status_code == 400

    trace = client.get(f"/debug/api/traces/{response.headers['X-Gateway-Trace']}", headers=AUTH).json()

    assert (trace["status"], trace["outcome"]) == (400, "rejected")
    assert trace["error"]["error"] == "invalid event"
    assert trace["request"]["body"] == {"value": 3, "user_data": {"email_address": "j***@g***.com"}}
    assert trace["runs"] == [] and trace["delivery_items"] == []


def test_trace_id_is_in_every_log_line_written_about_the_request(make_client, db_path):
    client = make_client(debug_container(db_path, enabled=False))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.pipeline")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        response = client.post("/collect", json={"event_name": "purchase", "transaction_id": "ORD-8", "value": 5})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["tag skipped event"]
    assert lines[0]["trace_id"] == response.headers["X-Gateway-Trace"]


def test_a_restatements_trace_says_which_value_it_used(make_client, db_path):
    client = make_client(debug_container(db_path))
    beacon(client, {"event_name": "purchase", "transaction_id": "ORD-8", "value": 100.0, "currency": "EUR",
                    "gclid": "Cj0-test"})
    for payload in ({"order_id": "ORD-8", "event": "order_paid", "order_value": 124.0, "currency": "EUR"},
                    {"order_id": "ORD-8", "event": "partial_refund", "refund_amount": 62.0, "currency": "EUR",
                     "refund_id": "RF-8"}):
        body = orjson.dumps(payload)
        response = client.post("/webhooks/order-update", content=body, headers=signed(body))
        assert response.status_code == 200

    trace = settled_trace(client, response.headers["X-Gateway-Trace"])

    assert trace["ledger"] == [{
        "order_id": "ORD-8", "decision": "restatement", "change_id": "RF-8",
        "value_used": {"basis": "share_of_order_total", "adjusted_value": "50.00", "order_total": "124.0",
                       "uploaded_value": "100.0"},
    }]


def test_order_webhook_trace_shows_the_ledger_decision_and_webhook_consent(make_client, db_path):
    client = make_client(debug_container(db_path))
    body = orjson.dumps({"order_id": "ORD-9", "event": "order_paid", "order_value": 120.0, "currency": "EUR",
                         "gclid": "Cj0-test", "customer": {"email": EMAIL},
                         "consent": {"ad_user_data": "granted", "ad_storage": "granted"}})
    response = client.post("/webhooks/order-update", content=body, headers=signed(body))
    assert response.status_code == 200

    trace = settled_trace(client, response.headers["X-Gateway-Trace"])

    assert trace["ledger"] == [{"order_id": "ORD-9", "decision": "order_recorded", "change_id": None}]
    assert [c["source"] for c in trace["runs"][0]["consent"]] == ["webhook", "default", "webhook", "default"]
    assert trace["runs"][0]["fired"] == ["forward", "gads_purchase", "big_only"]
    assert {d["tag"]: d["status"] for d in trace["delivery_items"]} == {
        "forward": "delivered", "gads_purchase": "delivered", "big_only": "delivered",
    }
    assert trace["request"]["headers"]["x-signature"] == "***"
    assert "jane" not in json.dumps(trace)


def test_batched_ga4_post_attributes_each_delivery_to_its_event(make_client, db_path):
    client = make_client(debug_container(db_path))
    body = "en=page_view&ep.event_id=e1\r\nen=scroll&ep.event_id=e2"
    response = client.post("/g/collect?v=2&tid=G-TEST&cid=555.1", content=body.encode())

    trace = settled_trace(client, response.headers["X-Gateway-Trace"])

    assert [(r["event_name"], r["deliveries"]) for r in trace["runs"]] == [
        ("page_view", ["http_request:forward:e1"]), ("scroll", ["http_request:forward:e2"]),
    ]


def test_keep_last_bounds_the_traces_kept_in_memory(make_client, db_path):
    client = make_client(debug_container(db_path, keep_last=2))
    ids = [beacon(client, {"event_name": f"e{i}"}) for i in range(3)]

    listed = client.get("/debug/api/traces", headers=AUTH).json()

    assert [t["id"] for t in listed["traces"]] == [ids[2], ids[1]]
    assert (listed["kept"], listed["keep_last"]) == (2, 2)


async def test_live_delivery_records_each_attempt_with_the_vendors_answer_and_the_request_sent(tmp_path):
    async with HttpSink() as sink:
        sink.script(500, Reply(400, body=b'{"error": "invalid address jane.doe@gmail.com"}'))
        container = container_from(debug_container(tmp_path / "g.db", sink_url=sink.url), tmp_path / "g.db")
        async with serve_in_loop(container) as base, aiohttp.ClientSession(headers=AUTH) as session:
            async with session.post(f"{base}/collect", json={"event_name": "sign_up", "consent": {"ad_user_data": "granted"},
                                                             "user_data": {"email_address": EMAIL}}) as response:
                trace_id = response.headers["X-Gateway-Trace"]

            async def dead() -> bool:
                async with session.get(f"{base}/debug/api/traces/{trace_id}") as r:
                    trace.update(await r.json())
                return trace["outcome"] == "dead_letter"

            trace: dict[str, Any] = {}
            await wait_until(dead)

    [delivery] = trace["delivery_items"]
    assert [(a["attempt"], a["outcome"], a["code"], a["next"]) for a in delivery["attempts"]] == [
        (1, "retry", "http_500", "retry"), (2, "permanent", "http_400", "dead_letter"),
    ]
    assert delivery["attempts"][1]["message"] == 'HTTP 400: {"error": "invalid address j***@g***.com"}'
    request = delivery["attempts"][1]["requests"][0]
    assert request["url"] == f"{sink.url}/hook"
    assert request["headers"]["Authorization"] == "***"
    assert request["body"]["user_data"] == {"email_address": "j***@g***.com"}
    assert "jane" not in json.dumps(trace)
    assert [r.json()["user_data"]["email_address"] for r in sink.requests] == [EMAIL, EMAIL]  # the vendor got it


async def test_live_delivery_after_a_retry_ends_delivered(tmp_path):
    async with HttpSink() as sink:
        sink.script(503)
        container = container_from(debug_container(tmp_path / "g.db", sink_url=sink.url), tmp_path / "g.db")
        async with serve_in_loop(container) as base, aiohttp.ClientSession(headers=AUTH) as session:
            async with session.post(f"{base}/collect", json={"event_name": "sign_up"}) as response:
                trace_id = response.headers["X-Gateway-Trace"]
            trace: dict[str, Any] = {}

            async def delivered() -> bool:
                async with session.get(f"{base}/debug/api/traces/{trace_id}") as r:
                    trace.update(await r.json())
                return trace["outcome"] == "delivered"

            await wait_until(delivered)

    assert [(a["outcome"], a["code"]) for a in trace["delivery_items"][0]["attempts"]] == [
        ("retry", "http_503"), ("delivered", "http_200"),
    ]
    assert all(a["send_ms"] >= 0 and a["waited_ms"] >= 0 for a in trace["delivery_items"][0]["attempts"])


@pytest.mark.parametrize("enabled", [pytest.param(True, id="enabled"), pytest.param(False, id="disabled")])
def test_collection_answers_are_the_same_with_the_debugger_on_or_off(make_client, db_path, enabled):
    client = make_client(debug_container(db_path, enabled=enabled))

    response = client.options("/collect", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert TRACE_ID.match(response.headers["X-Gateway-Trace"])


def test_every_client_names_its_consent_source():
    # GA4 notes gcs or gcd per signal in ClientResult.consent_sources; every other client has one source.
    assert set(CLIENTS) - {"ga4"} == set(CLIENT_CONSENT_SOURCE)
