"""Rules both vendors share (issue 14): phones are read, never rewritten; placeholders are for emails
and phones, not names; countries are ISO codes from pycountry's names.

The peers' vectors for the same rules are in test_peer_vectors.py.
"""

from __future__ import annotations

import phonenumbers
import pycountry
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.event import Address, UserData
from gateway.identity import google, meta, sha256_hex

EXAMPLES = settings(max_examples=300, deadline=None)

_SEPARATORS = st.sampled_from(["", " ", "-", ".", "(", ")", " - "])


@st.composite
def typed_number(draw: st.DrawFn) -> tuple[str, str]:
    """Digits as someone might type them, with separators; and the digits alone."""
    digits = draw(st.text("0123456789", min_size=4, max_size=15))
    pieces = []
    for digit in digits:
        pieces.append(draw(_SEPARATORS) + digit)
    return "".join(pieces).strip(), digits


def _valid(e164_text: str) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(e164_text, None))


# -- phones: dropped, never rewritten ------------------------------------------------------


@EXAMPLES
@given(typed_number(), st.sampled_from(["", "+", "00"]))
@example(("9000000000", "9000000000"), "")  # RudderStack's vector: read as Turkish, one digit was lost
@example(("+39 000 1234567", "390001234567"), "")
def test_a_meta_phone_is_the_typed_digits_or_nothing(case: tuple[str, str], prefix: str) -> None:
    text, digits = case
    result = meta.phone(prefix + text)
    assert result is None or (result == digits and _valid("+" + result)), (prefix + text, result)


@EXAMPLES
@given(typed_number(), st.sampled_from(["+", "00"]), st.sampled_from([None, "US", "DE", "GB", "IN"]))
@example(("90 000 000 00", "9000000000"), "+", "US")
def test_a_google_phone_written_with_its_country_code_is_those_digits_or_nothing(
    case: tuple[str, str], prefix: str, region: str | None,
) -> None:
    text, digits = case
    result = google.normalize_phone(prefix + text, region)
    assert result is None or (result == "+" + digits and _valid(result)), (prefix + text, result)


@EXAMPLES
@given(typed_number(), st.sampled_from(["US", "DE", "GB", "FR", "IT", "IN", "BR", "JP"]))
def test_a_national_phone_keeps_every_typed_digit_after_the_trunk_prefix(case: tuple[str, str], region: str) -> None:
    """A national number gains a country code and may lose its trunk prefix (``0``, ``1``): nothing else changes."""
    text, digits = case
    result = google.normalize_phone(text, region)
    if result is None:
        return
    number = phonenumbers.parse(result, None)
    national = phonenumbers.national_significant_number(number)
    trunk = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix or ""
    assert digits in {str(number.country_code) + national, national, trunk + national} or (
        phonenumbers.normalize_digits_only(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
        == digits
    ), (text, result)
    assert meta.phone(text, region) == result[1:]


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        pytest.param("9000000000", None, id="turkish-reading-loses-a-digit"),
        pytest.param("9000000000", "US", id="us-900-not-valid"),
        pytest.param("+44 20 7946 0958 ext. 12", None, id="extension"),
        pytest.param("1-800-FLOWERS", "US", id="letters-dialled"),
        pytest.param("+1 (650) 123-4567", None, id="possible-but-not-valid"),
        pytest.param("011 49 170 1234567", "US", id="us-exit-code-is-not-plus-or-00"),
    ],
)
def test_a_phone_that_would_be_rewritten_or_is_not_valid_is_dropped_by_both_vendors(raw: str, region: str | None) -> None:
    assert (meta.hashed("ph", raw, region=region), google.hash_phone(raw, region)) == (None, None)


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [("+49 (0)170 1234567", None, None), ("0170/1234567", "DE", "+491701234567"), ("+1.650.555.1212", None, "+16505551212"),
     ("0044 20 7946 0958", "DE", "+442079460958"), ("(650) 555-1212", "US", "+16505551212"),
     ("1 650 555 1212", "US", "+16505551212"), ("02 1234 5678", "IT", "+390212345678")],
)
def test_formatting_and_a_trunk_prefix_are_not_rewriting(raw: str, region: str | None, e164: str | None) -> None:
    # "+49 (0)170": the bracketed trunk zero is a digit that is not part of the number; dropped, not guessed.
    assert (google.normalize_phone(raw, region), meta.phone(raw, region)) == (e164, e164[1:] if e164 else None)


