"""Google's normalisation and hashing against every "google" vector in tests/fixtures/hashing.json."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from gateway.identity import is_sha256_hex, sha256_hex
from gateway.identity.google import (
    EMAIL_RULES,
    hash_email,
    hash_name,
    hash_phone,
    hash_street,
    normalize_country,
    normalize_email,
    normalize_name,
    normalize_phone,
    normalize_street,
    prehashed,
)
from tests.conftest import load_fixture

VECTORS = load_fixture("hashing.json")["google"]


def _cases() -> list[Any]:
    cases = []
    for i, vector in enumerate(VECTORS):
        rules = [vector["email_rule"]] if "email_rule" in vector else list(EMAIL_RULES)
        for rule in rules if vector["field"] == "email" else [None]:
            label = f"{i}-{vector['field']}" + (f"-{rule}" if rule else "")
            cases.append(pytest.param(vector, rule, id=label))
    return cases


def _functions(vector: dict[str, Any], rule: str | None) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    field = vector["field"]
    if field == "email":
        return (lambda v: normalize_email(v, rule)), (lambda v: hash_email(v, rule))  # type: ignore[arg-type]
    if field == "phone":
        region = vector.get("default_region")
        return (lambda v: normalize_phone(v, region)), (lambda v: hash_phone(v, region))
    if field == "street":
        return normalize_street, hash_street
    return normalize_name, hash_name


@pytest.mark.parametrize(("vector", "rule"), _cases())
def test_every_google_vector_normalises_and_hashes_as_expected(vector: dict[str, Any], rule: str | None) -> None:
    normalize, digest = _functions(vector, rule)
    assert digest(vector["raw"]) == vector["sha256"]
    if vector["normalized"] is not None and not is_sha256_hex(vector["raw"].strip()):
        assert normalize(vector["raw"]) == vector["normalized"]
        assert sha256_hex(vector["normalized"]) == vector["sha256"]  # the vector agrees with itself


def test_every_vector_of_the_fixture_is_covered() -> None:
    assert {v["field"] for v in VECTORS} == {"email", "phone", "first_name", "last_name", "street"}


@pytest.mark.parametrize(
    "raw",
    [pytest.param(v, id=repr(v)) for v in [None, "", "   ", "null", "N/A", "undefined", "no-at-sign.example.com",
                                            "two@@example.com", "@example.com", "user@", "jane doe@example.com", "+@gmail.com"]],
)
def test_blank_placeholder_and_malformed_emails_are_dropped(raw: Any) -> None:
    assert (normalize_email(raw), hash_email(raw)) == (None, None)


@pytest.mark.parametrize(
    ("raw", "region"),
    [("12345", "DE"), ("0170 1234567", None), ("not a phone", "US"), ("+1 555 0000", "US"), ("0", "DE")],
)
def test_phone_numbers_that_are_not_valid_are_dropped(raw: str, region: str | None) -> None:
    assert (normalize_phone(raw, region), hash_phone(raw, region)) == (None, None)


def test_a_lower_case_region_is_accepted() -> None:
    assert normalize_phone("(0170) 1234567", "de") == "+491701234567"


def test_names_lose_inner_runs_of_whitespace() -> None:
    assert normalize_name("  Mary \t Ann  ") == "mary ann"


def test_a_digest_is_never_hashed_twice_for_any_field() -> None:
    digest = "C5383C2EEADA28210D27F011BC127D4F9562CF38FF0C9BBA33DD45AE79B9FE7C"
    assert {hash_email(digest), hash_phone(digest), hash_name(digest), hash_street(digest)} == {digest.lower()}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("87924606B4131A8ACEEEAE8868531FBB9712AAA07A5D3A756B26CE0F5D6CA674",
         "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"),
        ("h5JGBrQTGorO7q6IaFMfu5cSqqB6XTp1aybOD11spnQ", "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"),
        ("test@gmail.com", None),
        ("", None),
    ],
)
def test_prehashed_values_are_hex_or_base64url_digests_or_nothing(raw: str, expected: str | None) -> None:
    assert prehashed(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" us ", "US"), ("DE", "DE"), ("USA", "US"), ("United States of America", "US"), ("Deutschland", "DE"),
     ("", None), ("1a", None), ("xx", None), ("Atlantis", None)],
)
def test_countries_are_sent_as_two_letters_in_upper_case_from_a_code_or_a_name(raw: str, expected: str | None) -> None:
    # "USA" was dropped before country names were read (issue 14): it is the alpha-3 code of the US.
    assert normalize_country(raw) == expected
