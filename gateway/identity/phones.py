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

import re
from typing import Iterable

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from gateway.identity import request_memory

# phonenumbers compiles its metadata's patterns with re.compile, whose cache holds 512 patterns for the
# whole process and is shared with every other module's; each region a number comes from brings dozens,
# so past a few regions they were compiled again and again (1.5-4 ms for a region's first number, on the
# SQLite writer's thread). Since 9.0.43 phonenumbers keeps what it compiled when asked (its
# ``enable_pattern_cache``: "Keep every compiled metadata regular expression from now on, rather than
# relying on the re module's own (bounded) cache"), bounded by its metadata: about 750 KB with the
# patterns of all 245 regions.
phonenumbers.enable_pattern_cache()


def parse(value: str, region: str | None, *, bare_digits_have_country_code: bool) -> phonenumbers.PhoneNumber | None:
    """The valid number the text writes, or None.

    ``region`` (ISO 3166-1 alpha-2) reads a number written without ``+`` or
    ``00``. Without a region such a number is either dropped (Google: E.164
    needs a country) or, with ``bare_digits_have_country_code``, read as
    digits that already start with the country code (Meta: its SDK and
    Parameter Builder take them so).
    """
    text = value.strip()
    typed = digits_of(text)
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
    if number.extension:
        return None
    national = phonenumbers.national_significant_number(number)
    if not _is_valid(number, national):
        return None
    full = f"{number.country_code}{national}"
    if international:
        written = typed == full
    else:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper()) if region else None
        trunk = metadata.national_prefix if metadata is not None and metadata.national_prefix else ""
        # The national format is asked for last: formatting costs a third of the read, and most numbers were
        # typed in one of the other three forms.
        written = typed in (full, national, trunk + national) or typed == digits_of(
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
    if not written or _placeholder(national):
        return None
    return number


def digits_of(text: str) -> str:
    """The digits of ``text`` in order, as ``phonenumbers.normalize_digits_only`` answers.

    That function reads every character through ``unicodedata`` one at a
    time (a fifth of a number's read); in ASCII text the digits it keeps are
    exactly ``0``-``9``, which one C pass removes the rest around. Other text
    (Arabic-Indic or full-width digits, say) goes to ``phonenumbers``.
    """
    if text.isascii():
        return _NOT_DIGITS.sub("", text)
    return phonenumbers.normalize_digits_only(text)


_NOT_DIGITS = re.compile(r"[^0-9]+")


def is_valid(number: phonenumbers.PhoneNumber) -> bool:
    """``phonenumbers.is_valid_number(number)``, decided from the metadata ``_rules_for`` reads once per calling code.

    ``is_valid_number`` finds the number's region, then reads its metadata
    and matches the national number against the general description and
    each type's, through a dozen Python calls per description (a quarter of
    a number's read). Where the calling code has one region (every country
    but those sharing +1, +7, +44, +47, +61, +262, +590 ...), that region is
    the one ``is_valid_number`` picks, and the same test is made here on the
    patterns compiled once: the general description, then any type
    (``_number_type_helper`` answering anything but UNKNOWN). A shared
    calling code, where which region is picked matters, is left to
    ``phonenumbers``. ``tests/identity/test_phone_verdict.py`` holds the two
    to the same answer for every region's example numbers and random digits.
    """
    return _is_valid(number, phonenumbers.national_significant_number(number))


def _is_valid(number: phonenumbers.PhoneNumber, national: str) -> bool:
    """``is_valid``, given the number's national significant number (``parse`` has it already)."""
    code = number.country_code
    if code not in COUNTRY_CODE_TO_REGION_CODE:
        return False
    rules = _RULES.get(code) or _rules_for(code)
    if rules is None or len(rules[3]) != 1 or len(COUNTRY_CODE_TO_REGION_CODE[code]) != 1:
        return phonenumbers.is_valid_number(number)
    return _valid_in(rules[3][0], national, len(national))


def e164(number: phonenumbers.PhoneNumber) -> str:
    """``format_number(number, E164)``: ``+``, the calling code, the national significant number (its own words)."""
    return f"+{number.country_code}{phonenumbers.national_significant_number(number)}"


# What ``e164_of`` read on this thread since the last ``forget``: (text, region, bare digits rule) -> E.164. One
# read costs about 290k instructions, half of the ledger's step; an order webhook's number is read three times.
_READ_BOUND = 32
_READS = request_memory()


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


def valid_with_country_code(digits: str) -> bool:
    """``phonenumbers``' verdict on ``+`` followed by ``digits``: ``is_valid_number(parse("+" + digits))``.

    Asked of order numbers (``gateway.personal.digits_read_as_phone``: is an
    id that a log line shows a phone number?), which nearly never are, and
    ``phonenumbers``' parse and validation cost about 300k instructions a
    number (up to 700k for a log line's one id). So its own metadata rules
    out first what it would not call valid (``_ruled_out``); only what is
    left goes through ``parse`` and ``is_valid_number``.
    """
    if _ruled_out(digits):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + digits, None))
    except phonenumbers.NumberParseException:
        return False


