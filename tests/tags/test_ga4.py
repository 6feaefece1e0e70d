"""The ga4 tag: gtag.js hits in, the same hits out (every parameter), with consent, IP and user agent."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest

from clients import ga4 as ga4_client
from gateway.client import RawRequest
from gateway.config import ConsentDefaults
from gateway.consent import apply_consent
from gateway.event import Event
from gateway.identity import digest_to_hex
from gateway.tag import Skip
from tags import ga4

FIXTURES = Path(__file__).parent.parent / "fixtures"
CAPTURED = sorted((FIXTURES / "ga4").glob("*.json"))
CLIENT_CASES = sorted(p for p in (FIXTURES / "clients" / "ga4").glob("*.json") if not p.stem.startswith("bad_"))
RECEIVED_AT = datetime(2024, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
ALL_DENIED = ConsentDefaults()
ALL_GRANTED = ConsentDefaults(ad_storage="granted", analytics_storage="granted", ad_user_data="granted",
                              ad_personalization="granted")
CONFIG = ga4.Config(name="ga4_forward", type="ga4", trigger="all_events")
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
GRANTED = "gcs=G111&gcd=13r3r3r2r5l1"
DENIED = "gcs=G100&gcd=13p3p3p2p5l1"


def hit(query: str, *, body: str = "", method: str = "GET", defaults: ConsentDefaults = ALL_DENIED,
        headers: dict[str, str] | None = None) -> list[Event]:
    """A gtag.js hit through the GA4 client and the gateway's consent, as the pipeline hands it to tags."""
    raw = RawRequest(method, "/g/collect", query, {"user-agent": UA, **(headers or {})}, body.encode(), "203.0.113.7",
                     RECEIVED_AT)
    events = ga4_client.parse(raw, ga4_client.Config(type="ga4")).events
    for event in events:
        apply_consent(event, defaults)
    return events


def sent(event: Event, config: ga4.Config = CONFIG) -> list[dict[str, str]]:
    """What Google would receive for each delivery: the hit's query and line merged, decoded."""
    return [{**dict(parse_qsl(d.item["query"], keep_blank_values=True)),
             **dict(parse_qsl(d.item["line"], keep_blank_values=True))} for d in ga4.build(event, config)]


def page_params(case: dict[str, Any]) -> list[dict[str, str]]:
    query = dict(parse_qsl(case["query"], keep_blank_values=True))
    lines = [dict(parse_qsl(line, keep_blank_values=True)) for line in re.split(r"\r?\n", case["body"]) if line.strip()]
    if case["method"] == "GET":
        lines = []
    return [{**query, **line} for line in lines] or [query]


# -- every parameter the page sent ----------------------------------------------------------------

# What consent may change on the way, by policy (tested on their own below), and what the gateway sets itself.
POLICY = {"gcs", "gcd", "npa", "_uip"}
EM_CODES = {"em", "pn", "fn0", "ln0", "sa0"}  # the user-provided data the gateway reads (email, phone, names, street)
COOKIELESS = {"cid", "uid", "sid", "sct", "seg", "ecid", "_fv", "_ss", "_nsi", "_gsid"}


