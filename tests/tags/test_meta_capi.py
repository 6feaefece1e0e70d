"""The meta_capi tag: fixtures (event -> expected server event, written from Meta's reference), contract and rules."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from facebook_business.adobjects.serverside.content import Content
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event as SdkEvent
from facebook_business.adobjects.serverside.user_data import UserData as SdkUserData
from pydantic import ValidationError

from gateway.config import format_validation_error
from gateway.event import Event
from gateway.identity import sha256_hex
from gateway.tag import Skip
from tags import _meta, meta_capi
from tests.conftest import FIXTURES
from tests.fakes.meta_graph import validate_event

CASES = sorted((FIXTURES / "tags" / "meta_capi").glob("*.json"))
PIXEL = "1234567890123456"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
UA = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/135.0"
EXAMPLE = {"name": "meta_purchase", "type": "meta_capi", "trigger": "purchase", "pixel_id": PIXEL}  # CONTAINER.md
ORDER_SYSTEM = {"client": "shopify", "authenticated": True}  # the gateway's stamp on a signed webhook's events
BROWSER = {"client": "ga4", "authenticated": False}


def config(**overrides: Any) -> meta_capi.Config:
    return meta_capi.Config.model_validate(EXAMPLE | overrides)


def event(**fields: Any) -> Event:
    values: dict[str, Any] = {
        "event_name": "purchase", "client_id": "111.222", "timestamp": T0, "ip_override": "203.0.113.7",
        "user_agent": UA, "page_location": "https://shop.example/thanks", "transaction_id": "ORD-1", "value": 42.5,
        "currency": "EUR", "fbp": "fb.1.1772300000000.42", "fbclid": "IwAR-click",
        "user_data": {"email_address": "jane@example.com", "phone_number": "+49 170 1234567", "gender": "f",
                      "date_of_birth": "1990-05-21", "external_id": "u-1",
                      "address": {"first_name": "Jane", "last_name": "Roe", "city": "Berlin", "region": "BE",
                                  "postal_code": "10115", "country": "DE"}},
        "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
                    "ad_personalization": "granted"},
    }
    return Event.from_data(values | fields)


def _sdk_keys() -> dict[str, set[str]]:
    """The keys Meta's SDK writes on the wire, read from its own models (the closest to a published schema)."""
    user_data = SdkUserData(
        email="a@b.co", phone="15551234567", gender=None, date_of_birth="19900101", last_name="x", first_name="y",
        city="z", state="ca", country_code="us", zip_code="12345", external_id="1", client_ip_address="1.2.3.4",
        client_user_agent="ua", fbc="fb.1.1.x", fbp="fb.1.1.1",
    ).normalize()
    return {
        "event": set(SdkEvent.param_types),
        "user_data": set(user_data) | {"ge"},
        "custom_data": set(CustomData.param_types),
        "content": set(Content(product_id="1", quantity=1, item_price=1.0, title="t", description="d", brand="b",
                               category="c").normalize()) | {"delivery_category"},
    }


SDK_KEYS = _sdk_keys()


def check_against_meta(item: dict[str, Any]) -> None:
    """An expected item uses only keys Meta's SDK knows and passes the fake's checks, which follow Meta's reference."""
    assert set(item) <= SDK_KEYS["event"]
    assert set(item["user_data"]) <= SDK_KEYS["user_data"]
    assert set(item.get("custom_data", {})) <= SDK_KEYS["custom_data"]
    for content in item.get("custom_data", {}).get("contents", []):
        assert set(content) <= SDK_KEYS["content"]
    validate_event(item, datetime.fromtimestamp(item["event_time"], timezone.utc))


