"""Meta's normalisation and hashing: the "meta" vectors, Meta's documentation, and Meta's own SDK normaliser.

The SDK (``facebook_business.adobjects.serverside.normalize.Normalize``) is
Meta's code; generated inputs are compared with it wherever its rules and
Meta's documentation agree. Where they disagree the documentation wins, and
the cases below say so (see also the docstring of ``gateway.identity.meta``).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import date, datetime, timezone
from typing import Any

import phonenumbers
import pytest
from facebook_business.adobjects.serverside.normalize import Normalize
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.event import Address, UserData
from gateway.identity import clean, is_placeholder_email, sha256_hex
from gateway.identity import meta
from tests.conftest import load_fixture

VECTORS = load_fixture("hashing.json")["meta"]
NORMALISE = {
    "em": meta.email, "ph": meta.phone, "fn": meta.name, "ln": meta.name, "ge": meta.gender, "db": meta.date_of_birth,
    "ct": meta.city, "st": meta.state, "zp": meta.zip_code, "country": meta.country_code, "external_id": meta.external_id,
}
EXAMPLES = settings(max_examples=150, deadline=None)


def sdk(field: str, raw: str) -> str:
    """Meta's SDK: the SHA-256 hex it sends for this value."""
    return Normalize.normalize_field(field, raw)


# -- the vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", [pytest.param(v, id=f"{i}-{v['field']}") for i, v in enumerate(VECTORS)])
def test_every_meta_vector_normalises_and_hashes_as_expected_and_as_meta_sdk_does(vector: dict[str, Any]) -> None:
    field, raw = vector["field"], vector["raw"]
    assert NORMALISE[field](raw.strip()) == vector["normalized"]
    assert meta.hashed(field, raw) == vector["sha256"] == sha256_hex(vector["normalized"])
    assert sdk(field, raw) == vector["sha256"]


def test_every_hashed_parameter_has_a_vector() -> None:
    assert {v["field"] for v in VECTORS} == set(meta.HASHED_FIELDS)


def test_the_examples_of_meta_documentation_hash_as_documented() -> None:
    # https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
    assert [
        meta.hashed("em", "John_Smith@gmail.com"),
        meta.hashed("ph", "(650)555-1212", region="US"),
        meta.hashed("fn", "Mary"),
        meta.hashed("fn", "정"),
        meta.hashed("fn", "Valéry"),
        meta.hashed("db", "2/16/1997"),
        meta.hashed("country", "United States"),
    ] == [
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
        "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
        "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14",
        "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c",
        "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c",
        "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
    ]


# -- generated inputs against Meta's SDK --------------------------------------------------


@st.composite
def messy_case(draw: st.DrawFn, text: str) -> str:
    """The text with random letters upper-cased and blanks around it."""
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    body = "".join(c.upper() if flip else c for c, flip in zip(text, flips))
    return draw(st.sampled_from(["", " ", "  ", "\t"])) + body + draw(st.sampled_from(["", " ", "\n"]))


@EXAMPLES
@given(st.emails().flatmap(messy_case))
def test_emails_hash_as_meta_sdk_hashes_them(raw: str) -> None:
    assume(not is_placeholder_email(raw.strip()))  # ours are dropped (noemail@, test@example.com); the SDK hashes them
    assert meta.hashed("em", raw) == sdk("em", raw)


_REGIONS = sorted(r for r in phonenumbers.SUPPORTED_REGIONS if phonenumbers.example_number(r) is not None)


