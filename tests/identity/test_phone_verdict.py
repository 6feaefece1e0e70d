"""``phones.valid_with_country_code``, ``phones.is_valid``, ``digits_of`` and ``e164`` give ``phonenumbers``' own answers.

``valid_with_country_code`` rules numbers out from ``phonenumbers``'
metadata before calling its ``parse`` and ``is_valid_number``
(``phones._ruled_out``), because an order number checked for a phone number
costs up to 700k instructions the long way; ``is_valid`` decides a parsed
number's validity from the same metadata, and ``digits_of`` and ``e164``
replace ``normalize_digits_only`` and ``format_number``. These tests hold
each short way to the long one: for every region's example numbers of every
type, the same written after the region's national prefix, the same with a
digit changed, added or dropped, and random digits."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.identity import phones
from gateway.personal import digits_read_as_phone


def reference(digits: str) -> bool:
    """What ``phonenumbers`` says, asked the long way."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + digits, None))
    except phonenumbers.NumberParseException:
        return False


def example_digits() -> list[str]:
    """Every region's example numbers (each type), as calling code and national number; then the same after
    the region's national prefix, and with the last digit changed."""
    out: set[str] = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS) + ["001"]:
        codes = [phonenumbers.country_code_for_region(region)] if region != "001" else \
            sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
        for code in codes:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
            if metadata is None:
                continue
            for kind in phonenumbers.PhoneNumberType.values():
                desc = phonenumbers.phonenumberutil._number_desc_by_type(metadata, kind)
                if desc is None or not desc.example_number:
                    continue
                national = desc.example_number
                out.add(f"{code}{national}")
                out.add(f"{code}{national[:-1]}{(int(national[-1]) + 1) % 10}")
                if metadata.national_prefix:
                    out.add(f"{code}{metadata.national_prefix}{national}")
    return sorted(out)


EXAMPLES = example_digits()


def test_the_examples_cover_every_region_and_hold_valid_and_invalid_numbers() -> None:
    verdicts = [reference(d) for d in EXAMPLES]
    assert len(EXAMPLES) > 2000
    assert 0 < verdicts.count(False) and verdicts.count(True) > 1500


def test_every_regions_example_numbers_get_phonenumbers_own_verdict() -> None:
    assert [d for d in EXAMPLES if phones.valid_with_country_code(d) != reference(d)] == []


@settings(max_examples=3000, deadline=None)
@given(st.from_regex(r"[1-9][0-9]{6,16}", fullmatch=True))
def test_random_digits_get_phonenumbers_own_verdict(digits: str) -> None:
    assert phones.valid_with_country_code(digits) == reference(digits)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["1", "44", "49", "7", "39", "54", "52", "55", "61", "800", "882", "290", "599"]),
       st.from_regex(r"[0-9]{5,13}", fullmatch=True))
def test_digits_behind_calling_codes_with_national_prefixes_and_shared_regions_get_phonenumbers_own_verdict(
    code: str, rest: str,
) -> None:
    digits = code + rest
    assert phones.valid_with_country_code(digits) == reference(digits)


@pytest.mark.parametrize("digits", ["540111512345678", "54111512345678"])
def test_a_number_phonenumbers_rewrites_behind_its_national_prefix_gets_its_verdict(digits: str) -> None:
    """Argentina's ``011 15 ...`` is a mobile number only once ``parse`` rewrites it (``9 11 ...``): neither
    the digits as written nor with the prefix cut off match, so only ``phonenumbers`` itself can say."""
    assert reference(digits) is True
    assert phones.valid_with_country_code(digits) is True


@pytest.mark.parametrize("order_id", ["1000000123", "11000000123", "5000000000123", "4500012345", "9990001234567"])
def test_order_numbers_are_ruled_out_without_phonenumbers_parse(order_id: str) -> None:
    """Order numbers as shops write them: the metadata alone rules each out (the long way is not taken)."""
    assert phones._ruled_out(order_id) is True
    assert reference(order_id) is False


@pytest.mark.parametrize("digits", ["14155550107", "4915123456767", "4155550107", "442012345678"])
def test_phone_numbers_are_still_read_as_phone_numbers(digits: str) -> None:
    assert digits_read_as_phone(digits) is True


def parsed(digits: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None


def mutated_examples() -> list[str]:
    """``EXAMPLES``, each also one digit longer, one shorter and with its national number's first digit changed to
    every other digit: lengths and leading digits the regions' patterns do not all allow."""
    out: set[str] = set(EXAMPLES)
    for digits in EXAMPLES:
        number = parsed(digits)
        if number is None:
            continue
        code = str(number.country_code)
        national = phonenumbers.national_significant_number(number)
        out.update((code + national + "5", code + national[:-1]))
        out.update(code + first + national[1:] for first in "0123456789")
    return sorted(out)


PARSED = [number for number in map(parsed, mutated_examples()) if number is not None]


def test_the_parsed_examples_hold_valid_and_invalid_numbers_of_single_and_shared_calling_codes() -> None:
    valid = [phonenumbers.is_valid_number(n) for n in PARSED]
    assert valid.count(True) > 1500 and valid.count(False) > 1000
    shared = {n.country_code for n in PARSED if len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(n.country_code, ())) > 1}
    assert {1, 7, 44, 262} <= shared
    assert any(n.italian_leading_zero for n in PARSED)


def test_every_parsed_example_gets_phonenumbers_own_validity() -> None:
    """``phones.is_valid`` against ``is_valid_number`` for every region's example numbers, changed and not."""
    assert [phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) for n in PARSED
            if phones.is_valid(n) != phonenumbers.is_valid_number(n)] == []


@settings(max_examples=3000, deadline=None)
@given(st.from_regex(r"[1-9][0-9]{4,16}", fullmatch=True))
def test_random_parsed_digits_get_phonenumbers_own_validity(digits: str) -> None:
    number = parsed(digits)
    if number is not None:
        assert phones.is_valid(number) == phonenumbers.is_valid_number(number)


def test_a_number_with_a_calling_code_phonenumbers_does_not_know_is_not_valid() -> None:
    number = phonenumbers.PhoneNumber(country_code=999, national_number=1234567)
    assert phonenumbers.is_valid_number(number) is False
    assert phones.is_valid(number) is False


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789 +-().#*x/٣٤０９²a\u00a0\n"), max_size=30) | st.text(max_size=30))
def test_digits_of_is_phonenumbers_normalize_digits_only(text: str) -> None:
    assert phones.digits_of(text) == phonenumbers.normalize_digits_only(text)


def test_e164_is_phonenumbers_own_e164_format() -> None:
    assert [n for n in PARSED if phonenumbers.is_valid_number(n) and not n.extension
            and phones.e164(n) != phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)] == []
