"""Meta's digest of a value is worked out once per request, and none outlives its request in memory.

An order webhook's purchase is hashed for Meta twice with the same values:
by the Meta tag, then for the identifiers the order ledger keeps for its
refunds. ``meta.hashed`` remembers its answers, per thread, until
``gateway.identity.forget``, which empties the phone numbers' memory too and
which ``Ledger.run`` and the collection path call as soon as the step that
read them is over.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gateway import identity
from gateway.identity import meta, phones
from tests.identity.sample_orders import ORDER, post_orders

SECRET = "meta-digest-reads-secret-0123456789"

# (field, value, country, region): each field, a value already hashed, placeholders, blanks, and the fields whose
# digest depends on the country (zip, state) or on the region (phone).
CASES = [
    ("em", " Alex.Doe@Gmail.com ", None, None),
    ("em", "test@example.com", None, None),
    ("em", "A" * 64, None, None),
    ("ph", "+49 170 1234567", None, None),
    ("ph", "0170 1234567", None, "DE"),
    ("ph", "0170 1234567", None, None),
    ("fn", "Test", None, None),
    ("ln", "O'Brien", None, None),
    ("ct", "L'Aquila", None, None),
    ("st", "California", "us", None),
    ("st", "California", "de", None),
    ("zp", "12345-6789", "us", None),
    ("zp", "12345-678", "br", None),
    ("zp", "12345-678", None, None),
    ("country", "United States", None, None),
    ("db", "2/16/1997", None, None),
    ("ge", "Female", None, None),
    ("external_id", " ID-1 ", None, None),
    ("em", "null", None, None),
    ("em", None, None, None),
]


@pytest.fixture(autouse=True)
def _empty() -> Any:
    identity.forget()
    yield
    identity.forget()


def _worked_out(field: str, value: Any, country: str | None, region: str | None) -> str | None:
    """The digest with nothing remembered."""
    identity.forget()
    return meta.hashed(field, value, country=country, region=region)


@pytest.mark.parametrize("field,value,country,region", CASES)
def test_a_remembered_digest_is_the_one_worked_out(field: str, value: Any, country: str | None,
                                                   region: str | None) -> None:
    expected = _worked_out(field, value, country, region)
    identity.forget()
    assert meta.hashed(field, value, country=country, region=region) == expected  # worked out
    assert meta.hashed(field, value, country=country, region=region) == expected  # remembered


def test_a_digest_is_not_reused_where_the_country_or_the_region_changes_it() -> None:
    """Every case, asked in one request in turn, gives what it gives alone."""
    expected = [_worked_out(*case) for case in CASES]
    identity.forget()
    assert [meta.hashed(f, v, country=c, region=r) for f, v, c, r in CASES] == expected
    assert expected[4] != expected[5] and expected[9] != expected[10] and expected[11] != expected[12]


# Values Python counts as equal (1 == 1.0 == True, so one dict key) that Meta's rules write differently.
EQUAL_BUT_WRITTEN_APART = [
    ("external_id", [1, 1.0, True]),
    ("zp", [12345, 12345.0]),
    ("ph", [4917012345678, 4917012345678.0]),
]


@pytest.mark.parametrize("field,values", EQUAL_BUT_WRITTEN_APART)
def test_values_that_are_equal_in_python_but_not_on_the_wire_keep_their_own_digests(field: str,
                                                                                       values: list[Any]) -> None:
    """A beacon's body may carry a number where a text is usual; the memory must not hand one type's digest to another."""
    expected = [_worked_out(field, value, "de", "DE") for value in values]
    assert len(set(expected)) == len(values)  # the rules really do tell them apart
    identity.forget()
    assert [meta.hashed(field, value, country="de", region="DE") for value in values] == expected


def test_the_memory_is_bounded_and_forget_empties_it_with_the_phone_numbers() -> None:
    for n in range(200):
        meta.hashed("em", f"user{n}@shop.example")
        assert len(meta._DIGESTS.written) <= meta._DIGEST_BOUND
    meta.hashed("ph", "+49 170 1234567")
    assert meta._DIGESTS.written and phones._READS.written
    identity.forget()
    assert not meta._DIGESTS.written and not phones._READS.written


def _count_emails(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every email Meta's rules normalise (``meta.email``), recorded as it passes through."""
    seen: list[str] = []
    real = meta.email

    def counted(value: str) -> str | None:
        seen.append(value)
        return real(value)

    monkeypatch.setattr(meta, "email", counted)
    return seen


def test_a_digest_worked_out_on_one_thread_is_not_found_on_another(monkeypatch) -> None:
    """The storage's writer thread runs the ledger's step while the event loop's thread runs other requests."""
    seen = _count_emails(monkeypatch)
    meta.hashed("em", "alex@shop.example")
    other = threading.Thread(target=lambda: meta.hashed("em", "alex@shop.example"))
    other.start()
    other.join(10)
    assert seen == ["alex@shop.example", "alex@shop.example"]


def test_an_order_webhook_hashes_its_email_for_meta_once_and_the_next_request_again(monkeypatch, tmp_path) -> None:
    """The sample container: the Meta tag fires on the purchase and the ledger keeps the same digests.

    Two uses, one normalisation; a second order with the same address is normalised again, because
    nothing of the first request's values is kept once its step is over.
    """
    seen = _count_emails(monkeypatch)
    for order_id in post_orders(tmp_path, SECRET, ("ORD-1", "ORD-2")):
        assert len(seen) == (1 if order_id == "ORD-1" else 2), seen
    assert seen == [ORDER["customer"]["email"].strip()] * 2