@st.composite
def international_phone(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """An example number of some region written with its country code, its region, national form and E.164 form."""
    region = draw(st.sampled_from(_REGIONS))
    number = phonenumbers.example_number(region)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    written = draw(st.sampled_from([
        e164,
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        "00" + e164[1:],
        "+" + "-".join(e164[1:][i:i + 3] for i in range(0, len(e164) - 1, 3)),
        f"+{number.country_code} ({e164[1 + len(str(number.country_code)):]})",
    ]))
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return written, region, national, e164


@EXAMPLES
@given(international_phone())
def test_phones_with_a_country_code_hash_as_meta_sdk_hashes_them(case: tuple[str, str, str, str]) -> None:
    written = case[0]
    try:
        expected = sdk("ph", written)
    except ValueError:  # the SDK refuses some valid numbers (fewer than 7 digits after the country code)
        assume(False)
    assert meta.hashed("ph", written) == expected
    assert meta.hashed("ph", written, region="US") == expected  # a written country code wins over the region


@EXAMPLES
@given(international_phone())
def test_a_national_phone_gets_the_country_code_of_its_region_as_meta_sdk_would_want(
    case: tuple[str, str, str, str],
) -> None:
    _, region, national, e164 = case
    try:
        expected = sdk("ph", e164)
    except ValueError:
        assume(False)
    result = meta.hashed("ph", national, region=region)
    assume(result is not None)  # a few regions' national forms need a carrier prefix phonenumbers cannot add
    assert result == expected


_NAME_LETTERS = st.characters(categories=["Lu", "Ll", "Lo"], exclude_characters="\u0130")


@EXAMPLES
@given(st.text(_NAME_LETTERS, min_size=1, max_size=12), st.text(_NAME_LETTERS, max_size=12), st.sampled_from(["fn", "ln"]))
def test_names_without_punctuation_hash_as_meta_sdk_hashes_them(first: str, second: str, field: str) -> None:
    raw = f" {first} {second} " if second else first
    assume(clean(raw) is not None)
    assert meta.hashed(field, raw) == sdk(field, raw)


_PLACE = st.text(st.one_of(_NAME_LETTERS, st.sampled_from(list("0123456789 .-()"))), min_size=1, max_size=20)


@EXAMPLES
@given(_PLACE)
def test_cities_hash_as_meta_sdk_hashes_them(raw: str) -> None:
    assume(clean(raw) is not None and meta.city(raw.strip()) is not None)
    assert meta.hashed("ct", raw) == sdk("ct", raw)


@EXAMPLES
@given(_PLACE, st.sampled_from(["de", "fr", "br", "in"]))
def test_states_outside_the_us_hash_as_meta_sdk_hashes_them(raw: str, country: str) -> None:
    assume(clean(raw) is not None and meta.state(raw.strip(), country) is not None)
    assert meta.hashed("st", raw, country=country) == sdk("st", raw)


@EXAMPLES
@given(st.from_regex(r"\A\d{5}(-\d{4})?\Z"), st.sampled_from(["us", None]))
def test_us_zip_codes_hash_as_meta_sdk_hashes_them(raw: str, country: str | None) -> None:
    assume(clean(raw) is not None)
    assert meta.hashed("zp", raw, country=country) == sdk("zp", raw)


@EXAMPLES
@given(st.from_regex(r"\A[A-Za-z0-9]{1,4}( ?[A-Za-z0-9]{1,4})?\Z"), st.sampled_from(["gb", "fr", "ca", None]))
def test_zip_codes_without_a_dash_hash_as_meta_sdk_hashes_them(raw: str, country: str | None) -> None:
    assume(clean(raw) is not None and not (country is None and raw.isdigit()))
    assert meta.hashed("zp", raw, country=country) == sdk("zp", raw)


@EXAMPLES
@given(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)).flatmap(messy_case))
def test_country_codes_hash_as_meta_sdk_hashes_them(raw: str) -> None:
    try:
        expected = sdk("country", raw)
    except TypeError:  # pycountry does not know every region phonenumbers knows (AC, TA, XK)
        assume(False)
    assert meta.hashed("country", raw) == expected


@pytest.mark.parametrize("raw", ["f", "m", "F", " M ", "m\n"])
def test_genders_hash_as_meta_sdk_hashes_them(raw: str) -> None:
    assert meta.hashed("ge", raw) == sdk("ge", raw)


@EXAMPLES
@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2026, 12, 31)))
def test_dates_of_birth_hash_as_meta_sdk_hashes_them(day: date) -> None:
    raw = day.strftime("%Y%m%d")
    assert meta.hashed("db", raw) == sdk("db", raw)


@EXAMPLES
@given(st.text(st.sampled_from("abcdefXYZ0123456789-_.@:"), min_size=1, max_size=40).flatmap(messy_case))
def test_external_ids_hash_as_meta_sdk_normaliser_hashes_them(raw: str) -> None:
    text = raw.strip().lower()
    assume(clean(raw) is not None and not (len(text) == 32 and all(c in "0123456789abcdef" for c in text)))
    assert meta.hashed("external_id", raw) == sdk("external_id", raw)


# -- where we follow Meta's documentation rather than its SDK -----------------------------


