"""The detectors of personal data: emails, phones, digests, personal key names, hidden forms."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.personal import (
    REDACTED,
    contains_digest,
    contains_personal,
    digits_read_as_phone,
    decoded_forms,
    is_digest,
    is_email,
    is_personal_key,
    is_phone,
    scrub_digests,
    scrub_text,
)

DIGEST = hashlib.sha256(b"jane@example.com").digest()
HEX = DIGEST.hex()
B64 = base64.b64encode(DIGEST).decode()
B64URL = base64.urlsafe_b64encode(DIGEST).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    ["jane@example.com", " Jane.Doe+shop@Example.co.uk ", "mailto:jane@example.com", "j@ex-ample.museum",
     "jäne@exämple.de"],
)
def test_email(value: str) -> None:
    assert is_email(value)


@pytest.mark.parametrize("value", ["jane", "jane@", "@example.com", "jane@example", "a@b.c", "jane at example.com",
                                   "jane@example.com and more", ""])
def test_not_email(value: str) -> None:
    assert not is_email(value)


@pytest.mark.parametrize(
    "value",
    ["415.555.0107", "(415) 555-0107", "415-555-0107", "415 555 0107", "+1 415 555 0107", "+14155550107",
     "4155550107", "0151 23456767", "+49 (0)151 2345 6767", "0049 151 23456767", "tel:+14155550107", "5550107",
     4155550107, 14155550107],
)
def test_phone(value: object) -> None:
    assert is_phone(value)


@pytest.mark.parametrize(
    "value",
    ["2024-01-15", "15.01.2024", "123456.78", "10.0.19045.3803", "120.0.6099.109", "123456", "1234567890123456",
     "+1 415 555+0107", "415-555-01a7", "G100", 12345, True, 3.5, None, "v1.2.3"],
)
def test_not_phone(value: object) -> None:
    assert not is_phone(value)


@pytest.mark.parametrize(
    "value",
    [HEX, HEX.upper(), f"sha256:{HEX}", f"sha256={HEX}", f"SHA-256:{HEX}", B64, B64.rstrip("="), B64URL,
     f"sha256:{B64}"],
)
def test_digest(value: str) -> None:
    assert is_digest(value)


@pytest.mark.parametrize(
    "value",
    [HEX[:63], HEX + "a", "x" * 64, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq", hashlib.md5(b"x").hexdigest(),
     "fb.1.1596403881668.1116446470", 42],
)
def test_not_digest(value: object) -> None:
    assert not is_digest(value)


def test_scrub_digests_in_text() -> None:
    assert scrub_digests(f"h={HEX}&x=1") == f"h={REDACTED}&x=1"
    assert scrub_digests("short") == "short"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thanks jane@example.com!", f"Thanks {REDACTED}!"),
        ("Call 415.555.0107 today", f"Call {REDACTED} today"),
        ("Call (415) 555-0107", f"Call {REDACTED}"),
        ("Ring +49 151 23456767, please", f"Ring {REDACTED}, please"),
        ("jane%40example.com", REDACTED),
        ("jane%2540example.com", REDACTED),
        ("on 2024-01-15 4155550107", f"on 2024-01-15 {REDACTED}"),
    ],
)
def test_scrub_text_replaces_inside_text(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 "
        "Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "en-US,en;q=0.9",
        "Order confirmed on 2024-01-15",
        "Total 1299.00 EUR",
        "GA1.1.123456789.1700000000",
    ],
)
def test_scrub_text_leaves_ordinary_text(text: str) -> None:
    assert scrub_text(text) == text
    assert not contains_personal(text)


def test_contains_personal_sees_encoded_forms() -> None:
    assert contains_personal("https://shop.example/?e=jane%40example.com")
    assert contains_personal(quote(quote("jane@example.com", safe=""), safe=""))
    assert contains_personal("tel%3A415%20555%200107")
    assert contains_personal(4155550107)
    assert not contains_personal("https://shop.example/thanks?order=1001")
    assert not contains_personal(None)


@pytest.mark.parametrize(
    "key",
    ["email", "e-mail", "E_Mail", "mail", "customer_email", "billingPhone", "phone", "tel", "name", "first_name",
     "lastName", "address", "shipping_address_1", "zip", "postcode", "postal_code", "hem", "em", "ph", "fn", "ln",
     "sha256_email_address", "date_of_birth"],
)
def test_personal_key(key: str) -> None:
    assert is_personal_key(key)


@pytest.mark.parametrize(
    "key",
    ["item_name", "event_name", "page_title", "transaction_id", "value", "currency", "smartphone_model",
     "headphones", "ip_address", "template", "items", "h", 42],
)
def test_not_personal_key(key: object) -> None:
    assert not is_personal_key(key)


def test_decoded_forms() -> None:
    once = quote("Jane@Example.com", safe="")
    twice = quote(once, safe="")
    assert decoded_forms(twice) == (twice, once, "Jane@Example.com", twice.lower(), once.lower(), "jane@example.com")
    assert decoded_forms("plain") == ("plain",)


@given(st.emails())
def test_every_generated_email_is_found(email: str) -> None:
    assert contains_personal(email) or contains_personal(email.lower())
    assert REDACTED in scrub_text(f"see {email} now") or "@" not in scrub_text(f"see {email} now")


@pytest.mark.parametrize("value", ["1700000000", "1732360000123", 1700000000, 1732360000123])
def test_unix_times_are_not_phones(value: object) -> None:
    assert not is_phone(value)
    assert not contains_personal(value)


def test_bare_numbers_can_be_taken_for_ids() -> None:
    assert contains_personal("4155550107")
    assert not contains_personal("4155550107", bare_numbers=False)
    assert contains_personal("415.555.0107", bare_numbers=False)
    assert scrub_text("order 4155550107", bare_numbers=False) == "order 4155550107"
    assert scrub_text("call +1 415 555 0107", bare_numbers=False) == f"call {REDACTED}"


def test_digests_inside_text_are_found_and_cut_out_in_every_form() -> None:
    for digest in (HEX, B64, B64URL, f"sha256:{HEX}", f"sha256={B64URL}", f"sha256%3A{HEX}", f"sha256%3d{B64URL}"):
        text = f"Mozilla/5.0 ({digest}) end"
        assert contains_digest(text), digest
        assert scrub_digests(text) == f"Mozilla/5.0 ({REDACTED}) end"
    gclid = "Cj0KCQiA" + "x1Y2z3" * 12  # longer than a digest: a click id, not one
    assert not contains_digest(f"https://shop.example/?gclid={gclid}")


@pytest.mark.parametrize(("digits", "phone"), [
    ("4155550107", True), ("14155550107", True), ("4915123456767", True), ("0612345678", True),
    ("5678901234567", False), ("100200300", False), ("1001", False), ("123456789012", False), ("41555501x7", False),
])
def test_digits_read_as_a_phone_only_when_phonenumbers_says_so(digits: str, phone: bool) -> None:
    assert digits_read_as_phone(digits) is phone


def test_a_digest_is_found_as_a_url_path_segment_with_its_own_slashes_and_when_its_padding_is_followed() -> None:
    # Found by the canary test: a base64 digest right after a "/" (a URL path segment), one holding a "/" of its
    # own, and a padded one with a counter after it (a webhook delivery id "<digest>-2").
    slashed = base64.b64encode(hashlib.sha256(b"cnryaaaaaa319z@example.org").digest()).decode()
    assert "/" in slashed and slashed.endswith("=")
    for text in (f"https://shop.example/u/{B64}/thanks", f"https://shop.example/u/{slashed}/thanks",
                 f"https://shop.example/u/{slashed.rstrip('=')}", f"shopify:{B64}-2"):
        assert contains_digest(text), text
        assert B64.rstrip("=") not in scrub_digests(text) and slashed.rstrip("=") not in scrub_digests(text)


def test_a_phone_followed_by_a_counter_is_found_and_dates_with_hours_and_ip_addresses_are_not_phones() -> None:
    assert contains_personal("wh-(415) 555-0107-2")
    assert "555-0107" not in scrub_text("wh-(415) 555-0107-2")
    for text in ("at 2024-11-23 12:00", "23.11.2024 08:15", "from 198.51.100.42 today", "Chrome/120.0.6099.109"):
        assert scrub_text(text) == text, text
