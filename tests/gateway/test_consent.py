"""Consent Mode v2: decoding gcs / gcd / JSON consent, and what denied consent removes."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import sqlite3
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConsentDefaults
from gateway.consent import ConsentDecision, ConsentPolicy, apply_consent, consent_from_mapping, decode_gcd, decode_gcs
from gateway.debug.explain import explain
from gateway.errors import BadRequest, ConfigError
from gateway.event import CONSENT_SIGNALS, Address, Consent, Event, Source, UserData
from tests.conftest import container_from

GRANTED = dict.fromkeys(CONSENT_SIGNALS, "granted")
DENIED = dict.fromkeys(CONSENT_SIGNALS, "denied")
AT = datetime(2024, 11, 23, 12, 0, 0, tzinfo=timezone.utc)


def event(consent: dict[str, str], **fields: object) -> Event:
    return Event(event_name="purchase", timestamp=AT, consent=Consent(**consent), **fields)


# --- gcs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gcs", "expected"),
    [
        pytest.param("G111", {"ad_storage": "granted", "analytics_storage": "granted"}, id="both_granted"),
        pytest.param("G100", {"ad_storage": "denied", "analytics_storage": "denied"}, id="both_denied"),
        pytest.param("G110", {"ad_storage": "granted", "analytics_storage": "denied"}, id="ads_only"),
        pytest.param("G101", {"ad_storage": "denied", "analytics_storage": "granted"}, id="analytics_only"),
        pytest.param("G1-1", {"analytics_storage": "granted"}, id="ad_storage_not_set"),
        pytest.param("G1--", {}, id="nothing_set"),
        pytest.param("G1x0", {"analytics_storage": "denied"}, id="unknown_character_is_not_set"),
    ],
)
def test_gcs_gives_ad_and_analytics_storage(gcs: str, expected: dict[str, str]) -> None:
    assert decode_gcs(gcs) == expected


@pytest.mark.parametrize("gcs", ["", "G", "G1", "G11", "G1111", "g111", "X111", "G211", " G111", "G111\n"])
def test_gcs_of_another_shape_says_nothing(gcs: str) -> None:
    assert decode_gcs(gcs) == {}


# --- gcd ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("letter", "state"),
    [
        pytest.param("l", None, id="l_not_set"),
        pytest.param("p", "denied", id="p_denied_by_default"),
        pytest.param("q", "denied", id="q_denied_by_default_and_update"),
        pytest.param("t", "granted", id="t_granted_by_default"),
        pytest.param("r", "granted", id="r_denied_by_default_granted_on_update"),
        pytest.param("m", "denied", id="m_denied_on_update"),
        pytest.param("n", "granted", id="n_granted_on_update"),
        pytest.param("u", "denied", id="u_granted_by_default_denied_on_update"),
        pytest.param("v", "granted", id="v_granted_by_default_and_update"),
        pytest.param("z", "denied", id="unknown_letter_cannot_be_read_so_denied"),
    ],
)
def test_gcd_letter_gives_the_effective_state(letter: str, state: str | None) -> None:
    expected = {} if state is None else dict.fromkeys(CONSENT_SIGNALS, state)

    assert decode_gcd(f"13{letter}3{letter}3{letter}2{letter}5l1") == expected


def test_gcd_letters_are_read_in_signal_order() -> None:
    assert decode_gcd("13t3q3n2u5l1") == {
        "ad_storage": "granted",
        "analytics_storage": "denied",
        "ad_user_data": "granted",
        "ad_personalization": "denied",
    }


def test_gcd_2024_form_is_read_too() -> None:
    assert decode_gcd("11p1p1p1p5") == DENIED


def test_gcd_with_some_signals_unset_leaves_them_out() -> None:
    assert decode_gcd("13r3l3p2l5l1") == {"ad_storage": "granted", "ad_user_data": "denied"}


@pytest.mark.parametrize(
    "gcd",
    [
        pytest.param("", id="empty"),
        pytest.param("13r3r3r", id="too_short"),
        pytest.param("13r3r3r2r5l1" * 10, id="far_too_long"),
        pytest.param("13r3x3r2r5l1", id="unknown_letter_in_a_signal_place"),
        pytest.param("1353r3r2r5l1", id="digit_in_a_signal_place"),
    ],
)
def test_gcd_that_cannot_be_read_denies_every_signal(gcd: str) -> None:
    assert decode_gcd(gcd) == DENIED


@pytest.mark.parametrize(
    "gcd",
    [
        pytest.param("13p3pPp2p5l1", id="capital_letter_where_a_digit_sits_seen_live"),
        pytest.param("xxpxpxpxpxx", id="letters_where_digits_belong"),
        pytest.param("\u0661\u0663p\u0663p\u0663p\u0662p\u0665l\u0661", id="non_ascii_digits"),
        pytest.param("13p-p-p-p5l1", id="dashes"),
    ],
)
def test_gcd_signal_letters_are_read_by_position_whatever_the_separators(gcd: str) -> None:
    assert decode_gcd(gcd) == DENIED
    assert decode_gcd(gcd.replace("p", "v")) == GRANTED


@given(st.text(max_size=40))
def test_decoding_garbage_never_raises(value: str) -> None:
    for result in (decode_gcs(value), decode_gcd(value)):
        assert set(result) <= set(CONSENT_SIGNALS)
        assert set(result.values()) <= {"granted", "denied"}


@pytest.mark.parametrize("value", [None, 1, b"G111", ["G111"]])
def test_decoding_a_non_string_says_nothing(value: object) -> None:
    assert decode_gcs(value) == {}  # type: ignore[arg-type]
    assert decode_gcd(value) == {}  # type: ignore[arg-type]


# --- JSON consent objects -----------------------------------------------------


def test_json_consent_reads_strings_and_booleans() -> None:
    consent = consent_from_mapping(
        {"ad_storage": "granted", "analytics_storage": "denied", "ad_user_data": True, "ad_personalization": False},
        "consent",
    )

    assert consent == Consent(
        ad_storage="granted", analytics_storage="denied", ad_user_data="granted", ad_personalization="denied"
    )


def test_json_consent_leaves_missing_and_null_signals_unset() -> None:
    consent = consent_from_mapping({"ad_user_data": "granted", "ad_storage": None}, "consent")

    assert consent == Consent(ad_user_data="granted")


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        pytest.param({"ad_storage": "maybe"}, "events[0].consent.ad_storage", id="unknown_state"),
        pytest.param({"ad_storage": "Granted"}, "events[0].consent.ad_storage", id="state_in_wrong_case"),
        pytest.param({"ad_storage": 1}, "events[0].consent.ad_storage", id="number_is_not_a_boolean"),
        pytest.param({"ad_storage": ["granted"]}, "events[0].consent.ad_storage", id="list"),
        pytest.param({"ads": "granted"}, "events[0].consent.ads", id="unknown_signal"),
        pytest.param(["granted"], "events[0].consent", id="not_an_object"),
        pytest.param("granted", "events[0].consent", id="a_string"),
    ],
)
def test_json_consent_that_is_not_ours_is_refused_naming_the_field(obj: object, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        consent_from_mapping(obj, "events[0].consent")

    assert (caught.value.status, caught.value.error, caught.value.field) == (400, "invalid consent", field)


def test_json_consent_refusal_never_echoes_the_value() -> None:
    with pytest.raises(BadRequest) as caught:
        consent_from_mapping({"ad_user_data": "jane.doe@example.com"}, "consent")

    assert "jane" not in json.dumps(caught.value.body()) + str(caught.value)


# --- defaults -----------------------------------------------------------------


def test_defaults_fill_only_the_signals_the_request_did_not_carry() -> None:
    e = event({"ad_storage": "granted"})
    defaults = ConsentDefaults(analytics_storage="granted", ad_user_data="denied", ad_personalization="denied")

    decision = apply_consent(e, defaults)

    assert e.consent == Consent(
        ad_storage="granted", analytics_storage="granted", ad_user_data="denied", ad_personalization="denied"
    )
    assert decision.defaulted == ("analytics_storage", "ad_user_data", "ad_personalization")


def test_nothing_is_defaulted_or_removed_when_everything_is_granted() -> None:
    e = event(GRANTED, user_data=UserData(email_address="jane.doe@example.com"), fbp="fb.1.1.1", extra={"email": "x@y.io"})

    decision = apply_consent(e, ConsentDefaults())

    assert decision == ConsentDecision(defaulted=(), removed=())
    assert e.user_data == UserData(email_address="jane.doe@example.com")
    assert (e.fbp, e.extra) == ("fb.1.1.1", {"email": "x@y.io"})


def test_a_defaulted_denial_is_enforced_like_a_carried_one() -> None:
    e = event({}, user_data=UserData(sha256_email_address="ab" * 32), fbc="fb.1.1.IwAR")

    decision = apply_consent(e, ConsentDefaults())

    assert decision == ConsentDecision(defaulted=CONSENT_SIGNALS, removed=("user_data", "fbc"))
    assert (e.user_data, e.fbc) == (None, None)


def test_decision_is_frozen() -> None:
    decision = ConsentDecision()

    with pytest.raises(AttributeError):
        decision.removed = ("x",)  # type: ignore[misc]


# --- ad_user_data denied --------------------------------------------------------


def test_ad_user_data_denied_removes_all_user_data_raw_and_hashed() -> None:
    user_data = UserData(
        email_address="jane.doe@example.com",
        phone_number="+4915112345678",
        sha256_email_address="ab" * 32,
        address=Address(first_name="Jane", last_name="Doe", street="1 Main St", postal_code="10115", sha256_first_name="cd" * 32),
    )
    e = event({**GRANTED, "ad_user_data": "denied"}, user_data=user_data)

    decision = apply_consent(e, ConsentDefaults())

    assert e.user_data is None
    assert decision.removed == ("user_data",)


def test_ad_user_data_denied_removes_personal_keys_and_values_from_extra() -> None:
    extra = {
        "customer_email": "someone",
        "billingPhone": "12",
        "first_name": "Jane",
        "LastName": "Doe",
        "street_address": "1 Main St",
        "zip": "10115",
        "postal_code": "10115",
        "date_of_birth": "1990-01-01",
        "contact": "Write to jane.doe@example.com",
        "hotline": "+49 151 1234567",
        "us_number": "(555) 123-4567",
        "nl_number": "0612345678",
        "measurement_id": "G-ABC123XYZ",
        "ga_session_id": "1732360000",
        "ga_session_number": 3,
        "page_type": "checkout",
        "gtin": "0012345678905",
        "device": "iphone",
        "iphone_model": "15",
        "client_id": "1234567890.1732360000",
        "order_date": "2024-11-23",
        "item_name": "Blue Mug",
    }
    e = event({**GRANTED, "ad_user_data": "denied"}, extra=extra)

    decision = apply_consent(e, ConsentDefaults())

    assert e.extra == {
        "contact": "Write to [redacted]",  # free text keeps its words, loses the address
        "measurement_id": "G-ABC123XYZ",
        "ga_session_id": "1732360000",
        "ga_session_number": 3,
        "page_type": "checkout",
        "gtin": "0012345678905",
        "device": "iphone",
        "iphone_model": "15",
        "client_id": "1234567890.1732360000",
        "order_date": "2024-11-23",
        "item_name": "Blue Mug",
    }
    assert set(decision.removed) == {
        "extra.customer_email",
        "extra.billingPhone",
        "extra.first_name",
        "extra.LastName",
        "extra.street_address",
        "extra.zip",
        "extra.postal_code",
        "extra.date_of_birth",
        "extra.contact",
        "extra.hotline",
        "extra.us_number",
        "extra.nl_number",
    }


def test_ad_user_data_denied_looks_inside_nested_extra_values() -> None:
    extra = {"customer": {"id": "C-1", "email": "jane.doe@example.com"}, "recipients": ["jane.doe@example.com", "ops"]}
    e = event({**GRANTED, "ad_user_data": "denied"}, extra=extra)

    decision = apply_consent(e, ConsentDefaults())

    assert e.extra == {"customer": {"id": "C-1"}, "recipients": ["ops"]}
    assert decision.removed == ("extra.customer.email", "extra.recipients[0]")


def test_ad_user_data_denied_removes_personal_user_properties() -> None:
    e = event({**GRANTED, "ad_user_data": "denied"}, user_properties={"plan": "gold", "email": "a@b.io", "backup": "+4915112345678"})

    decision = apply_consent(e, ConsentDefaults())

    assert e.user_properties == {"plan": "gold"}
    assert decision.removed == ("user_properties.email", "user_properties.backup")


def test_ad_user_data_denied_removes_personal_custom_item_parameters_but_keeps_skus() -> None:
    items = [{"item_id": "0012345678905", "item_name": "Mug", "price": 9.5, "customer_email": "x", "note": "for jane@example.com"}]
    e = event({**GRANTED, "ad_user_data": "denied"}, items=items)

    decision = apply_consent(e, ConsentDefaults())

    assert e.items == [{"item_id": "0012345678905", "item_name": "Mug", "price": 9.5, "note": "for [redacted]"}]
    assert set(decision.removed) == {"items[0].customer_email", "items[0].note"}


def test_ad_user_data_denied_pseudonymises_a_user_id_that_is_an_email_address() -> None:
    e = event({**GRANTED, "ad_user_data": "denied"}, user_id="Jane.Doe@Example.com")

    decision = apply_consent(e, ConsentDefaults())

    assert e.user_id is not None and re.fullmatch(r"pid-[0-9a-f]{32}", e.user_id)
    assert decision.removed == ("user_id",)


def test_ad_user_data_denied_keeps_an_opaque_user_id_click_ids_ip_and_user_agent() -> None:
    e = event(
        {**GRANTED, "ad_user_data": "denied"},
        user_id="user-42",
        gclid="Cj0K-gclid",
        gbraid="0AAA-gbraid",
        wbraid="CjkK-wbraid",
        fbclid="IwAR-fbclid",
        ip_override="198.51.100.23",
        user_agent="Mozilla/5.0",
        fbp="fb.1.1.2",
    )

    decision = apply_consent(e, ConsentDefaults())

    assert decision.removed == ()
    assert (e.user_id, e.gclid, e.gbraid, e.wbraid, e.fbclid, e.ip_override, e.user_agent, e.fbp) == (
        "user-42", "Cj0K-gclid", "0AAA-gbraid", "CjkK-wbraid", "IwAR-fbclid", "198.51.100.23", "Mozilla/5.0", "fb.1.1.2",
    )


def test_removed_paths_never_carry_values() -> None:
    e = event(DENIED, user_data=UserData(email_address="jane.doe@example.com"), extra={"x": "jane.doe@example.com"})

    decision = apply_consent(e, ConsentDefaults())

    assert "jane" not in repr(decision)


# --- ad_storage denied ------------------------------------------------------------


def test_ad_storage_denied_removes_fbp_and_fbc_only() -> None:
    e = event(
        {**GRANTED, "ad_storage": "denied"},
        fbp="fb.1.1732360000000.1234567890",
        fbc="fb.1.1732360000000.IwAR",
        fbclid="IwAR",
        gclid="Cj0K",
        user_data=UserData(sha256_email_address="ab" * 32),
    )

    decision = apply_consent(e, ConsentDefaults())

    assert decision.removed == ("fbp", "fbc")
    assert (e.fbp, e.fbc, e.fbclid, e.gclid) == (None, None, "IwAR", "Cj0K")
    assert e.user_data == UserData(sha256_email_address="ab" * 32)


def test_consent_is_applied_in_place() -> None:
    e = event({}, fbp="fb.1.1.2")
    consent = e.consent

    apply_consent(e, ConsentDefaults())

    assert e.consent is consent
    assert consent.ad_storage == "denied"


# --- through the app: gcd by position, per-client defaults, explain ----------------------------

APP_CONTAINER = """
consent:
  default: {ad_storage: granted, analytics_storage: granted, ad_user_data: granted, ad_personalization: granted}
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
CANARY_URL = "https://shop.example/thanks?email=jane.canary@example.com"