@pytest.mark.parametrize(
    ("field", "raw", "ours", "sdk_normalised", "kwargs"),
    [
        pytest.param("fn", "O'Brien", "obrien", "o'brien", {}, id="name-punctuation"),
        pytest.param("ln", "Smith-Jones", "smithjones", "smith-jones", {}, id="name-hyphen"),
        pytest.param("ct", "L'Aquila", "laquila", "l'aquila", {}, id="city-apostrophe"),
        pytest.param("st", "California", "ca", "california", {}, id="us-state-name"),
        pytest.param("zp", "12345-678", "12345678", "12345", {"country": "br"}, id="zip-with-dash-outside-the-us"),
        pytest.param("zp", "940251234", "94025", "940251234", {"country": "us"}, id="us-zip-plus-4-without-dash"),
    ],
)
def test_where_meta_documentation_and_sdk_disagree_we_follow_the_documentation(
    field: str, raw: str, ours: str, sdk_normalised: str, kwargs: dict[str, Any]
) -> None:
    assert (meta.hashed(field, raw, **kwargs), sdk(field, raw)) == (sha256_hex(ours), sha256_hex(sdk_normalised))


def test_a_country_written_out_becomes_its_code_where_the_sdk_refuses_it() -> None:
    with pytest.raises(TypeError):
        sdk("country", "United States")
    assert [meta.country_code(c) for c in ["United States", "Deutschland", "UK", "usa", "  Fr "]] == ["us", "de", "gb", "us", "fr"]


def test_namibia_is_a_country_not_a_placeholder() -> None:
    assert (meta.hashed("country", "NA"), meta.customer_information(UserData(address=Address(country="na")))) == (
        sha256_hex("na"), {"country": [sha256_hex("na")]})


def test_an_unknown_country_is_dropped_not_hashed() -> None:
    assert [meta.hashed("country", c) for c in ["xx", "Atlantis", "u"]] == [None, None, None]


# -- our own rules, documented --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        pytest.param("+1 (650) 555-1212", None, "16505551212", id="plus"),
        pytest.param("0049 170 1234567", "US", "491701234567", id="double-zero"),
        pytest.param("(0170) 1234567", "DE", "491701234567", id="national-with-region"),
        pytest.param("16505551212", None, "16505551212", id="digits-already-with-country-code"),
        pytest.param("02 1234 5678", "IT", "390212345678", id="italian-leading-zero-kept"),
        # An extension used to be cut off and the switchboard's number kept: its digits are not the ones typed,
        # and a shared line is no one's identifier, so the number is now dropped (issue 14).
        pytest.param("+44 20 7946 0958 ext. 12", None, None, id="number-with-extension-dropped"),
    ],
)
def test_phones_are_digits_with_country_code_and_no_plus(raw: str, region: str | None, expected: str | None) -> None:
    assert meta.phone(raw, region) == expected


@pytest.mark.parametrize(("raw", "region"), [("12", "DE"), ("no phone", "US"), ("+999 1234", None), ("", None)])
def test_phones_that_cannot_be_numbers_are_dropped(raw: str, region: str | None) -> None:
    assert meta.hashed("ph", raw, region=region) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1997-02-16", "19970216"), ("1997/2/16", "19970216"), ("1997-02-16T10:00:00+02:00", "19970216"),
     ("19970216", "19970216"), ("2/16/1997", "19970216"), ("16/02/1997", "19970216"), ("16.02.1997", "19970216"),
     ("1997-02-30", None), ("1899-12-31", None), ("199702", None), ("sometime", None), ("1997216", None)],
)
def test_dates_of_birth_become_yyyymmdd_or_are_dropped(raw: str, expected: str | None) -> None:
    assert meta.date_of_birth(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [("Female", "f"), ("MALE", "m"), ("w", None), ("x", None), ("diverse", None)])
def test_genders_are_an_initial_or_dropped(raw: str, expected: str | None) -> None:
    assert meta.gender(raw) == expected


@pytest.mark.parametrize(
    ("field", "raw"),
    [("em", "not-an-email"), ("em", "two@@example.com"), ("em", "jane doe@example.com"), ("fn", "..."),
     ("ct", "123"), ("em", "N/A"), ("fn", "null"), ("external_id", "   ")],
)
def test_blank_placeholder_and_malformed_values_are_dropped_not_hashed(field: str, raw: str) -> None:
    assert meta.hashed(field, raw) is None


def test_an_already_hashed_value_passes_through_lowercased_never_hashed_twice() -> None:
    digest = sha256_hex("jane@example.com")
    assert [meta.hashed(f, digest.upper()) for f in ("em", "ph", "external_id", "zp")] == [digest] * 4


def test_email_keeps_dots_and_plus_suffix_on_every_domain_unlike_google() -> None:
    assert [meta.email(e) for e in [" J.Doe+x@GMail.com ", "a.b@example.com"]] == ["j.doe+x@gmail.com", "a.b@example.com"]