def _ruled_out(digits: str) -> bool:
    """True only when ``phonenumbers`` would not call ``+digits`` valid; False whenever in doubt.

    How phonenumbers 9.0 reads ``+`` and digits, step by step (``parse``,
    ``is_valid_number``):

    - the calling code is the first of the number's first one, two or three
      digits that is one (``_extract_country_code``); no calling code: not a
      number;
    - the rest is the national number, unless the ``national_prefix_for_parsing``
      of the calling code's main region matches at its start: then ``parse``
      may strip what matched (both readings are tried below) or, with a
      ``national_prefix_transform_rule``, rewrite it (in doubt);
    - a national number of fewer than 2 or more than 17 digits is refused;
    - a valid number has a type in the region it is from, one of the calling
      code's regions: it matches that region's general description (its
      possible lengths, then its pattern) and one of its types' (premium
      rate, toll free, ... fixed line, mobile), which is ``_number_type_helper``
      not answering ``UNKNOWN``. Which region ``is_valid_number`` picks is
      left to it: here any region will do.

    ``tests/identity/test_phone_verdict.py`` holds this to ``parse`` and
    ``is_valid_number`` for every region's example numbers and for random digits.
    """
    if not digits.isdigit() or digits[0] == "0":
        return False
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return True
    rules = _RULES.get(code) or _rules_for(code)
    if rules is None:
        return False
    prefix, rewrites, anywhere, regions = rules
    general_anywhere, type_anywhere = anywhere
    national = digits[size:]
    readings = [national]
    if prefix is not None:
        stripped = prefix.match(national)
        if stripped is not None:
            if rewrites:
                return False
            readings.append(national[stripped.end():])
    for reading in readings:
        length = len(reading)
        if (2 <= length <= 17 and general_anywhere.fullmatch(reading) is not None
                and type_anywhere.fullmatch(reading) is not None):
            if any(_valid_in(region, reading, length) for region in regions):
                return False
    return True


def _valid_in(region: tuple[_Desc, list[_Desc]], national: str, length: int) -> bool:
    """``_number_type_helper`` not answering UNKNOWN: the region's general description, then any of its types."""
    general, types = region
    return _matches(general, national, length) and any(_matches(kind, national, length) for kind in types)


def _matches(desc: _Desc, reading: str, length: int) -> bool:
    """phonenumbers' ``_is_number_matching_desc``: the possible lengths (none listed: any), then the pattern."""
    lengths, pattern = desc
    return (not lengths or length in lengths) and pattern.fullmatch(reading) is not None


# Calling code -> what ``_ruled_out`` reads of its regions' metadata: the main region's national prefix for
# parsing (compiled) and whether it rewrites; two patterns tried first, one that any of its regions' general
# patterns matches and one that any of their types' patterns matches (an order number matches neither: two
# tests, not one per region and type); and for each region its general description and its types' (lengths,
# compiled pattern). Built on first use, so each calling code's metadata is read once, not once per number
# (25 regions share +1); bounded by the calling codes phonenumbers knows (about 250).
_Desc = tuple[frozenset[int], "re.Pattern[str]"]
_Rules = tuple["re.Pattern[str] | None", bool, tuple["re.Pattern[str]", "re.Pattern[str]"],
               list[tuple[_Desc, list[_Desc]]]]
_RULES: dict[int, _Rules] = {}
# The descriptions ``_number_type_helper`` tries after the general one: a number matching none is UNKNOWN. Which
# one matches does not matter here, only whether any does, so the two that most numbers are come first.
_TYPES = ("mobile", "fixed_line", "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
          "uan", "voicemail")


def _desc(desc: object) -> _Desc | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return None  # phonenumbers: no description, or an empty pattern, matches nothing
    return frozenset(getattr(desc, "possible_length", None) or ()), re.compile(pattern)


def _union(descs: Iterable[_Desc]) -> re.Pattern[str]:
    """A pattern that matches what any of ``descs``' patterns matches (none: nothing)."""
    return re.compile("|".join(f"(?:{pattern.pattern})" for _, pattern in descs) or "(?!)")


def _rules_for(code: int) -> _Rules | None:
    names = COUNTRY_CODE_TO_REGION_CODE[code]
    main = PhoneMetadata.metadata_for_region_or_calling_code(code, names[0])
    if main is None:
        return None
    regions: list[tuple[_Desc, list[_Desc]]] = []
    for name in names:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, name)
        general = _desc(metadata.general_desc) if metadata is not None else None
        if general is not None:
            types = [kind for kind in (_desc(getattr(metadata, attr, None)) for attr in _TYPES) if kind is not None]
            regions.append((general, types))
    prefix = main.national_prefix_for_parsing
    anywhere = (_union(general for general, _ in regions), _union(kind for _, types in regions for kind in types))
    rules = (re.compile(prefix) if prefix else None, bool(main.national_prefix_transform_rule), anywhere, regions)
    _RULES[code] = rules
    return rules


def _placeholder(national: str) -> bool:
    """``0000000``, ``5555555555``: what forms hold when the customer would not say."""
    return len(set(national)) == 1
