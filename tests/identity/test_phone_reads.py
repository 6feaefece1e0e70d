"""A phone number is read once per request, and no number outlives its request in memory.

Reading a number (``phonenumbers`` parse, validity, the typed-digits check)
costs about 290k instructions; an order webhook's phone used to be read
three times (the Google Ads tag, the Meta tag, the identifiers the ledger
keeps). ``phones.e164_of`` remembers what it read, per thread, until
``gateway.identity.forget``, which ``Ledger.run`` and the collection path
call as soon as the step that read the numbers is over.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from typing import Any

import pytest

from gateway import identity
from gateway.identity import google, meta, phones
from tests.identity.sample_orders import post_orders

SECRET = "phone-reads-secret-0123456789"

# (text, region, bare digits rule): valid, invalid, national with and without a region, 00-prefixed, blank-padded.
CASES = [
    ("+49 170 1234567", None, False),
    ("+49 170 1234567", "US", True),
    (" +1 (650) 555-1212 ", "DE", False),
    ("0170 1234567", "DE", False),
    ("0170 1234567", None, False),
    ("0170 1234567", None, True),
    ("491701234567", None, True),
    ("0049 170 1234567", "FR", False),
    ("650 555 1212", "US", True),
    ("+1 555 555 5555", None, False),
    ("+49 170 12345", None, False),
    ("call me", "DE", False),
]


@pytest.fixture(autouse=True)
def _empty() -> Any:
    identity.forget()
    yield
    identity.forget()


@pytest.mark.parametrize("text,region,bare", CASES)
def test_e164_of_is_parse_then_e164_remembered_or_not(text: str, region: str | None, bare: bool) -> None:
    number = phones.parse(text, region, bare_digits_have_country_code=bare)
    expected = phones.e164(number) if number is not None else None
    assert phones.e164_of(text, region, bare_digits_have_country_code=bare) == expected  # read
    assert phones.e164_of(text, region, bare_digits_have_country_code=bare) == expected  # remembered


def test_a_remembered_national_number_is_not_reused_for_another_region_or_rule() -> None:
    assert phones.e164_of("0170 1234567", "DE", bare_digits_have_country_code=False) == "+491701234567"
    assert phones.e164_of("0170 1234567", None, bare_digits_have_country_code=False) is None
    assert phones.e164_of("0170 1234567", "US", bare_digits_have_country_code=False) is None


def test_the_memory_is_bounded_and_forget_empties_it() -> None:
    for n in range(200):
        phones.e164_of(f"+49 170 {1000000 + n}", None, bare_digits_have_country_code=False)
        assert len(phones._READS.written) <= phones._READ_BOUND
    assert len(phones._READS.written) > 0
    identity.forget()
    assert len(phones._READS.written) == 0


def test_a_number_read_on_one_thread_is_not_found_on_another(monkeypatch) -> None:
    """The storage's writer thread runs the ledger's step while the event loop's thread runs other requests."""
    reads = _count_reads(monkeypatch)
    phones.e164_of("+49 170 1234567", None, bare_digits_have_country_code=False)
    other = threading.Thread(target=lambda: phones.e164_of("+49 170 1234567", None, bare_digits_have_country_code=False))
    other.start()
    other.join(10)
    assert reads == ["+49 170 1234567", "+49 170 1234567"]


def test_both_vendors_read_through_it() -> None:
    """Google's E.164 and Meta's digits come from one read of the same text."""
    assert google.normalize_phone("+49 170 1234567") == "+491701234567"
    assert meta.phone("+49 170 1234567", "DE") == "491701234567"
    assert len(phones._READS.written) == 1


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real read of a number (``phones.parse``), recorded as it passes through."""
    reads: list[str] = []
    real = phones.parse

    def counted(value: str, region: str | None, *, bare_digits_have_country_code: bool) -> Any:
        reads.append(value)
        return real(value, region, bare_digits_have_country_code=bare_digits_have_country_code)

    monkeypatch.setattr(phones, "parse", counted)
    return reads


def test_an_order_webhook_reads_its_phone_once_and_the_next_request_reads_its_own(monkeypatch, tmp_path) -> None:
    """The sample container: its Google Ads and Meta tags fire on the purchase, and the ledger keeps identifiers.

    Three uses, one read; a second order with the same number reads it again, because nothing of the first
    request's numbers is kept once its step is over.
    """
    reads = _count_reads(monkeypatch)
    for order_id in post_orders(tmp_path, SECRET, ("ORD-1", "ORD-2")):
        assert reads == ["+49 170 1234567"] * (1 if order_id == "ORD-1" else 2)
    # Each vendor still got the number, hashed: Google's E.164 and Meta's digits.
    with contextlib.closing(sqlite3.connect(tmp_path / "g.db")) as conn:
        stored = b"\n".join(bytes(row[0]) for row in conn.execute("SELECT item FROM outbox"))
    assert hashlib.sha256(b"+491701234567").hexdigest().encode() in stored
    assert hashlib.sha256(b"491701234567").hexdigest().encode() in stored
