"""Meta's normalisation rules for the Conversions API's customer information parameters.

Reference: https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
(the table of ``em``, ``ph``, ``fn`` ... ``external_id``: what to hash and how
to normalise first). Every function here returns the normalised text, the
exact string that is hashed, or None when nothing usable is left: a value
that cannot be normalised is dropped, never hashed as it came.

Where Meta differs from Google (``gateway.identity.google``): an email keeps
its dots and ``+suffix`` whatever the domain; a phone is its digits with the
country code and no ``+``.

Meta's documentation and the normaliser in its own Python SDK
(``facebook_business.adobjects.serverside.normalize.Normalize``) disagree in
places. We follow the documentation, and the tests compare with the SDK only
where the two agree:

- ``fn``/``ln``: the documentation says "lowercase only with no punctuation";
  the SDK only lowercases, so ``O'Brien`` is ``obrien`` here, ``o'brien`` there.
- ``ct``/``st``: the documentation says no punctuation, no special characters,
  no spaces; the SDK removes only digits, spaces, ``.``, ``-`` and brackets, so
  ``L'Aquila`` is ``laquila`` here, ``l'aquila`` there. A US state written
  out (``California``) becomes its 2-letter code, as the documentation asks.
- ``zp``: the documentation says no spaces and no dash, and the first 5 digits
  for a US zip code; the SDK cuts at the first dash whatever the country, which
  turns a Brazilian ``12345-678`` into ``12345`` (``12345678`` here). A
  ``12345-6789`` with no country is taken as a US ZIP+4 (``12345``) by both.
- ``ph``: the SDK keeps the digits of whatever it is given (and rejects a
  number that starts with 0); we read it with ``gateway.identity.phones`` so
  that a national number gets its country code from the address's country or
  the tag's ``default_region``, as the documentation requires, and drop a
  number ``phonenumbers`` does not call valid or whose digits are not the
  typed ones: ``9000000000`` (no region) is dropped, where the SDK hashes it
  and ``phonenumbers`` alone would make it a Turkish ``900000000``.
- ``country``: the SDK rejects anything but a 2-letter ISO code; we also take
  country names (``United States`` -> ``us``, the documentation's own example;
  ``United States of America``, ``Great Britain``, ``Deutschland``) through
  ``gateway.identity.countries``, and ``uk`` as ``gb``.
- placeholders: ``test@example.com``-style emails and ``0000000000``-style
  phones are dropped; a first or last name ``Test`` is a name, and is kept.
- already hashed: the SDK passes through 32-hex (MD5) and 64-hex values; we
  pass through SHA-256 hex only, as Meta asks for SHA-256.
- ``db``/``ge``: the SDK hashes what it is given; we write ``YYYYMMDD`` from
  the usual date forms (the documentation's example input is ``2/16/1997``)
  and read ``female``/``male`` as ``f``/``m``.
- ``external_id``: hashing is "recommended"; the SDK's ``UserData`` sends it
  unhashed, its normaliser (trim, lowercase, hash) is what we apply. Whatever
  the form, the pixel must send the same one.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime

from gateway.event import UserData
from gateway.identity import (
    clean, digest_to_hex, is_placeholder_email, is_sha256_hex, present, request_memory, sha256_hex,
)
from gateway.identity import countries, phones

# Hashed parameters, in the order of Meta's table.
HASHED_FIELDS: tuple[str, ...] = ("em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ISO_DATE = re.compile(r"^(\d{4})([-/.]?)(\d{1,2})\2(\d{1,2})(?:[T ].*)?$")
_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_DOTTED_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$")
_US_ZIP = re.compile(r"^(\d{5})(?:-?\d{4})?$")
_ZIP_PLUS_4 = re.compile(r"^\d{5}-\d{4}$")
_FBCLID = re.compile(r"^[\x21-\x7e]+$")

_FEMALE = frozenset({"f", "female", "woman"})
_MALE = frozenset({"m", "male", "man"})

# The 2-letter ANSI (USPS) codes of US states, DC and territories, keyed by the
# name with only its letters, lowercase: "New York" -> "newyork" -> "ny".
_US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca", "colorado": "co",
    "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc", "florida": "fl", "georgia": "ga",
    "hawaii": "hi", "idaho": "id", "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks",
    "kentucky": "ky", "louisiana": "la", "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi",
    "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny", "northcarolina": "nc",
    "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or", "pennsylvania": "pa",
    "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd", "tennessee": "tn", "texas": "tx",
    "utah": "ut", "vermont": "vt", "virginia": "va", "washington": "wa", "westvirginia": "wv",
    "wisconsin": "wi", "wyoming": "wy", "americansamoa": "as", "guam": "gu", "northernmarianaislands": "mp",
    "puertorico": "pr", "unitedstatesvirginislands": "vi", "usvirginislands": "vi",
}


def _text(value: object) -> str | None:
    """Trimmed text or None, without ``clean``'s placeholder list (for values that are checked otherwise)."""
    if value is None or isinstance(value, bool):
        return None
    return str(value).strip() or None