# -- placeholders: emails and phones, not names ---------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["test@example.com", " TEST@Example.org ", "test+1@example.com", "asdf@test.com", "email@email.com",
     "noemail@shop.de", "No-Reply@shop.example", "none@gmail.com", "dummy@mail.test", "unknown@company.com"],
)
def test_placeholder_emails_are_dropped_by_both_vendors(raw: str) -> None:
    assert (meta.hashed("em", raw), google.hash_email(raw)) == (None, None)


@pytest.mark.parametrize("raw", ["test@gmail.com", "jane.doe@example.com", "tester.smith@example.com", "testa@test.it"])
def test_real_looking_addresses_on_any_domain_are_kept(raw: str) -> None:
    assert meta.hashed("em", raw) == sha256_hex(raw) and google.hash_email(raw) is not None


@pytest.mark.parametrize(("raw", "region"), [("0000000000", "US"), ("+1 555 555 5555", None), ("+49 00000000", None),
                                             ("1111111111", "US"), ("+44 7777 777777", None)])
def test_placeholder_phones_are_dropped_by_both_vendors(raw: str, region: str | None) -> None:
    assert (meta.hashed("ph", raw, region=region), google.hash_phone(raw, region)) == (None, None)


@pytest.mark.parametrize("raw", ["Test", "TEST", " test ", "Unknown", "None Such"])
def test_a_name_that_reads_like_a_placeholder_is_a_name(raw: str) -> None:
    expected = sha256_hex(raw.strip().lower())
    assert [meta.hashed("fn", raw), meta.hashed("ln", raw), google.hash_name(raw)] == [expected] * 3


@pytest.mark.parametrize("raw", ["null", "N/A", "undefined", "  ", "-", "0", "42"])
def test_a_blank_name_or_one_without_a_letter_is_dropped(raw: str) -> None:
    assert [meta.hashed("fn", raw), meta.hashed("ln", raw), google.hash_name(raw)] == [None] * 3


def test_a_customer_called_test_reaches_meta_with_first_and_last_name() -> None:
    user_data = UserData(address=Address(first_name="Test", last_name="Test", country="Great Britain"))
    assert meta.customer_information(user_data) == {
        "fn": [sha256_hex("test")], "ln": [sha256_hex("test")], "country": [sha256_hex("gb")],
    }


# -- countries: ISO codes through pycountry --------------------------------------------------


def _names(country: object) -> list[str]:
    return [n for attr in ("name", "official_name", "common_name") if (n := getattr(country, attr, None))]


@pytest.mark.parametrize("country", [pytest.param(c, id=c.alpha_2) for c in pycountry.countries])
def test_every_country_is_read_from_its_codes_and_each_of_its_english_names(country: object) -> None:
    code = country.alpha_2  # type: ignore[attr-defined]
    written = [code, code.lower(), country.alpha_3, *_names(country)]  # type: ignore[attr-defined]
    assert [google.normalize_country(w) for w in written] == [code] * len(written)
    assert [meta.country_code(w) for w in written] == [code.lower()] * len(written)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("United States of America", "us"), ("Great Britain", "gb"), ("GREAT BRITAIN", "gb"), ("United Kingdom", "gb"),
     ("UK", "gb"), ("England", "gb"), ("Deutschland", "de"), ("Allemagne", "de"), ("Alemania", "de"),
     ("Cote d'Ivoire", "ci"), ("Russia", "ru"), ("Northern Ireland", "gb"), ("South Korea", "kr"),
     ("XK", "xk"), ("Namibia", "na")],
)
def test_country_names_in_any_language_pycountry_knows_become_their_code(raw: str, expected: str) -> None:
    assert (meta.country_code(raw), google.normalize_country(raw)) == (expected, expected.upper())


@pytest.mark.parametrize(
    "raw",
    ["Korea", "America", "Guinea Bissau Papua", "Ger", "California", "New South Wales", "Bavaria", "Atlantis", "xx", "u"],
)
def test_a_name_that_is_no_single_country_is_dropped_not_guessed(raw: str) -> None:
    assert (meta.hashed("country", raw), google.normalize_country(raw)) == (None, None)