def outbox(db_path: Any) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT item FROM outbox ORDER BY id")]


def test_the_live_gcd_with_a_capital_letter_denies_ad_user_data_even_when_the_default_grants(make_client, db_path) -> None:
    client = make_client(APP_CONTAINER, run_dispatcher=False)

    response = client.get(f"/g/collect?v=2&tid=G-T&cid=555.1&en=page_view&gcs=G100&gcd=13p3pPp2p5l1&dl={quote(CANARY_URL, safe='')}")

    assert response.status_code == 204
    (item,) = outbox(db_path)
    assert item["consent"] == DENIED
    assert item["page_location"] == "https://shop.example/thanks?email=(redacted)"


@pytest.mark.parametrize("gcd", ["13x3x3x2x5l1", "13p3p", "13p3p3p2p5l1" * 8])
def test_a_gcd_that_cannot_be_read_denies_all_four_never_the_granting_default(make_client, db_path, gcd: str) -> None:
    client = make_client(APP_CONTAINER, run_dispatcher=False)

    assert client.get(f"/g/collect?v=2&tid=G-T&cid=555.1&en=page_view&gcd={gcd}").status_code == 204

    (item,) = outbox(db_path)
    assert item["consent"] == DENIED


def test_gcs_without_gcd_leaves_ad_user_data_to_the_default(make_client, db_path) -> None:
    # No page of Google's says ad_user_data follows ad_storage when gcd is absent (see gateway.consent).
    client = make_client(APP_CONTAINER.replace("ad_user_data: granted", "ad_user_data: denied"), run_dispatcher=False)

    assert client.get("/g/collect?v=2&tid=G-T&cid=555.1&en=page_view&gcs=G111").status_code == 204

    (item,) = outbox(db_path)
    assert (item["consent"]["ad_storage"], item["consent"]["ad_user_data"]) == ("granted", "denied")


