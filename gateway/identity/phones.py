"""A phone number as typed -> the number both vendors hash, or None: read, never rewritten.

Google wants E.164 with the ``+`` (https://developers.google.com/google-ads/api/docs/conversions/enhanced-conversions/leads
and the Data Manager API's "Format user data": https://developers.google.com/data-manager/api/devguides/concepts/formatting),
Meta the same digits without it ("digits only ... must include a country
code", no leading zeros:
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters).
Both vendors match on the exact digits, so a number that had to be altered
to fit is worse than no number: it is a number nobody typed, and may be
someone else's. ``phonenumbers`` is generous when it parses (it turns letters
into digits, drops an extension, cuts a trunk or carrier prefix, reads
``9000000000`` as a Turkish number and loses a digit), so after parsing the
result is checked against what was typed. A number is kept only when:

- ``phonenumbers`` calls it valid (``is_valid_number``), not merely of a
  possible length (the price: a range opened after the installed metadata
  was built is dropped until ``phonenumbers`` is upgraded; a lost match, not
  a wrong one); and
- its digits are the typed digits re-expressed, nothing else: the typed
  digits (ignoring spaces, dots, dashes, parentheses and any other non-digit)
  after a leading ``+`` or ``00`` are the country code and national number;
  or, written without either, they are the national number, alone, behind
  the region's trunk prefix (``0170 …`` in Germany, ``1 650 …`` in the US),
  or as the region's own national format shows it (an Italian ``02 …``); and
- it is not a placeholder: one digit repeated (``0000000000``, ``+1 555 555 5555``).
  Runs such as ``123456789`` are not treated so: ``+33 1 23 45 67 89`` is a
  valid French number (and ``phonenumbers``' own example); the US ``1234567890``
  is not valid anyway.
"""

from __future__ import annotations

import threading

import phonenumbers


def parse(value: str, region: str | None, *, bare_digits_have_country_code: bool) -> phonenumbers.PhoneNumber | None:
    """The valid number the text writes, or None.

    ``region`` (ISO 3166-1 alpha-2) reads a number written without ``+`` or
    ``00``. Without a region such a number is either dropped (Google: E.164
    needs a country) or, with ``bare_digits_have_country_code``, read as
    digits that already start with the country code (Meta: its SDK and
    Parameter Builder take them so).
    """
    text = value.strip()
    typed = phonenumbers.normalize_digits_only(text)
    if not typed:
        return None
    international = text.startswith("+") or typed.startswith("00")
    try:
        if text.startswith("+"):
            number = phonenumbers.parse(text, None)
        elif international:
            typed = typed[2:]
            number = phonenumbers.parse("+" + typed, None)
        elif region:
            number = phonenumbers.parse(text, region.upper())
        elif bare_digits_have_country_code:
            international = True
            number = phonenumbers.parse("+" + typed, None)
        else:
            return None
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) or number.extension:
        return None
    national = phonenumbers.national_significant_number(number)
    full = f"{number.country_code}{national}"
    if international:
        written_as = {full}
    else:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper()) if region else None
        trunk = metadata.national_prefix if metadata is not None and metadata.national_prefix else ""
        shown = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        shown = phonenumbers.normalize_digits_only(shown)
        written_as = {full, national, trunk + national, shown}
    if typed not in written_as or _placeholder(national):
        return None
    return number


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class _Reads(threading.local):
    """What ``e164_of`` read on this thread since its last ``forget``: (text, region, bare digits rule) -> E.164.

    One order webhook reads its phone number three times (the Google Ads tag,
    the Meta tag, the identifiers the ledger keeps), and one read costs about
    290k instructions, half of the ledger's step. The memory holds raw
    numbers, so it is per thread and emptied as soon as the step that read
    them is over (``Ledger.run`` on the storage's writer thread, the
    collection path after ``Pipeline.process``); no request ever finds
    another's number here, and it is bounded in between.
    """

    def __init__(self) -> None:
        self.written: dict[tuple[str, str | None, bool], str | None] = {}


_READS = _Reads()
_READ_BOUND = 32


def e164_of(value: str, region: str | None, *, bare_digits_have_country_code: bool) -> str | None:
    """``parse`` then ``e164``: the number as E.164 (``+491701234567``), or None; remembered until ``forget``."""
    text = value.strip()
    # A number written with "+" carries its country: the region and the bare digits rule play no part.
    key = (text, None, False) if text[:1] == "+" else (text, region, bare_digits_have_country_code)
    written = _READS.written
    try:
        return written[key]
    except KeyError:
        pass
    number = parse(text, region, bare_digits_have_country_code=bare_digits_have_country_code)
    e164_text = e164(number) if number is not None else None
    if len(written) >= _READ_BOUND:
        written.clear()
    written[key] = e164_text
    return e164_text


def forget() -> None:
    """Drop every number this thread remembers: called when the work that read them is over."""
    _READS.written.clear()


def _placeholder(national: str) -> bool:
    """``0000000``, ``5555555555``: what forms hold when the customer would not say."""
    return len(set(national)) == 1
