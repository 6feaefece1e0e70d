"""The meta_capi tag and consent: what each denied signal removes, written from Meta's reference field by field.

References:
- server event parameters (``event_source_url``, ``referrer_url``, ``opt_out``, ``action_source``):
  https://developers.facebook.com/documentation/ads-commerce/conversions-api/parameters/server-event
- customer information parameters (``em``, ``ph``, ``client_ip_address``, ``client_user_agent``, ``fbc``, ``fbp``):
  https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.event import Event
from gateway.identity import sha256_hex
from gateway.tag import Skip
from tags import meta_capi
from tests.conftest import container_from
from tests.fakes.meta_graph import MetaGraph, validate_event
from tests.running import ROOT, serve_in_loop, wait_until

PIXEL = "1234567890123456"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
UA = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/135.0"
GRANTED = {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
           "ad_personalization": "granted"}
ORDER_SYSTEM = {"client": "shopify", "authenticated": True}
CLICK_IDS = ("gclid", "gbraid", "wbraid", "dclid", "gclsrc", "fbclid", "msclkid", "ttclid", "twclid", "li_fat_id")
CLICKED_URL = ("https://shop.example/thanks?step=3&gclid=G-1&gbraid=B-1&wbraid=W-1&dclid=D-1&gclsrc=aw.ds"
               "&fbclid=IwAR-click&msclkid=M-1&ttclid=T-1&twclid=X-1&li_fat_id=L-1&utm_source=news#done")
CLICKED_REFERRER = "https://search.example/?q=mugs&GCLID=G-2&fbclid=IwAR-ref"


def config(**overrides: Any) -> meta_capi.Config:
    return meta_capi.Config.model_validate(
        {"name": "meta_purchase", "type": "meta_capi", "trigger": "purchase", "pixel_id": PIXEL} | overrides
    )


def event(consent: dict[str, str] | None = None, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "event_name": "purchase", "client_id": "111.222", "timestamp": T0, "ip_override": "203.0.113.7",
        "user_agent": UA, "page_location": CLICKED_URL, "page_referrer": CLICKED_REFERRER, "transaction_id": "ORD-1",
        "value": 42.5, "currency": "EUR", "fbp": "fb.1.1772300000000.42", "fbc": "fb.1.1772300000000.IwAR-old",
        "fbclid": "IwAR-click",
        "user_data": {"email_address": "jane@example.com", "phone_number": "+49 170 1234567", "external_id": "u-1"},
        "consent": GRANTED | (consent or {}),
    }
    return Event.from_data(values | fields)


def item(source: Event, tag: meta_capi.Config | None = None) -> dict[str, Any]:
    (delivery,) = meta_capi.build(source, tag or config())
    validate_event(delivery.item, T0)  # what Meta would refuse, the whole request with it
    return delivery.item


EM = sha256_hex("jane@example.com")
PH = sha256_hex("491701234567")
EXTERNAL_ID = sha256_hex("u-1")


# -- ad_user_data --------------------------------------------------------------------------------------


def test_the_default_is_to_skip_the_event_when_ad_user_data_is_denied() -> None:
    assert config().skip_when_denied == ["ad_user_data"]
    for source in (event({"ad_user_data": "denied"}),
                   event({"ad_user_data": "denied"}, source=ORDER_SYSTEM, user_agent=None, page_location=None)):
        with pytest.raises(Skip) as skipped:
            meta_capi.build(source, config())
        assert skipped.value.reason == "consent_denied"


@pytest.mark.parametrize("state", ["denied", None], ids=["denied", "no_signal"])
def test_without_the_skip_no_customer_information_at_all_leaves_so_nothing_is_sent(state: str | None) -> None:
    """Meta requires client_user_agent on website events and user_data on every event; with ad_user_data
    denied none of it may go (no IP, user agent, em, ph, external_id, fbp or fbc), so the event is skipped."""
    tag = config(skip_when_denied=[])
    browser = event({"ad_user_data": state})  # type: ignore[dict-item]
    order = event({"ad_user_data": state}, source=ORDER_SYSTEM)  # type: ignore[dict-item]
    for source in (browser, order):
        with pytest.raises(Skip) as skipped:
            meta_capi.build(source, tag)
        assert skipped.value.reason == "no_customer_information"


def test_skip_when_denied_can_name_other_signals_and_then_replaces_the_default() -> None:
    tag = config(skip_when_denied=["ad_storage"])
    assert tag.skip_when_denied == ["ad_storage"]
    with pytest.raises(Skip) as skipped:
        meta_capi.build(event({"ad_storage": "denied"}), tag)
    assert skipped.value.reason == "consent_denied"


# -- ad_storage ----------------------------------------------------------------------------------------


def test_ad_storage_denied_sends_no_fbp_or_fbc_and_strips_click_ids_from_both_urls() -> None:
    got = item(event({"ad_storage": "denied"}))
    assert got == {
        "event_name": "Purchase",
        "event_time": 1772366400,
        "event_id": "ORD-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks?step=3&utm_source=news#done",
        "referrer_url": "https://search.example/?q=mugs",
        "user_data": {
            "em": [EM],
            "ph": [PH],
            "external_id": [EXTERNAL_ID],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": UA,
        },
        "custom_data": {"value": 42.5, "currency": "EUR", "order_id": "ORD-1"},
    }


@pytest.mark.parametrize("name", CLICK_IDS)
def test_each_click_id_goes_from_the_url_whatever_its_case_or_encoding(name: str) -> None:
    encoded = "".join(f"%{ord(c):02X}" for c in name)
    url = f"https://shop.example/p?a=1&{name}=x1&{name.upper()}=x2&{encoded}=x3&b=2"
    got = item(event({"ad_storage": "denied"}, page_location=url, page_referrer=f"https://r.example/?{name}=x4"))
    assert got["event_source_url"] == "https://shop.example/p?a=1&b=2"
    assert got["referrer_url"] == "https://r.example/"


def test_a_url_of_click_ids_only_loses_its_question_mark_and_keeps_its_fragment() -> None:
    got = item(event({"ad_storage": "denied"}, page_location="https://shop.example/thanks?fbclid=A&gclid=B#top"))
    assert got["event_source_url"] == "https://shop.example/thanks#top"


def test_ad_storage_granted_keeps_the_urls_and_the_cookies() -> None:
    got = item(event())
    assert (got["event_source_url"], got["referrer_url"]) == (CLICKED_URL, CLICKED_REFERRER)
    assert (got["user_data"]["fbc"], got["user_data"]["fbp"]) == ("fb.1.1772300000000.IwAR-old", "fb.1.1772300000000.42")


# -- ad_personalization --------------------------------------------------------------------------------


def test_ad_personalization_denied_sets_opt_out() -> None:
    got = item(event({"ad_personalization": "denied"}))
    assert got == {
        "event_name": "Purchase",
        "event_time": 1772366400,
        "event_id": "ORD-1",
        "action_source": "website",
        "event_source_url": CLICKED_URL,
        "referrer_url": CLICKED_REFERRER,
        "opt_out": True,
        "user_data": {
            "em": [EM],
            "ph": [PH],
            "external_id": [EXTERNAL_ID],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": UA,
            "fbc": "fb.1.1772300000000.IwAR-old",
            "fbp": "fb.1.1772300000000.42",
        },
        "custom_data": {"value": 42.5, "currency": "EUR", "order_id": "ORD-1"},
    }


def test_ad_personalization_granted_sends_no_opt_out_and_limited_data_use_stays_a_setting() -> None:
    assert "opt_out" not in item(event())
    ldu = config(limited_data_use={"country": 1, "state": 1000})
    got = item(event({"ad_personalization": "denied"}), ldu)
    assert (got["opt_out"], got["data_processing_options"], got["data_processing_options_country"],
            got["data_processing_options_state"]) == (True, ["LDU"], 1, 1000)
    assert "data_processing_options" not in item(event({"ad_personalization": "denied"}))


# -- the sample container ------------------------------------------------------------------------------


def test_every_meta_tag_of_the_sample_container_states_its_consent_choice_with_a_comment() -> None:
    path = ROOT / "examples" / "container.yaml"
    text = path.read_text(encoding="utf-8")
    tags = [t for t in yaml.safe_load(text)["tags"] if t["type"] == "meta_capi"]
    assert tags
    for tag in tags:
        assert tag.get("skip_when_denied") == ["ad_user_data"], tag["name"]
    lines = [line for line in text.splitlines() if re.match(r"\s+skip_when_denied:", line)]
    assert len(lines) == len(tags) and all("#" in line for line in lines)


# -- over real HTTP: a denied visitor reaches no Meta fake ---------------------------------------------


def _container(graph_url: str, db_path: Path) -> str:
    return f"""
