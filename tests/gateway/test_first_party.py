"""Server-managed cookies: FPID, _fbp and _fbc on collection answers, with consent, and as Meta's Parameter Builder makes them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from clients import ga4 as ga4_client
from gateway.client import RawRequest
from gateway.config import ConsentDefaults
from gateway.consent import ConsentPolicy
from gateway.event import Event
from gateway.first_party import CookiesSection, FirstPartyCookies, subdomain_index, valid_fb_cookie

RECEIVED_AT = datetime(2026, 11, 20, 10, 0, 0, tzinfo=timezone.utc)
MILLIS = 1795168800000
DENIED = ConsentDefaults()
GRANTED = ConsentDefaults(ad_storage="granted", analytics_storage="granted", ad_user_data="granted",
                          ad_personalization="granted")
BOTH = {"fpid": {"enabled": True}, "meta": {"enabled": True}}
FOUR_HUNDRED_DAYS = 400 * 86400


def jar(section: dict[str, Any] | None = None, defaults: ConsentDefaults = DENIED) -> FirstPartyCookies:
    return FirstPartyCookies(CookiesSection.model_validate(section or BOTH), ConsentPolicy(defaults))


def hit(query: str, cookie: str = "", host: str = "gtm.shop.example") -> tuple[RawRequest, list[Event]]:
    raw = RawRequest("GET", "/g/collect", query, {"host": host, "cookie": cookie}, b"", "203.0.113.7", RECEIVED_AT)
    return raw, ga4_client.parse(raw, ga4_client.Config(type="ga4")).events


def cookies(headers: tuple[str, ...]) -> dict[str, tuple[str, list[str]]]:
    """Set-Cookie values by name: (value, attributes)."""
    out = {}
    for header in headers:
        first, *attributes = header.split("; ")
        name, _, value = first.partition("=")
        out[name] = (value, attributes)
    return out


GRANTED_HIT = "v=2&tid=G-ABC123XYZ&cid=1234567890.1732360000&en=page_view&gcs=G111&gcd=13r3r3r2r5l1"
DENIED_HIT = "v=2&tid=G-ABC123XYZ&cid=987654321.1732360001&en=page_view&gcs=G100&gcd=13p3p3p2p5l1"
FLAGS = ["Max-Age=34560000", "Path=/", "Domain=shop.example", "Secure", "SameSite=Lax"]


# -- FPID ----------------------------------------------------------------------------------------

def test_fpid_keeps_the_javascript_id_of_a_visitor_who_has_one() -> None:
    raw, events = hit(GRANTED_HIT, cookie="_ga=GA1.2.1234567890.1732360000")

    set_cookies = cookies(jar(BOTH | {"domain": "shop.example"}).apply(raw, events))

    assert set_cookies["FPID"] == ("FPID2.2.1234567890.1732360000", [*FLAGS, "HttpOnly"])
    assert events[0].client_id == "1234567890.1732360000" and "x-ga-js_client_id" not in events[0].extra


def test_a_new_fpid_is_random_and_becomes_the_client_id() -> None:
    raw, events = hit(GRANTED_HIT)

    value, attributes = cookies(jar({"fpid": {"enabled": True, "migrate_from_ga": False}}).apply(raw, events))["FPID"]

    assert re.fullmatch(r"FPID2\.3\.[A-Za-z0-9%]{44,132}\.1795168800", value)
    assert attributes == ["Max-Age=34560000", "Path=/", "Secure", "SameSite=Lax", "HttpOnly"]
    assert events[0].client_id.endswith(".1795168800") and len(events[0].client_id) == 55
    assert events[0].extra["x-ga-js_client_id"] == "1234567890.1732360000"  # sGTM's key for the page's own id


def test_an_fpid_set_by_sgtm_is_read_and_kept() -> None:
    raw, events = hit(GRANTED_HIT, cookie="FPID=FPID2.2.2vwfEqQnm1fbTyLngcbupbCN7jTzwZsEQcaBdDulNzI%3D.1775537645")

    value, _ = cookies(jar().apply(raw, events))["FPID"]

    assert value == "FPID2.2.2vwfEqQnm1fbTyLngcbupbCN7jTzwZsEQcaBdDulNzI%3D.1775537645"
    assert events[0].client_id == "2vwfEqQnm1fbTyLngcbupbCN7jTzwZsEQcaBdDulNzI=.1775537645"


def test_a_denial_expires_fpid_and_leaves_the_pages_own_id() -> None:
    raw, events = hit(DENIED_HIT, cookie="FPID=FPID2.2.abc.1775537645; _fbp=fb.1.1775537646211.1947283501")

    set_cookies = cookies(jar(BOTH | {"domain": "shop.example"}).apply(raw, events))

    assert set_cookies == {
        "FPID": ("", ["Max-Age=0", "Path=/", "Domain=shop.example", "Secure", "SameSite=Lax", "HttpOnly"]),
        "_fbp": ("", ["Max-Age=0", "Path=/", "Domain=shop.example", "Secure", "SameSite=Lax"]),
    }
    assert events[0].client_id == "987654321.1732360001"


@pytest.mark.parametrize(("defaults", "set_or_not"), [
    pytest.param(GRANTED, {"FPID", "_fbp"}, id="default-granted"),
    pytest.param(DENIED, set(), id="default-denied"),
])
def test_a_hit_without_consent_signals_takes_the_containers_default(defaults: ConsentDefaults, set_or_not: set[str]) -> None:
    raw, events = hit("v=2&tid=G-ABC123XYZ&cid=1.2&en=page_view")

    assert set(cookies(jar(defaults=defaults).apply(raw, events))) == set_or_not


# -- _fbp and _fbc --------------------------------------------------------------------------------

def test_fbp_and_fbc_are_made_with_ad_storage_granted_fbc_from_the_page_urls_fbclid() -> None:
    raw, events = hit(GRANTED_HIT + "&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR-test-click")

    set_cookies = cookies(jar(BOTH | {"domain": "shop.example"}).apply(raw, events))

    assert set_cookies["_fbc"] == (f"fb.1.{MILLIS}.IwAR-test-click", FLAGS)
    assert re.fullmatch(rf"fb\.1\.{MILLIS}\.\d+", set_cookies["_fbp"][0]) and set_cookies["_fbp"][1] == FLAGS
    assert (events[0].fbc, events[0].fbp) == (set_cookies["_fbc"][0], set_cookies["_fbp"][0])


def test_cookies_already_there_are_kept_and_renewed_and_another_fbclid_replaces_fbc() -> None:
    kept = "_fbp=fb.1.1775537646211.1947283501; _fbc=fb.1.1775537646211.IwAR-old"
    raw, events = hit(GRANTED_HIT + "&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR-new", cookie=kept)

    set_cookies = cookies(jar().apply(raw, events))

    assert (set_cookies["_fbp"][0], set_cookies["_fbc"][0]) == ("fb.1.1775537646211.1947283501", f"fb.2.{MILLIS}.IwAR-new")


def test_without_the_meta_cookies_enabled_nothing_of_meta_is_set() -> None:
    raw, events = hit(GRANTED_HIT + "&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3Dx")

    assert set(cookies(jar({"fpid": {"enabled": True}}).apply(raw, events))) == {"FPID"}


@pytest.mark.parametrize(("host", "index"), [("com", 0), ("shop.example", 1), ("www.shop.example", 2),
                                             ("localhost", 0), ("127.0.0.1", 0), ("[::1]", 0)])
def test_the_subdomain_index_is_metas(host: str, index: int) -> None:
    assert subdomain_index(host) == index


# -- Meta's own Parameter Builder agrees ------------------------------------------------------------

CASES = [
    pytest.param("https://shop.example/?fbclid=IwAR-1", {}, id="new-visitor-from-an-ad"),
    pytest.param("https://shop.example/", {}, id="new-visitor"),
    pytest.param("https://shop.example/?fbclid=IwAR-1", {"_fbc": "fb.1.1775537646211.IwAR-1"}, id="same-click-again"),
    pytest.param("https://shop.example/?fbclid=IwAR-2", {"_fbc": "fb.1.1775537646211.IwAR-1"}, id="another-click"),
    pytest.param("https://shop.example/", {"_fbp": "fb.1.1775537646211.1947283501"}, id="returning-visitor"),
    pytest.param("https://shop.example/", {"_fbp": "fb.1.1775537646211.1947283501.AQICAQMC"}, id="builder-cookie"),
    pytest.param("https://shop.example/", {"_fbp": "fb.1.1775537646211"}, id="truncated-cookie"),
    pytest.param("https://shop.example/", {"_fbp": "fb.1.1775537646211.1947283501.ABC"}, id="bad-appendix"),
]


@pytest.mark.parametrize(("url", "existing"), CASES)
def test_our_fbp_and_fbc_agree_with_metas_parameter_builder(url: str, existing: dict[str, str]) -> None:
    from capi_param_builder import ParamBuilder

    builder = ParamBuilder(["shop.example"])
    builder.process_request("gtm.shop.example", parse_qs(urlsplit(url).query), dict(existing), None)
    theirs = {"_fbp": builder.get_fbp(), "_fbc": builder.get_fbc()}
    cookie = "; ".join(f"{k}={v}" for k, v in existing.items())
    raw, events = hit(f"{GRANTED_HIT}&dl={url.replace('?', '%3F').replace('=', '%3D')}", cookie=cookie)

    ours = {name: value for name, (value, _) in cookies(jar(BOTH | {"domain": "shop.example"}).apply(raw, events)).items()}

    for name in ("_fbp", "_fbc"):
        if theirs[name] is None:
            assert name not in ours
            continue
        mine, builders = ours[name].split("."), theirs[name].split(".")
        # The builder appends its SDK's version to what it writes (ours does not claim to be it), reads its
        # own clock for a new cookie's time and its own random source for a new _fbp's number.
        assert mine[:2] == builders[:2]  # fb and the subdomain index
        if name in existing and existing[name].startswith(".".join(builders[:4])):
            assert mine[:4] == builders[:4]  # an existing cookie both keep
        else:
            assert int(mine[2]) == MILLIS  # a new one, made now
            if name == "_fbc":
                assert mine[3] == builders[3]  # from the same click id
        assert valid_fb_cookie(ours[name]) and valid_fb_cookie(theirs[name])


# -- the config and the answer ----------------------------------------------------------------------

def test_the_section_is_off_unless_enabled_and_refuses_what_it_does_not_know() -> None:
    assert FirstPartyCookies(CookiesSection(), ConsentPolicy(GRANTED)).clients == frozenset()
    with pytest.raises(ValidationError):
        CookiesSection.model_validate({"domain": "shop.example;evil", "fpid": {"lifetime": 1}})


def test_the_collection_answer_carries_one_set_cookie_header_each(make_client) -> None:
    client = make_client("""
        cookies:
          fpid: {enabled: true}
          meta: {enabled: true}
        clients:
          - type: ga4
        """)
    query = (GRANTED_HIT + "&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR-x").encode()

    status, set_cookies = client.portal.call(_answer, client, query)

    assert status == 204
    assert sorted(h.split("=", 1)[0] for h in set_cookies) == ["FPID", "_fbc", "_fbp"]


async def _answer(client: Any, query: bytes) -> tuple[int, list[str]]:
    """Every Set-Cookie header of one answer (the helper's dict keeps one per name)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/g/collect", "raw_path": b"/g/collect", "root_path": "", "query_string": query,
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
             "state": {}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await client.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], [v.decode("latin-1") for k, v in start["headers"] if k == b"set-cookie"]