def test_click_id_is_fb_1_then_the_time_in_milliseconds_then_the_fbclid_unchanged() -> None:
    seen = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    assert [meta.click_id("IwAR2xYz_AbC", seen), meta.click_id("has space", seen), meta.click_id("", seen)] == [
        "fb.1.1772366400250.IwAR2xYz_AbC", None, None,
    ]


# -- UserData -> Meta's user_data ----------------------------------------------------------


def test_customer_information_is_every_hashed_parameter_as_a_list() -> None:
    user_data = UserData(
        email_address=" Jane.Roe+News@Example.COM ", phone_number="(650) 555-1212", gender="female",
        date_of_birth="1990-05-21", external_id="User-42",
        address=Address(first_name=" Jane ", last_name="Müller", street="1 Main St", city="San Francisco",
                        region="California", postal_code="94025-1234", country="US"),
    )
    assert meta.customer_information(user_data) == {
        "em": [sha256_hex("jane.roe+news@example.com")],
        "ph": [sha256_hex("16505551212")],
        "fn": [sha256_hex("jane")],
        "ln": [sha256_hex("müller")],
        "db": [sha256_hex("19900521")],
        "ge": [sha256_hex("f")],
        "ct": [sha256_hex("sanfrancisco")],
        "st": [sha256_hex("ca")],
        "zp": [sha256_hex("94025")],
        "country": [sha256_hex("us")],
        "external_id": [sha256_hex("user-42")],
    }


def test_the_address_country_is_the_phone_region_before_the_default_region() -> None:
    german = UserData(phone_number="0170 1234567", address=Address(country="DE"))
    without_country = UserData(phone_number="0170 1234567")
    assert meta.customer_information(german, default_region="US")["ph"] == [sha256_hex("491701234567")]
    assert meta.customer_information(without_country, default_region="DE")["ph"] == [sha256_hex("491701234567")]


def test_prehashed_values_pass_through_beside_the_raw_ones_and_base64url_becomes_hex() -> None:
    other = hashlib.sha256(b"janeroe@gmail.com").digest()  # hashed elsewhere, by Google's rules
    user_data = UserData(
        email_address="jane.roe@gmail.com",
        sha256_email_address=base64.urlsafe_b64encode(other).decode().rstrip("="),
        sha256_phone_number=sha256_hex("+16505551212").upper(),
        address=Address(sha256_first_name=sha256_hex("jane")),
    )
    assert meta.customer_information(user_data) == {
        "em": [sha256_hex("jane.roe@gmail.com"), other.hex()],
        "ph": [sha256_hex("+16505551212")],
        "fn": [sha256_hex("jane")],
    }


def test_the_same_value_raw_and_prehashed_is_sent_once_and_garbage_digests_are_dropped() -> None:
    user_data = UserData(email_address="a@example.com", sha256_email_address=sha256_hex("a@example.com"),
                         sha256_phone_number="not-a-digest")
    assert meta.customer_information(user_data) == {"em": [sha256_hex("a@example.com")]}


def test_no_user_data_is_no_customer_information() -> None:
    assert (meta.customer_information(None), meta.customer_information(UserData())) == ({}, {})


_TEXT = st.one_of(st.none(), st.sampled_from(["", " ", "Alex", "Doe", "Valéry", "Berlin", "10115", "DE", "na",
                                               "alex.doe@gmail.com", "+49 170 1234567", "0170 1234567",
                                               "1990-04-23", "f", "X1", sha256_hex("a@example.com")]))


@settings(max_examples=300, deadline=None)
@given(email=_TEXT, phone=_TEXT, sha_email=_TEXT, sha_phone=_TEXT, first=_TEXT, last=_TEXT, sha_first=_TEXT,
       city=_TEXT, country=_TEXT, birth=_TEXT, with_address=st.booleans(), region=st.sampled_from([None, "DE", "US"]))
def test_contact_information_is_customer_informations_email_phone_and_names(
    email, phone, sha_email, sha_phone, first, last, sha_first, city, country, birth, with_address, region,
) -> None:
    """What the ledger keeps of a purchase: the same digests, in the same order, as the Meta tag sends."""
    address = Address(first_name=first, last_name=last, sha256_first_name=sha_first, city=city,
                      country=country) if with_address else None
    user_data = UserData(email_address=email, phone_number=phone, sha256_email_address=sha_email,
                         sha256_phone_number=sha_phone, date_of_birth=birth, address=address)
    whole = meta.customer_information(user_data, region)
    assert meta.contact_information(user_data, region) == {k: v for k, v in whole.items() if k in ("em", "ph", "fn", "ln")}
    assert meta.contact_information(None) == {}
