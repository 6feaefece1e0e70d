"""GA4 hits and JSON beacons, malformed in every way: never a 5xx, a JSON error on 4xx, nothing left behind by a 4xx."""

from __future__ import annotations

from typing import Any

import base64

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, MAX_BODY, FuzzedGateway
from tests.fuzz.strategies import (
    dumps,
    hostile_json,
    iso_times,
    json_values,
    mangled,
    mostly,
    numberish,
    objects,
    query_of,
    query_pairs,
    recent_times,
    text,
)

# -- GA4 ------------------------------------------------------------------------------------------

EVENT_NAMES = ["purchase", "page_view", "refund", "generate_lead", "order_cancelled", "", " ", "x" * 201]
ITEM_CODES = ["id", "nm", "pr", "qt", "ds", "lp", "ca", "c2", "br", "va", "k0", "v0", "k1", "v1", "k10", "v105", "zz",
              "k", "v", ""]
ids = st.one_of(st.from_regex(r"[A-Z]{1,3}-[0-9]{1,6}", fullmatch=True), text)
decimals = mostly(st.decimals(0, 10**6, places=2).map(str), numberish.map(str))
digests = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: b.hex()),
    st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    text,
)
ITEM_PIECES = {"id": ids, "nm": text, "pr": decimals, "qt": st.integers(-3, 1000).map(str) | text, "ds": decimals,
               "ca": text, "k0": text, "v0": text, "k10": text, "v105": text}
item_strings = st.one_of(
    objects(ITEM_PIECES).map(lambda d: "~".join(code + str(value) for code, value in d.items())),
    st.lists(st.tuples(st.sampled_from(ITEM_CODES), text), max_size=8).map(lambda ps: "~".join(c + v for c, v in ps)),
)
em_strings = st.lists(
    st.tuples(st.sampled_from(["tv", "em", "pn", "fn0", "ln0", "sa0", "xx", ""]), digests), max_size=6,
).map(lambda pairs: "~".join(f"{k}.{v}" for k, v in pairs))
click_urls = st.builds(
    lambda name, value, rest: f"https://shop.example/p?{rest}&{name}={value}",
    st.sampled_from(["gclid", "gbraid", "wbraid", "fbclid", "gclid%00"]), ids | text, text,
)
GA4_PARAMS = {
    "v": st.just("2"), "tid": st.sampled_from(["G-TEST", "G-OTHER"]), "cid": st.sampled_from(["555.1732360000", "1.2"]),
    "en": st.sampled_from(EVENT_NAMES[:5]), "dl": click_urls, "dr": text, "dt": text, "ul": st.just("de-de"),
    "sr": st.just("1920x1080"), "uid": text, "sid": st.integers(0, 2**40).map(str), "sct": st.integers(0, 99).map(str),
    "npa": st.sampled_from(["0", "1"]), "gcs": st.sampled_from(["G111", "G100", "G101", "G1--", "G1", "X111"]),
    "gcd": st.sampled_from(["13r3r3r2r5l1", "11p1p1p1p5", "13v3v3v2v5", "1", "13x"]) | text,
    "cu": st.sampled_from(["EUR", "usd", "JPY"]), "em": em_strings, "ep.transaction_id": ids, "epn.transaction_id": ids,
    "ep.event_id": ids, "epn.value": decimals, "ep.value": decimals, "epn.tax": decimals, "ep.currency": text,
    "ep.x": text, "epn.x": decimals, "up.x": text, "upn.x": decimals, "pr1": item_strings, "pr2": item_strings,
    "pr10": item_strings, "pr999": item_strings, "pr1000": item_strings, "ep.": text, "ep.user_email": text,
}
ga4_params = objects(GA4_PARAMS, required=("v", "en"))
line_params = objects({k: v for k, v in GA4_PARAMS.items() if k not in ("v", "tid", "cid")}, required=("en",))


@st.composite
def ga4_requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["GET"] * 8 + ["POST"] * 8 + ["HEAD", "PUT"]))
    if draw(st.sampled_from([False] * 9 + [True])):
        query = draw(st.one_of(st.binary(max_size=200), query_pairs(text, text)))
    else:
        query = draw(query_of(draw(ga4_params)))
    headers = [(b"user-agent", draw(st.sampled_from([b"Mozilla/5.0", b"", b"\xff\x00"])))]
    if draw(st.booleans()):
        cookies = [b"_fbp=fb.1.1.2; _fbc=fb.1.2.abc", b"_fbp=\xff\x00", b";;=;", b"_fbc="]
        headers.append((b"cookie", draw(st.sampled_from(cookies))))
    if draw(st.booleans()):
        forwarded = [b"198.51.100.1", b"::1, 10.0.0.1", b"not-an-ip", b"\xff", b""]
        headers.append((b"x-forwarded-for", draw(st.sampled_from(forwarded))))
    body = b""
    if method == "POST" and draw(st.sampled_from([True] * 3 + [False])):
        lines = [draw(query_of(params)) for params in draw(st.lists(line_params, max_size=22))]
        body = draw(mangled(draw(st.sampled_from([b"\n", b"\r\n"])).join(lines)))
    return {"method": method, "query": query, "headers": headers, "body": body}


