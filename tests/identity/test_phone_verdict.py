"""``phones.valid_with_country_code`` gives ``phonenumbers``' own verdict on ``+`` and digits, every time.

It rules numbers out from ``phonenumbers``' metadata before calling its
``parse`` and ``is_valid_number`` (``phones._ruled_out``), because an order
number checked for a phone number costs up to 700k instructions the long
way. These tests hold the short way to the long one: for every region's
example numbers of every type, the same written after the region's national
prefix, the same with a digit changed, and random digits.
"""

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