def semantic(params: dict[str, str]) -> dict[str, Any]:
    """A hit's meaning: ep./epn. by name (numbers as numbers), items piece by piece, currency upper-case.

    gtag.js types a parameter by its prefix and GA4 reads it by name; a page's
    ``ep.value=19.90`` and ``epn.value=19.9`` are the same value.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith(("ep.", "epn.")):
            name = key.split(".", 1)[1]
            out[f"param:{name}"] = _typed(value)
        elif key in ("cu",) or key == "ep.currency":
            out["currency"] = value.upper()
        elif key == "em":
            if digests := sorted(_digests(value)):  # pieces that are not digests never pass as one
                out["em"] = digests
        elif key == "v" or re.fullmatch(r"pr\d+", key):
            continue
        else:
            out[key] = value
    if "param:currency" in out:
        out.setdefault("currency", str(out.pop("param:currency")).upper())
    items = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items() if re.fullmatch(r"pr\d+", k))
    if items:
        # Items are a list in index order (pr10 after pr2); read both sides with the GA4 client's item decoder.
        out["items"] = hit(f"v=2&en=x&{items}")[0].items
    return out


def _typed(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return number


def _digests(value: str) -> list[str]:
    pieces = (piece.partition(".") for piece in value.split("~"))
    return [d for code, _, text in pieces if code in EM_CODES and (d := digest_to_hex(text)) is not None]


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in [*CAPTURED, *CLIENT_CASES]])
def test_every_parameter_of_a_captured_hit_reaches_google(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    events = hit(case["query"], body=case["body"], method=case["method"], defaults=ALL_GRANTED,
                 headers={k.lower(): v for k, v in case["headers"].items()})

    for original, event in zip(page_params(case), events, strict=True):
        [out] = sent(event)
        changed = POLICY | ({"em"} if event.consent.ad_user_data != "granted" else set())
        if not original.get("_et", "0").isdigit():
            changed.add("_et")  # _et=NaN reads as absent
        if event.consent.analytics_storage != "granted":
            changed |= COOKIELESS | {k for k in original if k.startswith(("up.", "upn."))}
        want = semantic({k: v for k, v in original.items() if k not in changed})
        got = semantic(out)
        missing = {k: v for k, v in want.items() if got.get(k) != v}
        assert missing == {}, f"changed or lost on the way: {sorted(missing)}"
        assert out["_uip"] == "203.0.113.7"


def test_the_issues_dropped_parameters_are_forwarded_as_the_page_sent_them() -> None:
    query = (f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&_p=17&sid=9&sct=2&seg=1&sst.tft=1732359999000&sst.etld=shop.example"
             "&en=page_view&_fv=1&_ss=1&_nsi=1&_dbg=1&_et=2400")

    [event] = hit(query, defaults=ALL_GRANTED)
    [out] = sent(event)

    assert {k: out[k] for k in ("_et", "_ss", "_fv", "_nsi", "_dbg", "seg", "sst.tft", "sst.etld")} == {
        "_et": "2400", "_ss": "1", "_fv": "1", "_nsi": "1", "_dbg": "1", "seg": "1", "sst.tft": "1732359999000",
        "sst.etld": "shop.example",
    }


def test_engagement_time_nan_is_left_out_and_the_hit_still_goes() -> None:
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&en=page_view&_et=NaN", defaults=ALL_GRANTED)

    [out] = sent(event)

    assert "_et" not in out and out["en"] == "page_view"


def test_the_visitors_ip_and_user_agent_go_with_the_hit() -> None:
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&en=page_view", defaults=ALL_GRANTED)

    [delivery] = ga4.build(event, CONFIG)

    assert (dict(parse_qsl(delivery.item["query"]))["_uip"], delivery.item["user_agent"]) == ("203.0.113.7", UA)


def test_an_address_that_is_not_an_ip_is_not_sent_as_one() -> None:
    event = Event.from_data({"event_name": "page_view", "client_id": "1.2", "ip_override": "unknown",
                                  "extra": {"measurement_id": "G-ABC123XYZ"}})

    assert "_uip" not in sent(event)[0]


def test_a_batch_is_split_into_the_pages_query_and_one_line_per_event() -> None:
    events = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&_p=5&dl=https%3A%2F%2Fshop.example%2F", method="POST",
                 body="en=view_item&_s=2&_et=10\r\nen=scroll&_s=3&epn.percent_scrolled=90", defaults=ALL_GRANTED)

    items = [ga4.build(event, CONFIG)[0].item for event in events]

    assert items[0]["query"] == items[1]["query"]
    assert [item["line"] for item in items] == ["en=view_item&_s=2&_et=10", "en=scroll&_s=3&epn.percent_scrolled=90"]


# -- consent ------------------------------------------------------------------------------------

def test_granted_consent_is_carried_as_the_page_sent_it() -> None:
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&npa=0&cid=1.2&en=page_view", defaults=ALL_DENIED)

    [out] = sent(event)

    assert (out["gcs"], out["gcd"], out["npa"]) == ("G111", "13r3r3r2r5l1", "0")


@pytest.mark.parametrize(("query", "defaults", "gcs", "gcd"), [
    pytest.param("", ALL_DENIED, "G100", "13p3p3p2p5l1", id="no-signal-default-denied"),
    pytest.param("", ALL_GRANTED, "G111", "13t3t3t2t5l1", id="no-signal-default-granted"),
    pytest.param("&gcd=13r3r3l2l5l1", ALL_DENIED, "G111", "13r3r3p2p5l1", id="unset-letters-take-the-default"),
    pytest.param("&gcs=G101", ALL_DENIED, "G101", "13p3t3p2p5l1", id="gcs-only"),
])
def test_consent_on_the_wire_is_what_the_gateway_decided(query: str, defaults: ConsentDefaults, gcs: str, gcd: str) -> None:
    [event] = hit(f"v=2&tid=G-ABC123XYZ&cid=1.2&en=page_view{query}", defaults=defaults)

    [out] = sent(event)

    assert (out["gcs"], out["gcd"]) == (gcs, gcd)


def test_ad_personalization_denied_says_npa_1_whatever_the_page_said() -> None:
    [event] = hit("v=2&tid=G-ABC123XYZ&gcs=G111&gcd=13r3r3r2q5l1&npa=0&cid=1.2&en=page_view")

    assert sent(event)[0]["npa"] == "1"


def test_analytics_storage_denied_sends_a_cookieless_ping_without_any_lasting_identifier() -> None:
    query = (f"v=2&tid=G-ABC123XYZ&gcs=G110&gcd=13r3p3r2r5l1&cid=1234567890.1732360000&uid=user-42&_p=1732360000123"
             "&sid=1732360000&sct=3&seg=1&ecid=1929917296&en=page_view&_fv=1&_ss=1&_nsi=1&up.plan=gold&_et=5"
             "&dl=https%3A%2F%2Fshop.example%2F")
    [event] = hit(query)

    [out] = sent(event)

    assert not {"uid", "sid", "sct", "seg", "ecid", "_fv", "_ss", "_nsi", "up.plan"} & set(out)
    assert re.fullmatch(r"\d+\.\d+", out["cid"]) and "1234567890" not in out["cid"]
    assert (out["gcs"], out["_et"], out["dl"]) == ("G110", "5", "https://shop.example/")
    assert "1234567890" not in json.dumps([d.item for d in ga4.build(event, CONFIG)])


def test_a_cookieless_client_id_lasts_one_page_view() -> None:
    base = "v=2&tid=G-ABC123XYZ&gcs=G100&cid=1.2&en=page_view"
    first, again, other = (sent(hit(f"{base}&_p={page}")[0])[0]["cid"] for page in (111, 111, 222))

    assert first == again != other


def test_user_provided_data_goes_hashed_only_with_ad_user_data_granted() -> None:
    email_digest = hashlib.sha256(b"jane.doe@example.com").digest()
    em = base64.urlsafe_b64encode(email_digest).rstrip(b"=").decode()
    query = f"v=2&tid=G-ABC123XYZ&cid=1.2&en=generate_lead&em=tv.1~em.{em}"

    granted = sent(hit(f"{query}&{GRANTED}")[0])[0]
    denied = sent(hit(f"{query}&gcs=G111&gcd=13r3r3p2r5l1")[0])[0]

    assert granted["em"] == f"tv.1~em.{em}"
    assert "em" not in denied and em not in json.dumps(denied)


def test_a_raw_email_from_the_beacon_is_hashed_with_googles_normalisation() -> None:
    event = Event.from_data({
        "event_name": "sign_up", "client_id": "1.2", "extra": {"measurement_id": "G-ABC123XYZ"},
        "user_data": {"email_address": " Jane.Doe@Example.com "},
        "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
                    "ad_personalization": "granted"},
    })
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"jane.doe@example.com").digest()).rstrip(b"=").decode()

    [out] = sent(event)

    assert out["em"] == f"tv.1~em.{expected}" and "Jane" not in json.dumps(out)


# -- where it goes --------------------------------------------------------------------------------

def test_without_measurement_ids_the_hit_goes_to_its_own_property() -> None:
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&en=page_view")

    assert [(d.batch_key, sent(event)[0]["tid"]) for d in ga4.build(event, CONFIG)] == [("collect:G-ABC123XYZ", "G-ABC123XYZ")]


def test_several_measurement_ids_get_one_hit_each() -> None:
    config = ga4.Config(name="both", type="ga4", trigger="t", measurement_ids=["G-AAAA1111", "G-BBBB2222"])
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&en=page_view")

    deliveries = ga4.build(event, config)

    assert [d.batch_key for d in deliveries] == ["collect:G-AAAA1111", "collect:G-BBBB2222"]
    assert [p["tid"] for p in sent(event, config)] == ["G-AAAA1111", "G-BBBB2222"]
    assert len({d.idempotency_key for d in deliveries}) == 2


def test_an_event_without_a_measurement_id_is_skipped() -> None:
    event = Event(event_name="page_view", client_id="1.2")

    with pytest.raises(Skip, match="no_measurement_id"):
        ga4.build(event, CONFIG)


def test_an_order_systems_event_is_not_forwarded_as_a_browser_hit() -> None:
    event = Event.from_data({
        "event_name": "refund", "transaction_id": "ORD-1", "value": 10.0, "currency": "EUR",
        "source": {"client": "order_webhook", "authenticated": True}, "extra": {"measurement_id": "G-ABC123XYZ"},
        "adjustment": {"type": "RESTATEMENT", "adjustment_id": "ORD-1/r1", "order_id": "ORD-1"},
    })

    with pytest.raises(Skip, match="order_system_event"):
        ga4.build(event, CONFIG)


def test_an_order_systems_purchase_is_not_forwarded_even_to_listed_measurement_ids() -> None:
    config = ga4.Config(name="listed", type="ga4", trigger="t", measurement_ids=["G-AAAA1111"])
    event = Event.from_data({"event_name": "purchase", "transaction_id": "ORD-1", "value": 10.0, "currency": "EUR",
                                  "source": {"client": "order_webhook", "authenticated": True}})

    with pytest.raises(Skip, match="order_system_event"):
        ga4.build(event, config)


def test_debug_mode_marks_every_hit_as_debug_traffic() -> None:
    config = ga4.Config(name="debug", type="ga4", trigger="t", debug_mode=True)
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&en=page_view")

    assert sent(event, config)[0]["_dbg"] == "1"


# -- the contract every tag keeps ---------------------------------------------------------------

def test_the_sample_config_validates_and_a_bad_measurement_id_is_refused() -> None:
    ga4.Config.model_validate({"name": "ga4", "type": "ga4", "trigger": "all_events", "measurement_ids": ["G-ABC123XYZ"]})

    with pytest.raises(ValueError, match="measurement_ids.0"):
        ga4.Config.model_validate({"name": "ga4", "type": "ga4", "trigger": "t", "measurement_ids": ["UA-1"]})


def test_build_is_deterministic_and_its_idempotency_key_stable() -> None:
    query = f"v=2&tid=G-ABC123XYZ&{DENIED}&cid=1.2&_p=5&en=page_view"

    assert ga4.build(hit(query)[0], CONFIG) == ga4.build(hit(query)[0], CONFIG)


def test_nothing_from_user_data_survives_when_ad_user_data_is_denied() -> None:
    event = Event.from_data({
        "event_name": "sign_up", "client_id": "1.2", "extra": {"measurement_id": "G-ABC123XYZ"},
        "user_data": {"email_address": "jane.doe@example.com", "phone_number": "+4915112345678"},
        "consent": {"ad_user_data": "denied"},
    })
    apply_consent(event, ALL_GRANTED)
    digests = [hashlib.sha256(v).hexdigest() for v in (b"jane.doe@example.com", b"+4915112345678")]

    text = json.dumps([d.item for d in ga4.build(event, CONFIG)])

    assert "jane" not in text and "4915112345678" not in text and not any(d in text for d in digests)


def test_a_number_written_with_a_leading_zero_goes_back_as_the_page_wrote_it() -> None:
    # @minimal-analytics/ga4 pads its page id to 16 digits: _p=0710668103329946
    [event] = hit(f"v=2&tid=G-ABC123XYZ&{GRANTED}&cid=1.2&_p=0710668103329946&_s=01&en=page_view&_et=0900",
                  defaults=ALL_GRANTED)

    out = sent(event)[0]

    assert (out["_p"], out["_s"], out["_et"]) == ("0710668103329946", "01", "900")