WEBHOOK_SECRET = "fixture-secret-0123456789"
PER_CLIENT = """
clients:
  - type: json_beacon
  - type: order_webhook
    secret: fixture-secret-0123456789
    consent:
      default: {ad_user_data: granted}
triggers:
  everything: {all: []}
tags:
  - name: sink
    type: http_request
    trigger: everything
    url: http://127.0.0.1:9/unused
    mode: dry_run
"""


def signed_post(client: Any, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/order-update", content=body,
                       headers={"content-type": "application/json", "x-signature": signature})


def test_a_clients_own_default_overrides_the_containers_for_its_events_only(make_client, db_path) -> None:
    client = make_client(PER_CLIENT, run_dispatcher=False)
    caller = {"email": "jane.canary@example.com", "phone": "+1 415 555 0107"}

    assert signed_post(client, {"order_id": "ORD-1", "event": "order_paid", "order_value": 20.0, "currency": "EUR",
                                "customer": caller}).status_code < 300
    assert client.post("/collect", json={"event_name": "page_view", "client_id": "+1 415 555 0107"}).status_code < 300

    webhook_item, beacon_item = outbox(db_path)
    # The operator said checkout consent covers the order system's data: the caller's details travel.
    assert webhook_item["consent"] == {**DENIED, "ad_user_data": "granted"}
    assert webhook_item["user_data"] == {"email_address": "jane.canary@example.com", "phone_number": "+1 415 555 0107"}
    # The beacon has no default of its own: the container's (denied) applies, and its id is a pseudonym.
    assert beacon_item["consent"] == DENIED
    assert re.fullmatch(r"pid-[0-9a-f]{32}", beacon_item["client_id"])