# -- fixtures ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CASES])
def test_fixture(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    expect = case["expect"]
    if expect.get("error") == "config":
        with pytest.raises(ValidationError):
            meta_capi.Config.model_validate(case["config"])
        return
    tag = meta_capi.Config.model_validate(case["config"])
    source = Event.from_data(case["event"])
    if "skip" in expect:
        with pytest.raises(Skip) as skipped:
            meta_capi.build(source, tag)
        assert skipped.value.reason == expect["skip"]
        return
    deliveries = meta_capi.build(source, tag)
    assert [d.destination for d in deliveries] == ["meta"] * len(deliveries)
    assert [d.tag for d in deliveries] == [tag.name] * len(deliveries)
    got = [{"batch_key": d.batch_key, "item": d.item} | ({"idempotency_key": d.idempotency_key} if "idempotency_key" in e else {})
           for d, e in zip(deliveries, expect["deliveries"])]
    assert got == expect["deliveries"]
    for expected in expect["deliveries"]:
        check_against_meta(expected["item"])


def test_every_fixture_has_a_description() -> None:
    assert CASES and all(json.loads(p.read_text(encoding="utf-8")).get("description") for p in CASES)


# -- the contract every tag keeps ---------------------------------------------------------


def test_the_container_example_validates_with_its_defaults() -> None:
    assert config().model_dump() == EXAMPLE | {
        "event_names": {}, "refund_event_name": "Refund", "refund_convention": "custom_event",
        "order_action_source": "system_generated", "default_region": None, "content_type": "product",
        "skip_when_denied": ["ad_user_data"], "limited_data_use": None,
    }


def test_build_is_deterministic() -> None:
    for source in (event(), event(transaction_id=None, event_name="view_item"),
                   event(event_name="refund", source=ORDER_SYSTEM)):
        assert meta_capi.build(source, config()) == meta_capi.build(copy.deepcopy(source), config())


def test_nothing_from_user_data_survives_when_ad_user_data_is_denied() -> None:
    denied = event(consent={"ad_storage": "granted", "ad_user_data": "denied"})
    with pytest.raises(Skip) as skipped:  # tests/tags/test_meta_consent.py has the rest
        meta_capi.build(denied, config(skip_when_denied=[]))
    assert skipped.value.reason == "no_customer_information"


def test_idempotency_keys_are_stable_and_name_the_pixel_event_name_and_event_id() -> None:
    keys = [meta_capi.build(e, config())[0].idempotency_key
            for e in (event(), event(value=99.0), event(event_id="ev-9"), event(transaction_id="ORD-2"),
                      event(event_name="add_to_cart", event_id="ev-9"))]
    assert keys == [f"meta:{PIXEL}:Purchase:ORD-1", f"meta:{PIXEL}:Purchase:ORD-1", f"meta:{PIXEL}:Purchase:ev-9",
                    f"meta:{PIXEL}:Purchase:ORD-2", f"meta:{PIXEL}:AddToCart:ev-9"]


# -- deduplication ids -----------------------------------------------------------------------


def test_the_browser_and_the_order_system_copies_of_one_purchase_share_the_event_id() -> None:
    browser = event(event_id=None, transaction_id="ORD-1")
    order_system = event(event_id="shopify-delivery-77", transaction_id="ORD-1", user_agent=None, page_location=None,
                         timestamp=T0 + timedelta(seconds=40), source=ORDER_SYSTEM)
    ids = [meta_capi.build(e, config())[0].item["event_id"] for e in (browser, order_system)]
    assert ids == ["ORD-1", "ORD-1"]


def test_an_event_without_ids_gets_an_id_derived_from_it_that_a_rebuild_keeps() -> None:
    page_view = event(event_name="page_view", transaction_id=None, value=None)
    first = meta_capi.build(page_view, config())[0].item["event_id"]
    again = meta_capi.build(copy.deepcopy(page_view), config())[0].item["event_id"]
    later = meta_capi.build(event(event_name="page_view", transaction_id=None, value=None,
                                  timestamp=T0 + timedelta(seconds=1)), config())[0].item["event_id"]
    other_client = meta_capi.build(event(event_name="page_view", transaction_id=None, value=None, client_id="9.9"),
                                   config())[0].item["event_id"]
    assert first == again and len({first, later, other_client}) == 3 and len(first) == 32


def test_a_refund_without_refund_id_gets_a_derived_one_distinct_per_refund() -> None:
    def refund_id(**fields: Any) -> str:
        values = {"event_name": "refund", "source": ORDER_SYSTEM, "value": 10.0} | fields
        return meta_capi.build(event(**values), config())[0].item["event_id"]

    first = refund_id()
    assert first.startswith("refund:ORD-1:") and first == refund_id()
    assert len({first, refund_id(value=5.0), refund_id(timestamp=T0 + timedelta(hours=1)),
                refund_id(event_name="order_cancelled")}) == 4


def test_a_refund_never_takes_the_purchase_event_id() -> None:
    purchase_id = meta_capi.build(event(), config())[0].item["event_id"]
    refund = meta_capi.build(event(event_name="refund", source=ORDER_SYSTEM, order={"refund_id": "R1"}),
                             config(refund_convention="negative_purchase"))
    assert (purchase_id, refund[0].item["event_name"], refund[0].item["event_id"]) == ("ORD-1", "Purchase", "refund:ORD-1:R1")


# -- the trust boundary ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"event_name": "refund"}, id="refund_without_a_stamp"),
        pytest.param({"event_name": "refund", "source": BROWSER}, id="refund_from_a_browser_hit"),
        pytest.param({"event_name": "order_cancelled", "source": {"client": "json_beacon", "authenticated": False}},
                     id="cancellation_from_a_beacon"),
    ],
)
def test_a_refund_that_did_not_come_from_the_order_system_is_never_sent(fields: dict[str, Any]) -> None:
    with pytest.raises(Skip) as skipped:
        meta_capi.build(event(order={"refund_id": "R1"}, **fields), config())

    assert skipped.value.reason == "refund_not_authenticated"