def _letters(text: str) -> str:
    """Only letters (and their combining marks), lowercase: no spaces, digits, punctuation or symbols."""
    return "".join(ch for ch in text.lower() if unicodedata.category(ch)[0] in "LM")


def email(value: str) -> str | None:
    """Trimmed and lowercased; dots and ``+suffix`` kept on every domain; ``test@…``-style placeholders dropped."""
    text = value.strip().lower()
    return text if _EMAIL.match(text) and not is_placeholder_email(text) else None


def phone(value: str, region: str | None = None) -> str | None:
    """Digits only, country code first, no ``+`` or ``00``: ``+1 (650) 555-1212`` -> ``16505551212``.

    A number written with ``+`` or ``00`` carries its country code; any other
    number is read as a national number of ``region`` (an ISO 3166-1 code)
    when there is one, and as digits that already start with the country code
    when there is not (which is what Meta expects to be given). The number
    must be valid and its digits the typed ones (``gateway.identity.phones``):
    it is dropped, never rewritten.
    """
    written = phones.e164_of(value, region, bare_digits_have_country_code=True)
    return written[1:] if written is not None else None


def name(value: str) -> str | None:
    """First or last name: lowercase, punctuation removed, letters of any script kept (``Valéry`` -> ``valéry``).

    ``Test`` is a name (placeholders are not checked for names); a value without a single letter is not.
    """
    text = "".join(ch for ch in value.lower() if unicodedata.category(ch)[0] != "P").strip()
    return text if any(ch.isalpha() for ch in text) else None


def gender(value: str) -> str | None:
    """``f`` or ``m``; anything else is dropped."""
    text = value.strip().lower()
    if text in _FEMALE:
        return "f"
    if text in _MALE:
        return "m"
    return None


def date_of_birth(value: str) -> str | None:
    """``YYYYMMDD``, from year-first dates (``1997-02-16``, ``19970216``, an ISO timestamp), ``2/16/1997``
    (month first, Meta's example; day first when the first number cannot be a month) or ``16.02.1997``."""
    text = value.strip()
    match = _ISO_DATE.match(text)
    if match and (match.group(2) or len(match.group(3)) == len(match.group(4)) == 2):
        year, month, day = int(match.group(1)), int(match.group(3)), int(match.group(4))
    elif match := _US_DATE.match(text):
        first, second, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
        month, day = (second, first) if first > 12 >= second else (first, second)
    elif match := _DOTTED_DATE.match(text):
        day, month, year = int(match.group(1)), int(match.group(2)), int(match.group(3))
    else:
        return None
    if year < 1900:
        return None
    try:
        date(year, month, day)
    except ValueError:
        return None
    return f"{year:04d}{month:02d}{day:02d}"


def city(value: str) -> str | None:
    """Lowercase letters only: ``New-York`` -> ``newyork``, ``São Paulo`` -> ``sãopaulo``."""
    return _letters(value) or None


def state(value: str, country: str | None = None) -> str | None:
    """Lowercase letters only; a US state's name becomes its 2-letter code (when the country is US or unknown)."""
    text = _letters(value)
    if country in (None, "us"):
        text = _US_STATES.get(text, text)
    return text or None


def zip_code(value: str, country: str | None = None) -> str | None:
    """Lowercase without spaces or dashes; a US zip code (or a bare ``12345-6789``) keeps its first 5 digits."""
    text = re.sub(r"\s", "", value.lower())
    if country == "us" or (country is None and _ZIP_PLUS_4.match(text)):
        match = _US_ZIP.match(text)
        if match:
            return match.group(1)
    text = text.replace("-", "")
    return text or None


def country_code(value: str) -> str | None:
    """ISO 3166-1 alpha-2, lowercase: ``US`` -> ``us``, ``United States`` -> ``us``, ``uk`` -> ``gb``."""
    return countries.country_code(value)


def external_id(value: str) -> str | None:
    """Trimmed and lowercased, as the SDK's normaliser does; use the same form in the pixel."""
    return value.strip().lower() or None


def click_id(fbclid: str, seen_at: datetime) -> str | None:
    """The ``fbc`` value for a click id seen in a page URL: ``fb.1.<ms timestamp>.<fbclid>``.

    ``1`` is the subdomain index Meta asks for when the server builds the
    value; the fbclid is case sensitive and kept exactly as it came
    (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc).
    """
    fbclid = fbclid.strip()
    if not _FBCLID.match(fbclid):
        return None
    return f"fb.1.{int(seen_at.timestamp() * 1000)}.{fbclid}"