NO_SIGNALS_HIT = b"v=2&tid=G-ABC123XYZ&cid=1234567890.1732360000&en=page_view&dl=https%3A%2F%2Fshop.example%2F%3Ffbclid%3DIwAR-x"


@pytest.mark.parametrize(("container_default", "client_default", "expected"), [
    # The container grants, the ga4 client's own default denies: a hit without signals is the client's, so the
    # pipeline treats it as denied, and no identifier cookie may be set for it either.
    ("{ad_storage: granted, analytics_storage: granted, ad_user_data: granted, ad_personalization: granted}",
     "{ad_storage: denied, analytics_storage: denied}", []),
    # The container denies (the sample's default), the client's own default grants: the cookies follow the client.
    ("{}", "{ad_storage: granted, analytics_storage: granted}", ["FPID", "_fbc", "_fbp"]),
], ids=["client-denies", "client-grants"])
def test_the_ga4_clients_own_consent_default_decides_the_cookies_not_the_containers(
    make_client, container_default: str, client_default: str, expected: list[str],
) -> None:
    client = make_client(f"""
        consent:
          default: {container_default}
        cookies:
          fpid: {{enabled: true}}
          meta: {{enabled: true}}
        clients:
          - type: ga4
            consent:
              default: {client_default}
        """)

    status, set_cookies = client.portal.call(_answer, client, NO_SIGNALS_HIT)

    assert status == 204
    assert sorted(h.split("=", 1)[0] for h in set_cookies) == expected


def test_a_host_header_longer_than_a_dns_name_is_answered_but_never_remembered() -> None:
    # The Host header is the client's to choose: the per-host memo must not become a store for its junk.
    from gateway import first_party

    long_host = "a" * 300 + ".shop.example"
    assert first_party._host_numbers(long_host) == (3, 2)
    assert long_host not in first_party._HOST_MEMO
    assert first_party._host_numbers("gtm.shop.example") == (3, 2)
    assert "gtm.shop.example" in first_party._HOST_MEMO