def test_the_action_source_follows_the_stamp_never_the_request() -> None:
    def action_source(**fields: Any) -> str:
        return meta_capi.build(event(**fields), config())[0].item["action_source"]

    assert [action_source(source=BROWSER), action_source(source=BROWSER, extra={"source": "order_system"}),
            action_source(source=ORDER_SYSTEM)] == ["website", "website", "system_generated"]


def test_an_order_placed_on_the_web_storefront_is_a_website_event_with_the_browsers_agent() -> None:
    placed = event(source=ORDER_SYSTEM, order={"placed_on_web": True})

    (delivery,) = meta_capi.build(placed, config())

    assert (delivery.item["action_source"], delivery.item["event_source_url"], delivery.item["user_data"]["client_user_agent"]) == (
        "website", "https://shop.example/thanks", UA)
    check_against_meta(delivery.item)


def test_an_order_placed_on_the_web_without_the_browsers_agent_stays_an_order_system_event() -> None:
    (delivery,) = meta_capi.build(event(source=ORDER_SYSTEM, order={"placed_on_web": True}, user_agent=None), config())

    assert delivery.item["action_source"] == "system_generated"


@pytest.mark.parametrize(
    ("address", "sent"),
    [
        pytest.param("0.0.0.0", False, id="unspecified"),
        pytest.param("::", False, id="unspecified_v6"),
        pytest.param("127.0.0.1", False, id="loopback"),
        pytest.param("169.254.10.1", False, id="link_local"),
        pytest.param("224.0.0.1", False, id="multicast"),
        pytest.param("240.0.0.1", False, id="reserved"),
        pytest.param("198.51.100.42", True, id="an_address"),
        pytest.param("2001:db8::1", True, id="an_address_v6"),
    ],
)
def test_an_address_that_is_no_customers_is_never_sent_as_the_ip(address: str, sent: bool) -> None:
    (delivery,) = meta_capi.build(event(ip_override=address), config())

    assert ("client_ip_address" in delivery.item["user_data"]) is sent


# -- what each parameter holds ------------------------------------------------------------------


def test_a_purchase_with_contact_data_and_fbclid_sends_every_field_hashed_or_not_as_meta_requires() -> None:
    (delivery,) = meta_capi.build(event(), config())
    user_data = delivery.item["user_data"]
    assert user_data == {
        "em": [sha256_hex("jane@example.com")], "ph": [sha256_hex("491701234567")], "fn": [sha256_hex("jane")],
        "ln": [sha256_hex("roe")], "db": [sha256_hex("19900521")], "ge": [sha256_hex("f")],
        "ct": [sha256_hex("berlin")], "st": [sha256_hex("be")], "zp": [sha256_hex("10115")],
        "country": [sha256_hex("de")], "external_id": [sha256_hex("u-1")],
        "client_ip_address": "203.0.113.7", "client_user_agent": UA,
        "fbc": "fb.1.1772366400000.IwAR-click", "fbp": "fb.1.1772300000000.42",
    }
    check_against_meta(delivery.item)