def hashed(field: str, value: object, *, country: str | None = None, region: str | None = None) -> str | None:
    """The value Meta receives for one hashed parameter: SHA-256 hex of the normalised text.

    A value that already is a SHA-256 hex digest passes through lowercased,
    never hashed twice. ``country`` (normalised, lowercase) is the address's
    country, which decides the zip and state rules; ``region`` the phone's
    default region.
    """
    if value is None:
        return None
    # The value's type too: 1, 1.0 and True are one dict key, but Meta's rules write them apart ("1", "1.0").
    key = (field, type(value), value, region if field == "ph" else country if field in _BY_COUNTRY else None)
    written = _DIGESTS.written
    try:
        return written[key]
    except KeyError:
        pass
    except TypeError:  # a value that cannot be a key (not from our event model): read, not remembered
        return _hashed(field, value, country, region)
    digest = _hashed(field, value, country, region)
    if len(written) >= _DIGEST_BOUND:
        written.clear()
    written[key] = digest
    return digest


def _hashed(field: str, value: object, country: str | None, region: str | None) -> str | None:
    # "NA" is Namibia, not a placeholder: a country is checked against the list of codes instead.
    # A name is only checked for blanks: "Test" is someone's name, not a placeholder.
    text = _text(value) if field == "country" else present(value) if field in _NAMES else clean(value)
    if text is None:
        return None
    if is_sha256_hex(text):
        return text.lower()
    normalised = _NORMALISERS[field](text, country, region)
    return sha256_hex(normalised) if normalised is not None else None


# What ``hashed`` answered on this thread since the last ``gateway.identity.forget``: (field, type, value, what the rule
# reads) -> digest. An order webhook's purchase is hashed twice with the same values (the Meta tag, then the
# identifiers the ledger keeps for refunds): 117k instructions the second time. A phone's digest depends on its
# default region, a city's, state's and zip's on the country; no other field's does, so the key holds that alone.
_DIGEST_BOUND = 32
_DIGESTS = request_memory()
_BY_COUNTRY = frozenset({"ct", "st", "zp"})


_NAMES = frozenset({"fn", "ln"})

_NORMALISERS = {
    "em": lambda text, country, region: email(text),
    "ph": lambda text, country, region: phone(text, region),
    "fn": lambda text, country, region: name(text),
    "ln": lambda text, country, region: name(text),
    "db": lambda text, country, region: date_of_birth(text),
    "ge": lambda text, country, region: gender(text),
    "ct": lambda text, country, region: city(text),
    "st": lambda text, country, region: state(text, country),
    "zp": lambda text, country, region: zip_code(text, country),
    "country": lambda text, country, region: country_code(text),
    "external_id": lambda text, country, region: external_id(text),
}


def customer_information(user_data: UserData | None, default_region: str | None = None) -> dict[str, list[str]]:
    """Meta's hashed ``user_data`` parameters from our ``UserData``, each a list of SHA-256 hex strings.

    A raw value and its ``sha256_*`` twin both go when they differ (Meta takes
    lists). ``sha256_*`` values were hashed by whoever sent them, maybe with
    Google's rules (a gmail address without dots, a phone with ``+``): they
    are passed on as they are. The phone's region is the address's country,
    else ``default_region``. There is no street parameter at Meta.
    """
    return _customer_information(user_data, default_region, everything=True)


def contact_information(user_data: UserData | None, default_region: str | None = None) -> dict[str, list[str]]:
    """``customer_information``'s email, phone, first and last name alone, the same digests in the same order.

    What the order ledger keeps of a purchase for its refunds; the rest (city,
    zip, birth date ...) is not worth hashing for it.
    """
    return _customer_information(user_data, default_region, everything=False)


def _customer_information(user_data: UserData | None, default_region: str | None, *,
                          everything: bool) -> dict[str, list[str]]:
    if user_data is None:
        return {}
    address = user_data.address
    raw_country = _text(address.country) if address is not None else None
    country = country_code(raw_country) if raw_country is not None else None
    region = country.upper() if country else default_region
    out: dict[str, list[str]] = {}

    def add(field: str, digest: str | None) -> None:
        if digest is not None and digest not in out.setdefault(field, []):
            out[field].append(digest)

    def add_digest(field: str, value: str | None) -> None:
        text = clean(value)
        add(field, digest_to_hex(text) if text is not None else None)

    add("em", hashed("em", user_data.email_address))
    add_digest("em", user_data.sha256_email_address)
    add("ph", hashed("ph", user_data.phone_number, region=region))
    add_digest("ph", user_data.sha256_phone_number)
    if address is not None:
        add("fn", hashed("fn", address.first_name))
        add_digest("fn", address.sha256_first_name)
        add("ln", hashed("ln", address.last_name))
        add_digest("ln", address.sha256_last_name)
    if everything:
        add("db", hashed("db", user_data.date_of_birth))
        add("ge", hashed("ge", user_data.gender))
        if address is not None:
            add("ct", hashed("ct", address.city, country=country))
            add("st", hashed("st", address.region, country=country))
            add("zp", hashed("zp", address.postal_code, country=country))
            add("country", hashed("country", address.country))
        add("external_id", hashed("external_id", user_data.external_id))
    return {field: values for field, values in out.items() if values}
