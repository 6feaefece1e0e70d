"""Click ids in a page URL: every client reads gclid, gbraid, wbraid and fbclid the same way."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from clients import ga4, json_beacon, shopify
from gateway.client import RawRequest
from tests.clients.test_shopify import CONFIG, signed  # the Shopify tests' own config and signing

RECEIVED_AT = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
IDS = ("gclid", "gbraid", "wbraid", "fbclid")

URLS = [
    pytest.param("https://shop.example/p?utm_source=fb&fbclid=IwAR-example-fbclid",
                 {"fbclid": "IwAR-example-fbclid"}, id="fbclid"),
    pytest.param("https://shop.example/?gclid=Cj0-a&gbraid=0AAAA-b&wbraid=Cl0-c",
                 {"gclid": "Cj0-a", "gbraid": "0AAAA-b", "wbraid": "Cl0-c"}, id="three_google_ids"),
    pytest.param("https://shop.example/?gclid=&gclid=Cj0-second", {"gclid": "Cj0-second"}, id="an_empty_one_is_skipped"),
    pytest.param("https://shop.example/?gclid=Cj0-first&gclid=Cj0-second", {"gclid": "Cj0-first"}, id="the_first_wins"),
    pytest.param("https://shop.example/?gclid=undefined", {}, id="a_placeholder_is_no_click_id"),
    pytest.param("https://shop.example/?gclid=Cj0%2Bx%3D", {"gclid": "Cj0+x="}, id="percent_decoded"),
    pytest.param("https://shop.example/checkout#/thanks?fbclid=IwAR-hash", {"fbclid": "IwAR-hash"}, id="after_the_hash"),
    pytest.param("https://shop.example/?xgclid=Cj0-not-it&page=2", {}, id="a_longer_name_is_another_parameter"),
    pytest.param("/products/mug?gclid=Cj0-path", {"gclid": "Cj0-path"}, id="a_path_without_host"),
]


def click_ids_of(event: Any) -> dict[str, str]:
    return {name: getattr(event, name) for name in IDS if getattr(event, name) is not None}


def ga4_event(url: str) -> Any:
    query = f"v=2&tid=G-TEST&en=page_view&dl={quote(url, safe='')}"
    return ga4.parse(RawRequest("GET", "/g/collect", query, {}, b"", "127.0.0.1", RECEIVED_AT), ga4.Config(type="ga4")).events[0]


def beacon_event(url: str) -> Any:
    body = orjson.dumps({"event_name": "page_view", "page_location": url})
    raw = RawRequest("POST", "/collect", "", {"content-type": "text/plain"}, body, "127.0.0.1", RECEIVED_AT)
    return json_beacon.parse(raw, json_beacon.Config(type="json_beacon")).events[0]


def shopify_event(url: str) -> Any:
    order = {"id": 4711, "total_price": "10.00", "currency": "EUR", "landing_site": url,
             "processed_at": "2026-05-04T09:00:00+00:00"}
    return shopify.parse(signed(order, "orders/paid"), CONFIG).events[0]


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_every_client_reads_the_same_click_ids_from_a_page_url(url, expected):
    read = {"ga4": click_ids_of(ga4_event(url)), "json_beacon": click_ids_of(beacon_event(url))}

    assert read == {"ga4": expected, "json_beacon": expected}


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_a_shopify_order_reads_its_landing_site_the_same_way(url, expected):
    assert click_ids_of(shopify_event(url)) == expected


def test_ids_the_beacon_names_itself_win_over_the_page_url():
    body = orjson.dumps({"event_name": "purchase", "gclid": "Cj0-own", "page_location": "https://s.example/?gclid=Cj0-url"})
    raw = RawRequest("POST", "/collect", "", {"content-type": "text/plain"}, body, "127.0.0.1", RECEIVED_AT)

    assert click_ids_of(json_beacon.parse(raw, json_beacon.Config(type="json_beacon")).events[0]) == {"gclid": "Cj0-own"}


BEACON_TO_META = """
clients:
  - type: json_beacon
destinations:
  meta:
    mode: dry_run
triggers:
  purchase: {all: [{field: event_name, op: equals, value: purchase}]}
tags:
  - name: meta_purchase
    type: meta_capi
    trigger: purchase
    pixel_id: "1234567890123456"
"""


def test_a_beacon_purchase_from_a_page_with_fbclid_reaches_meta_with_fbc(make_client, db_path):
    client = make_client(BEACON_TO_META, run_dispatcher=False)

    response = client.post("/collect", content=orjson.dumps({
        "event_name": "purchase", "transaction_id": "ORD-FBC", "value": 20.0, "currency": "EUR",
        "timestamp": "2026-05-04T09:00:00+00:00", "consent": {"ad_storage": "granted", "ad_user_data": "granted"},
        "page_location": "https://shop.example/thanks?fbclid=IwAR-beacon-click"}), headers={"content-type": "text/plain"})

    assert response.status_code == 204
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        [(item,)] = conn.execute("SELECT item FROM outbox WHERE destination = 'meta'").fetchall()
    assert orjson.loads(item)["user_data"]["fbc"] == "fb.1.1777885200000.IwAR-beacon-click"