def test_events_of_one_batched_hit_share_the_fbc_built_from_their_common_receipt_time() -> None:
    hits = [event(event_name=name, event_id=f"e{i}") for i, name in enumerate(["page_view", "view_item", "add_to_cart"])]
    assert {meta_capi.build(h, config())[0].item["user_data"]["fbc"] for h in hits} == {"fb.1.1772366400000.IwAR-click"}


def test_an_invalid_ip_address_is_left_out() -> None:
    (delivery,) = meta_capi.build(event(ip_override="not-an-ip"), config())
    assert "client_ip_address" not in delivery.item["user_data"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("purchase", "Purchase"), ("begin_checkout", "InitiateCheckout"), ("add_to_cart", "AddToCart"),
     ("view_item", "ViewContent"), ("generate_lead", "Lead"), ("page_view", "PageView")],
)
def test_the_default_event_names_map_to_meta_standard_events(name: str, expected: str) -> None:
    assert meta_capi.build(event(event_name=name, event_id="x"), config())[0].item["event_name"] == expected


def test_a_configured_name_replaces_a_default_one() -> None:
    tag = config(event_names={"page_view": "ViewPage"})
    assert meta_capi.build(event(event_name="page_view", event_id="x"), tag)[0].item["event_name"] == "ViewPage"


def test_a_skip_is_raised_for_an_unmapped_name_and_a_purchase_without_value() -> None:
    reasons = []
    for source in (event(event_name="scroll"), event(value=None)):
        with pytest.raises(Skip) as skipped:
            meta_capi.build(source, config())
        reasons.append(skipped.value.reason)
    assert reasons == ["unmapped_event_name", "no_value"]


def test_event_time_is_unix_seconds_of_the_event_timestamp() -> None:
    later = T0 + timedelta(seconds=59, microseconds=999_999)
    assert meta_capi.build(event(timestamp=later), config())[0].item["event_time"] == 1772366459


def test_the_tag_uses_the_same_limits_as_the_sender() -> None:
    assert (_meta.MAX_EVENTS_PER_REQUEST, _meta.MAX_EVENT_AGE, _meta.MAX_EVENT_AGE_BY_SOURCE) == (
        1000, timedelta(days=7), {"physical_store": timedelta(days=62)})


# -- config errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        pytest.param({"pixel_id": "12"}, ["pixel_id: String should match pattern '^\\d{6,20}$'"], id="short-pixel"),
        pytest.param({"refund_convention": "negative"},
                     ["refund_convention: Input should be 'custom_event' or 'negative_purchase'"], id="convention"),
        pytest.param({"event_names": {"sign_up": "Sign up!"}},
                     ["event_names: Value error, the Meta name for sign_up must be 1-50 letters, digits, spaces, _ or -"],
                     id="bad-meta-name"),
        pytest.param({"skip_when_denied": ["cookies"]},
                     ["skip_when_denied[0]: Input should be 'ad_storage', 'analytics_storage', 'ad_user_data' or "
                      "'ad_personalization'"], id="unknown-signal"),
        pytest.param({"default_region": "Germany"}, ["default_region: String should match pattern '^[A-Za-z]{2}$'"],
                     id="region"),
        pytest.param({"limited_data_use": {"country": 1, "region": 1000}}, ["limited_data_use.region: Extra inputs are not permitted"],
                     id="ldu-unknown-key"),
        pytest.param({"access_token": "x"}, ["access_token: Extra inputs are not permitted"], id="token-is-not-a-tag-key"),
    ],
)
def test_a_bad_config_is_reported_by_key(overrides: dict[str, Any], errors: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        config(**overrides)
    assert format_validation_error("", info.value) == errors


def test_a_lowercase_default_region_is_accepted() -> None:
    assert config(default_region="de").default_region == "DE"