server:
  trusted_proxies: ["127.0.0.1/32"]
storage:
  url: sqlite:///{db_path}
delivery:
  backoff_initial: 10ms
  backoff_max: 50ms
  poll_interval: 20ms
clients:
  - type: json_beacon
destinations:
  meta:
    mode: live
    api_base: {graph_url}
    access_token: test-token
    flush_interval: 10ms
triggers:
  purchase: {{all: [{{field: event_name, op: equals, value: purchase}}]}}
tags:
  - name: meta_purchase
    type: meta_capi
    trigger: purchase
    pixel_id: "{PIXEL}"
"""


HEADERS = {"User-Agent": UA, "X-Forwarded-For": "203.0.113.7"}  # a customer's address, through a trusted proxy


def _beacon(consent: dict[str, str], order: str) -> dict[str, Any]:
    return {
        "event_name": "purchase", "client_id": "111.222", "transaction_id": order, "value": 42.5, "currency": "EUR",
        "page_location": f"https://shop.example/thanks?gclid=G-1&fbclid=IwAR-click&order={order}",
        "user_data": {"email_address": "jane@example.com"}, "consent": consent,
    }


async def test_with_every_signal_denied_meta_receives_nothing_and_with_them_granted_it_does(tmp_path: Path) -> None:
    db_path = tmp_path / "g.db"
    denied = {key: "denied" for key in GRANTED}
    async with MetaGraph(token="test-token") as graph:
        container = container_from(_container(graph.url, db_path), db_path)
        async with serve_in_loop(container) as base, aiohttp.ClientSession() as session:
            for body in (_beacon(denied, "ORD-DENIED"), _beacon(GRANTED, "ORD-GRANTED")):
                async with session.post(f"{base}/collect", json=body, headers=HEADERS) as response:
                    assert response.status == 204
            await wait_until(lambda: len(graph.received_events(PIXEL)) >= 1)

    events = graph.received_events(PIXEL)
    assert [e["event_id"] for e in events] == ["ORD-GRANTED"]
    assert "ORD-DENIED" not in str([r.body for r in graph.requests])
