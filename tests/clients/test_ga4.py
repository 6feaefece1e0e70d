"""The GA4 client: gtag.js hits in, events out, or a 400 naming the parameter."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clients import _ga4_names, ga4
from gateway.client import RawRequest
from gateway.config import ConsentDefaults
from gateway.consent import apply_consent
from gateway.errors import BadRequest
from gateway.event import CONSENT_SIGNALS, Event

FIXTURES = Path(__file__).parent.parent / "fixtures"
WIRE_CASES = sorted((FIXTURES / "ga4").glob("*.json"))
CLIENT_CASES = sorted((FIXTURES / "clients" / "ga4").glob("*.json"))
RECEIVED_AT = datetime(2024, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
ALL_DENIED = ConsentDefaults()
CONFIG = ga4.Config(type="ga4")


def request_from(case: dict[str, Any]) -> RawRequest:
    headers = {name.lower(): value for name, value in case["headers"].items()}
    return RawRequest(
        method=case["method"],
        path="/g/collect",
        query_string=case["query"],
        headers=headers,
        body=case["body"].encode("utf-8"),
        client_ip="198.51.100.23" if "x-forwarded-for" in headers else "127.0.0.1",
        received_at=RECEIVED_AT,
    )


def request(query: str, *, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None,
            protocol: str = "v=2&") -> RawRequest:
    """A hit as gtag.js sends it: ``protocol`` (v=2, unless a test says otherwise) before ``query``."""
    return RawRequest(method, "/g/collect", protocol + query, headers or {}, body, "127.0.0.1", RECEIVED_AT)


def assert_events_match(case: dict[str, Any]) -> None:
    config = ga4.Config(type="ga4", **case.get("config", {}))
    result = ga4.parse(request_from(case), config)

    assert result.status == 204
    assert len(result.events) == len(case["expect"])
    for event, expected in zip(result.events, case["expect"]):
        assert Event.from_data(msgspec.to_builtins(event)) == event  # built unvalidated, it passes validation
        if expected.get("consent") == "the container's consent.default for every signal":
            # the client leaves what the request did not carry unset; the pipeline fills it
            assert msgspec.structs.asdict(event.consent) == dict.fromkeys(CONSENT_SIGNALS)
            expected = {**expected, "consent": ALL_DENIED.model_dump()}
        assert event.timestamp == RECEIVED_AT
        apply_consent(event, ALL_DENIED)
        actual = event.to_json_dict()
        for key, want in expected.items():
            assert actual.get(key) == want, key


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in WIRE_CASES])
def test_gtag_hit_becomes_the_expected_events(path: Path) -> None:
    assert_events_match(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CLIENT_CASES if not p.stem.startswith("bad_")])
def test_client_case_becomes_the_expected_events(path: Path) -> None:
    assert_events_match(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CLIENT_CASES if p.stem.startswith("bad_")])
def test_bad_hit_is_refused_naming_the_parameter(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    config = ga4.Config(type="ga4", **case.get("config", {}))

    with pytest.raises(BadRequest) as caught:
        ga4.parse(request_from(case), config)

    expected = case["error"]
    assert (caught.value.status, caught.value.field) == (expected["status"], expected["field"])
    if "line" in expected:
        assert caught.value.body()["detail"] == {"field": expected["field"], "line": expected["line"]}


def test_fixture_folders_are_not_empty() -> None:
    assert WIRE_CASES and CLIENT_CASES


def test_body_that_is_not_utf8_is_refused_naming_the_body() -> None:
    with pytest.raises(BadRequest) as caught:
        ga4.parse(request("v=2&cid=1", method="POST", body=b"en=page_view&dt=Caf\xe9"), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, "body")


def test_raw_query_bytes_that_are_not_utf8_are_refused_naming_the_query() -> None:
    # the app hands the undecoded query over as latin-1; \xff alone is no UTF-8
    with pytest.raises(BadRequest) as caught:
        ga4.parse(request("en=page_view&dt=\xff"), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, "query")


def test_raw_utf8_query_bytes_are_read_as_utf8() -> None:
    raw_query = "en=page_view&dt=Caf\u00c3\u00a9"  # b"Caf\xc3\xa9" seen through latin-1

    [event] = ga4.parse(request(raw_query), CONFIG).events

    assert event.page_title == "Café"


def test_refusal_never_echoes_the_offending_value() -> None:
    with pytest.raises(BadRequest) as caught:
        ga4.parse(request("en=purchase&epn.value=jane.doe%40example.com"), CONFIG)

    assert caught.value.field == "epn.value"
    assert "jane" not in json.dumps(caught.value.body()) + str(caught.value)


def test_empty_numeric_parameters_are_absent_not_errors() -> None:
    query = "en=purchase&epn.value=&ep.tax=&epn.custom=&upn.orders=&pr1=idA~qt~pr"

    [event] = ga4.parse(request(query), CONFIG).events

    assert (event.value, event.tax, event.extra, event.user_properties) == (None, None, {}, None)
    assert event.items == [{"item_id": "A"}]


def test_text_id_wins_over_its_numeric_form() -> None:
    [event] = ga4.parse(request("en=purchase&epn.transaction_id=10044&ep.transaction_id=ORD-10044"), CONFIG).events

    assert event.transaction_id == "ORD-10044"


def test_numeric_value_wins_over_its_text_form() -> None:
    [event] = ga4.parse(request("en=purchase&ep.value=oops&epn.value=12.5"), CONFIG).events

    assert event.value == 12.5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("en=x&epn.value=١٢", "epn.value", id="arabic_indic_digits"),
        pytest.param("en=x&epn.value=1_000", "epn.value", id="underscore_grouping"),
        pytest.param("en=x&epn.value=%201", "epn.value", id="leading_space"),
        pytest.param("en=x&ep.value=12%2C50", "ep.value", id="decimal_comma_in_text_value"),
        pytest.param("en=x&upn.score=inf", "upn.score", id="infinity"),
        pytest.param("en=x&pr1=idA~pr9%2C99", "pr1.pr", id="item_price_with_comma"),
    ],
)
def test_numbers_must_be_plain_ascii_decimals(query: str, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        ga4.parse(request(query), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, field)


def test_get_ignores_any_body() -> None:
    result = ga4.parse(request("en=page_view", body=b"en=purchase"), CONFIG)

    assert [e.event_name for e in result.events] == ["page_view"]


def test_gcs_alone_sets_only_the_storage_signals() -> None:
    [event] = ga4.parse(request("en=page_view&gcs=G110"), CONFIG).events

    assert msgspec.structs.asdict(event.consent) == {
        "ad_storage": "granted",
        "analytics_storage": "denied",
        "ad_user_data": None,
        "ad_personalization": None,
    }


def test_gcd_wins_over_gcs_only_where_it_sets_a_signal() -> None:
    # gcd: ad_storage not set (l), analytics granted on update (r), ad_user_data denied (p), ad_personalization not set
    [event] = ga4.parse(request("en=page_view&gcs=G110&gcd=13l3r3p2l5l1"), CONFIG).events

    assert msgspec.structs.asdict(event.consent) == {
        "ad_storage": "granted",
        "analytics_storage": "granted",
        "ad_user_data": "denied",
        "ad_personalization": None,
    }


def test_without_consent_parameters_every_signal_is_left_unset() -> None:
    [event] = ga4.parse(request("en=page_view"), CONFIG).events

    assert msgspec.structs.asdict(event.consent) == dict.fromkeys(CONSENT_SIGNALS)


def test_missing_tid_is_refused_when_an_allow_list_is_set() -> None:
    config = ga4.Config(type="ga4", measurement_ids=["G-ABC123XYZ"])

    with pytest.raises(BadRequest) as caught:
        ga4.parse(request("en=page_view"), config)

    assert caught.value.field == "tid"


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        ga4.Config.model_validate({"type": "ga4", "measurement_id": "G-ABC123XYZ"})


def test_routes_are_get_and_post_on_g_collect() -> None:
    assert ga4.ROUTES == [("GET", "/g/collect"), ("POST", "/g/collect")]


def test_every_event_of_a_batch_gets_its_own_consent_object() -> None:
    body = b"en=a\r\nen=b"
    first, second = ga4.parse(request("gcd=13p3p3p2p5l1", method="POST", body=body), CONFIG).events

    assert first.consent is not second.consent


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("en=x&pr1=~~~~", id="item_of_empty_pieces"),
        pytest.param("en=x&pr1=zz~q~idA~%", id="item_with_unknown_codes"),
        pytest.param("en=x&pr1=k0~v0~k~v~k99999999999999999999a~v9", id="custom_pairs_without_names"),
        pytest.param("en=x&pr99999999=idA&pr=idB&pr0=idC", id="odd_item_indexes"),
        pytest.param("en=x&=1&&&=&ep.=1&epn.=x&up.=1", id="empty_names"),
        pytest.param("en=x&sct=99999999999999999999999999&sid=", id="huge_session_number"),
        pytest.param("en=x&em=tv.1~em.%FF", id="em_with_bad_escape"),
        pytest.param("en=x&dl=https%3A%2F%2Fa%2F%3Fgclid%3D%25FF%26gbraid%3D", id="bad_click_ids"),
        pytest.param("en=x&gcs=G1\u00e9&gcd=\u0661\u0663r", id="consent_garbage"),
        pytest.param("en=" + "x" * 201, id="event_name_too_long"),
        pytest.param("en=x&epn.value=" + "9" * 5000, id="number_of_5000_digits"),
        pytest.param("en=x&epn.n=" + "9" * 5000, id="custom_number_of_5000_digits"),
        pytest.param("en=x&pr1=qt" + "9" * 5000, id="quantity_of_5000_digits"),
        pytest.param("en=x&pr1=qt1e300", id="quantity_beyond_json_integers"),
        pytest.param("en=x&ep.value=%00", id="nul_character"),
    ],
)
def test_hostile_hit_ends_in_an_event_or_a_bad_request(query: str) -> None:
    try:
        result = ga4.parse(request(query), CONFIG)
    except BadRequest as exc:
        assert exc.status == 400
    else:
        assert [e.event_name for e in result.events] == ["x"]


@settings(max_examples=300, deadline=None)
@given(
    query=st.text(alphabet=st.sampled_from("ep.nrkv0129~&=%+-_ACFabcdeilmqtux\u00e9\xff"), max_size=80),
    body=st.binary(max_size=60),
)
def test_any_input_ends_in_events_or_a_bad_request(query: str, body: bytes) -> None:
    for method in ("GET", "POST"):
        try:
            result = ga4.parse(request("en=x&" + query, method=method, body=body), CONFIG)
        except BadRequest as exc:
            assert exc.status == 400
        else:
            assert result.events


@pytest.mark.parametrize("query", [
    pytest.param("en=page_view", id="neither_v_nor_tid"),
    pytest.param("v=1&tid=G-ABC123XYZ&en=page_view", id="another_protocol_version"),
])
def test_a_request_that_is_not_ga4_protocol_v2_is_not_claimed(query):
    with pytest.raises(BadRequest) as info:
        ga4.parse(request(query, protocol=""), CONFIG)

    assert (info.value.status, info.value.body()) == (400, {
        "error": "not a GA4 hit: without v=2 or a tid, no client claims it", "detail": {"field": "v"}})


@pytest.mark.parametrize("query", ["v=2&en=page_view", "tid=G-ABC123XYZ&en=page_view"])
def test_v2_or_a_measurement_id_is_enough_to_claim_a_hit(query):
    assert [e.event_name for e in ga4.parse(request(query, protocol=""), CONFIG).events] == ["page_view"]


def test_consent_is_each_lines_own_although_decoded_once_per_request() -> None:
    body = b"en=a\nen=b&gcs=G100\nen=c\nen=d&gcd=13p3p3p2p5l1"
    result = ga4.parse(request("v=2&tid=G-ABC123XYZ&gcs=G111", method="POST", body=body), ga4.Config(type="ga4"))
    consents = [(e.consent.ad_storage, e.consent.analytics_storage, e.consent.ad_user_data) for e in result.events]
    assert consents == [("granted", "granted", None), ("denied", "denied", None), ("granted", "granted", None),
                        ("denied", "denied", "denied")]
    assert result.consent_sources == [
        {"ad_storage": "gcs", "analytics_storage": "gcs"}, {"ad_storage": "gcs", "analytics_storage": "gcs"},
        {"ad_storage": "gcs", "analytics_storage": "gcs"},
        {"ad_storage": "gcd", "analytics_storage": "gcd", "ad_user_data": "gcd", "ad_personalization": "gcd"},
    ]
    # Each event has its own consent and its own note: the gateway changes one without touching the others.
    result.events[0].consent.ad_user_data = "granted"
    result.consent_sources[0]["ad_user_data"] = "default"
    assert result.events[2].consent.ad_user_data is None and "ad_user_data" not in result.consent_sources[2]


def test_parameter_names_remembered_are_bounded_whatever_names_a_client_makes_up() -> None:
    # The client remembers how it reads each parameter name; a client sending endless made-up names
    # (long ones too) must not grow that memory past its bounds, and every hit is still read in full.
    _ga4_names.KINDS.clear()
    for batch in range(5):
        names = [f"x{batch}_{n}" for n in range(1000)] + [f"ep.{'n' * 300}{batch}", f"{'z' * 70}{batch}"]
        query = "v=2&tid=G-1&en=page_view&" + "&".join(f"{name}=1" for name in names)
        event = ga4.parse(request(query), ga4.Config(type="ga4")).events[0]
        assert event.extra[f"{'n' * 300}{batch}"] == "1"
        assert event.extra[f"x-ga-mp2-{'z' * 70}{batch}"] == "1"
        assert event.extra[f"x-ga-mp2-x{batch}_999"] == "1"
    assert len(_ga4_names.KINDS) <= 4096
    assert max(len(name) for name in _ga4_names.KINDS) <= 64


@pytest.mark.parametrize("query", [
    "en=purchase&epn.transaction_id=10044&ep.transaction_id=ORD-10044&ep.value=oops&epn.value=12.5",
    "en=purchase&ep.transaction_id=ORD-10044&epn.transaction_id=10044&epn.value=12.5&ep.value=oops",
])
def test_both_forms_of_an_id_or_a_number_read_the_same_in_either_order(query: str) -> None:
    for _ in range(2):  # the second parse reads the names from what the first remembered
        [event] = ga4.parse(request(query), CONFIG).events
        assert (event.transaction_id, event.value) == ("ORD-10044", 12.5)


def test_consent_strings_remembered_are_bounded_and_never_shared_between_events() -> None:
    ga4._DECODED.clear()
    for n in range(300):
        ga4.parse(request(f"en=x&gcs=G1{n % 2}{n % 3}&gcd=13r3r3r2r5l1{n:04d}"), CONFIG)
    ga4.parse(request("en=x&gcd=" + "13r3r3r2r5l1" * 5), CONFIG)
    assert len(ga4._DECODED) <= 256
    assert all(len(gcd or "") <= 16 for _, gcd in ga4._DECODED)

    ga4._DECODED.clear()
    first, second = (ga4.parse(request("en=x&gcs=G100&gcd=13p3p3p2p5l1"), CONFIG).events[0] for _ in range(2))
    first.consent.ad_storage = "granted"  # what a later step may do to one event's copy
    assert second.consent.ad_storage == "denied"
    assert ga4._DECODED[("G100", "13p3p3p2p5l1")][0]["ad_storage"] == "denied"