def test_a_signal_the_webhook_carries_still_wins_over_the_clients_default(make_client, db_path) -> None:
    client = make_client(PER_CLIENT, run_dispatcher=False)

    assert signed_post(client, {"order_id": "ORD-2", "event": "order_paid", "order_value": 20.0, "currency": "EUR",
                                "customer": {"email": "jane.canary@example.com"},
                                "consent": {"ad_user_data": "denied"}}).status_code < 300

    (item,) = outbox(db_path)
    assert item["consent"]["ad_user_data"] == "denied" and "user_data" not in item


def test_a_client_consent_default_with_an_unknown_signal_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        container_from(PER_CLIENT.replace("{ad_user_data: granted}", "{ad_user_date: granted}"), tmp_path / "x.db")
    assert "clients[1] (order_webhook).consent.default.ad_user_date" in str(caught.value)


async def test_explain_uses_the_same_per_client_default(tmp_path) -> None:
    container = container_from(PER_CLIENT, tmp_path / "never.db")
    body = json.dumps({"order_id": "ORD-3", "event": "order_paid", "order_value": 5.0, "currency": "EUR"})
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    spec = {"method": "POST", "path": "/webhooks/order-update", "body": body,
            "headers": {"Content-Type": "application/json", "X-Signature": signature}}

    trace = (await explain(container, spec)).to_json()

    consent = {c["signal"]: (c["state"], c["source"]) for c in trace["runs"][0]["consent"]}
    assert consent["ad_user_data"] == ("granted", "default")
    assert consent["ad_storage"] == ("denied", "default")


def test_the_policy_merges_a_clients_partial_default_over_the_containers(tmp_path) -> None:
    policy = ConsentPolicy.for_container(container_from(PER_CLIENT, tmp_path / "x.db"))
    webhook_event = event({}, source=Source(client="order_webhook", authenticated=True))
    beacon_event = event({}, source=Source(client="json_beacon", authenticated=False))

    assert policy.defaults_for(webhook_event) == ConsentDefaults(ad_user_data="granted")
    assert policy.defaults_for(beacon_event) == ConsentDefaults()