@FUZZ
@given(request=ga4_requests())
def test_ga4_hits_of_any_shape_get_2xx_or_a_json_4xx_and_a_4xx_stores_nothing(fuzzed: FuzzedGateway, request):
    fuzzed.send_checked(request["method"], "/g/collect", query=request["query"], headers=request["headers"],
                        body=request["body"])


# -- JSON beacon -----------------------------------------------------------------------------------

CONSENT_VALUES = st.sampled_from(["granted", "denied"]) | st.sampled_from(["GRANTED", "", "yes"])
amounts = mostly(st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False), numberish)
BEACON_FIELDS = {
    "event_name": st.sampled_from(EVENT_NAMES[:5]) | st.sampled_from(EVENT_NAMES) | text,
    "client_id": text, "user_id": text, "event_id": text,
    "timestamp": mostly(st.integers(1500000000000, 2000000000000) | recent_times(),
                        st.one_of(iso_times(), st.integers(0, 253402300800000), numberish), odds=3),
    "transaction_id": text, "value": amounts, "currency": st.sampled_from(["EUR", "USD", "JPY"]) | text,
    "tax": amounts, "shipping": amounts,
    "items": st.lists(objects({"item_id": text, "price": amounts, "quantity": st.integers(-5, 10**6) | numberish,
                               "item_name": text}), max_size=4),
    "user_data": objects({
        "email_address": text, "phone_number": text, "sha256_email_address": text, "sha256_phone_number": text,
        "gender": text, "date_of_birth": text, "external_id": text,
        "address": objects({"first_name": text, "last_name": text, "street": text, "city": text, "region": text,
                            "country": text, "postal_code": text, "sha256_first_name": text}),
    }),
    "consent": objects({s: CONSENT_VALUES for s in ("ad_storage", "analytics_storage", "ad_user_data",
                                                    "ad_personalization")}),
    "gclid": text, "gbraid": text, "wbraid": text, "fbclid": text, "fbc": text, "fbp": text,
    "page_location": click_urls, "ip_override": text, "user_agent": text, "items_extra": json_values,
    "adjustment": st.none() | json_values, "extra": st.dictionaries(text, json_values, max_size=3),
    "user_properties": st.dictionaries(text, json_values, max_size=3),
}
beacon_objects = objects(BEACON_FIELDS, required=("event_name",))
beacon_payloads = st.sampled_from(range(10)).flatmap(lambda n: (
    beacon_objects if n < 6
    else st.builds(lambda events: {"events": events}, st.lists(beacon_objects, min_size=1, max_size=6)) if n < 9
    else st.one_of(st.builds(lambda events: {"events": events}, hostile_json), hostile_json)
))
CONTENT_TYPES = [b"application/json"] * 30 + [b"text/plain"] * 10 + [
    b"text/plain;charset=UTF-8", b"application/json; charset=latin-1", b"APPLICATION/JSON", b"application/xml", b"",
    b"multipart/form-data; boundary=x", b"\xff"]
ORIGINS = [None] * 8 + [b"https://shop.example"] * 6 + [b"https://evil.example", b"null", b"", b"\xff\xfe"]


@st.composite
def beacon_requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["POST"] * 16 + ["OPTIONS", "GET"]))
    headers = [(b"content-type", draw(st.sampled_from(CONTENT_TYPES)))]
    origin = draw(st.sampled_from(ORIGINS))
    if origin is not None:
        headers.append((b"origin", origin))
    body = draw(mangled(dumps(draw(beacon_payloads))))
    if draw(st.sampled_from([False] * 19 + [True])):  # just over the limit
        body = body + b" " * (MAX_BODY + 1 - len(body)) if len(body) <= MAX_BODY else body
    return {"method": method, "headers": headers, "body": body}


@FUZZ
@given(request=beacon_requests())
def test_json_beacons_of_any_shape_get_2xx_or_a_json_4xx_and_a_4xx_stores_nothing(fuzzed: FuzzedGateway, request):
    fuzzed.send_checked(request["method"], "/collect", headers=request["headers"], body=request["body"])


@FUZZ
@given(chunks=st.lists(st.binary(max_size=MAX_BODY // 2), min_size=1, max_size=4),
       declared=st.one_of(st.none(), st.integers(-5, 3 * MAX_BODY).map(str), st.sampled_from(["", "12a", "1e3", " 5", "-0"])),
       disconnect=st.booleans(), path=st.sampled_from(["/collect", "/g/collect", "/webhooks/order-update",
                                                        "/webhooks/shopify", "/webhooks/woocommerce"]))
def test_bodies_cut_short_split_or_lying_about_their_length_get_a_json_4xx(fuzzed: FuzzedGateway, chunks, declared,
                                                                            disconnect, path):
    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", declared.encode()))
    fuzzed.send_checked("POST", path, headers=headers, chunks=chunks, disconnect=disconnect)
