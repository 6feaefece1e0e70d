"""What personal data looks like: pure detectors, no policy.

Consent enforcement, the debugger's masks and the log filters all need the
same answer to "is this an email address, a phone number, a digest?", so the
answer lives here, once, with no imports from the rest of the gateway.

The detectors err on the side of "personal": a false positive costs a report
column, a false negative costs a legal basis. Where that would destroy data
every request carries (a browser's version numbers in its user agent, an ISO
date, a price), the shape that tells them apart is spelled out below.

- ``is_email`` / ``is_phone`` / ``is_digest``: the whole value is one.
- ``contains_personal``: an email address or phone number appears somewhere
  in the text, raw or percent-encoded (once or twice).
- ``scrub_text``: the same, replaced by ``[redacted]``.
- ``is_personal_key``: a key whose *name* says its value is personal,
  including the short names vendors use (Meta's ``em``/``ph``/``fn``...).
- ``decoded_forms``: the forms a value can hide in (percent-encoded once or
  twice, upper-case).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from urllib.parse import unquote_plus

from gateway.identity import phones

REDACTED = "[redacted]"

# -- email -------------------------------------------------------------------------------------------

# The local part stops at characters that delimit it in URLs and prose; "%40" and "%2540" are "@"
# percent-encoded once and twice, so an address in a URL is found without decoding the URL first.
_EMAIL = re.compile(
    r"[^@\s<>()\[\],;:\"'&=?/%\\]+"
    r"(?:@|%40|%2540)"
    r"(?:[^@\s<>()\[\],;:\"'&=?/%\\.]+\.)+[^\W\d_]{2,63}(?![^\W\d_])",
    re.IGNORECASE,
)
# Every character RFC 5322 allows in a local part, for what the first pattern leaves: "'&=?/%"
# are legal there, but in a URL they delimit, so they are only taken when nothing else matched.
_EMAIL_ANY_LOCAL = re.compile(
    r"[^@\s<>()\[\],;:\"\\]+@(?:[^@\s<>()\[\],;:\"'&=?/%\\.]+\.)+[^\W\d_]{2,63}(?![^\W\d_])",
    re.IGNORECASE,
)
_EMAIL_HINTS = ("@", "%40", "%2540")


def is_email(value: str) -> bool:
    """The whole value (surrounding spaces and a ``mailto:`` aside) is one email address."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text[:7].lower() == "mailto:":
        text = text[7:]
    return "@" in text and (_EMAIL.fullmatch(text) is not None or _EMAIL_ANY_LOCAL.fullmatch(text) is not None)


# -- phone -------------------------------------------------------------------------------------------

_PHONE_CHARS = frozenset("0123456789 ().-+/\u00a0")
# A run of digits and the separators phone numbers are written with. Not preceded by a word
# character, a dot, a slash or a dash, so the middle of a version number ("Chrome/120.0.6099.109"),
# a path segment or an identifier is never a candidate of its own.
_PHONE_IN_TEXT = re.compile(r"(?<![\w.+/%-])(?:\+|00)?\(?\d[\d ().\-\u00a0]{5,24}\d\)?(?!\w|[.,]\d)")
_SEPARATORS = re.compile(r"[ ().\-\u00a0/]+")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
# "2024-11-23 12" is what the text pattern takes from "2024-11-23 12:00": a date and an hour, not a number.
_DATE_AND_HOUR = re.compile(r"(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4})[ T]\d{1,2}")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}")  # an IPv4 address
_MIN_DIGITS, _MAX_DIGITS = 7, 15  # E.164 allows 15; short national numbers have 7


_NON_DIGITS = re.compile(r"[^0-9]+")


def _digit_count(text: str) -> int:
    return len(_NON_DIGITS.sub("", text))


def _phone_shaped(text: str, bare_numbers: bool = True) -> bool:
    """Digits and separators (already checked) that make a phone number rather than a date, a version or a decimal."""
    digits = _digit_count(text)
    if not _MIN_DIGITS <= digits <= _MAX_DIGITS:
        return False
    if not bare_numbers and digits == len(text):
        return False  # digits alone, even with a leading 00: an id where ids are expected
    if text.startswith(("+", "00")):
        return text.count("+") <= 1
    if "+" in text or _DATE.fullmatch(text) or _DATE_AND_HOUR.fullmatch(text) or _IPV4.fullmatch(text):
        return False
    groups = [g for g in _SEPARATORS.split(text) if g]
    if len(groups) == 1:
        if not bare_numbers:
            return False
        # A bare number: the "phone written as a number", unless it reads as a Unix time in seconds or
        # milliseconds (10 or 13 digits from 1): no phone number is written so (North American numbers do not
        # start with 1 without their country code, and 13 digits with country code 1 are too many).
        return not (len(groups[0]) in (10, 13) and groups[0][0] == "1")
    if len(groups) == 2 and set(_SEPARATORS.findall(text)) == {"."}:
        return False  # a decimal number, 123456.78
    # Version numbers and IP-like dotted runs have one-digit groups after the first: 10.0.19045.
    return all(len(g) >= 2 for g in groups[1:])


def is_phone(value: object) -> bool:
    """The whole value is a phone number: 7-15 digits written with spaces, dots, dashes, parentheses, ``+``, or bare.

    An ``int`` counts too (a phone number sent as a JSON number); ``bool`` and
    ``float`` do not. ISO dates, dotted decimals and version numbers do not.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0 and _phone_shaped(str(value))
    if not isinstance(value, str):
        return False
    text = value.strip()
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    if not 7 <= len(text) <= 40 or not _PHONE_CHARS.issuperset(text):
        return False
    return _phone_shaped(text)


def digits_read_as_phone(digits: str) -> bool:
    """Digits alone that ``phonenumbers`` calls a valid number: with a country code (``14155550107``,
    ``4915123456767``), as a North American number (``4155550107``), or after a trunk ``0`` or an
    international ``00``. For fields that hold numbers of their own (an order number), where digit count
    alone would take every order for a phone."""
    if not digits.isdigit() or not _MIN_DIGITS <= len(digits) <= _MAX_DIGITS:
        return False
    if digits.startswith("0"):
        return 9 <= len(digits) <= 13
    return phones.valid_with_country_code(digits) or (len(digits) == 10 and phones.valid_with_country_code("1" + digits))


_COUNTER_SUFFIX = re.compile(r"-\d{1,3}$")


def _phone_matches(text: str, bare_numbers: bool = True) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in _PHONE_IN_TEXT.finditer(text):
        candidate = match.group(0)
        if _phone_shaped(candidate, bare_numbers):
            spans.append(match.span())
        elif (suffix := _COUNTER_SUFFIX.search(candidate)) and _phone_shaped(candidate[:suffix.start()], bare_numbers):
            spans.append((match.start(), match.start() + suffix.start()))  # "(602) 864-0650-2": a counter after it
        elif " " in candidate:
            # "2024-01-15 4155550107": too many digits as one; look at each part on its own.
            offset = match.start()
            for part in re.finditer(r"\S+", candidate):
                if _phone_shaped(part.group(0).strip("()"), bare_numbers):
                    spans.append((offset + part.start(), offset + part.end()))
    return spans




# -- digests -----------------------------------------------------------------------------------------

_DIGEST_PREFIX = re.compile(r"(?:sha-?256|sha2)[:=$_-]?", re.IGNORECASE)
_ENCODED_SEPARATOR = re.compile(r"%3[AD]", re.IGNORECASE)
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_B64_32 = re.compile(r"[A-Za-z0-9+/_-]{43}=?")


def is_digest(value: object) -> bool:
    """A SHA-256 digest: 64 hex digits, or 32 bytes in base64 / base64url, optionally prefixed ``sha256:`` or ``sha256=``.

    An unprefixed base64 value must mix upper case, lower case and digits, as
    32 random bytes do: a 43-letter word or id of one case is not taken for one.
    """
    if not isinstance(value, str) or not 43 <= len(value) <= 80:
        return False
    text = value.strip()
    prefixed = False
    match = _DIGEST_PREFIX.match(text)
    if match is not None and len(text) - match.end() in (43, 44, 64):
        text = text[match.end():]
        prefixed = True
    if len(text) == 64:
        return _HEX64.fullmatch(text) is not None
    if len(text) not in (43, 44) or _B64_32.fullmatch(text) is None:
        return False
    if not prefixed and not (
        any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)
    ):
        return False
    padded = text.replace("-", "+").replace("_", "/").rstrip("=") + "="
    try:
        return len(base64.b64decode(padded, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


# A digest inside text: 64 hex digits, or 43-44 base64(url) characters, each standing alone (a longer run is
# something else: a click id, a token), optionally after a sha256: / sha256= prefix. A slash may stand on
# either side (a digest as a URL path segment, whose own slashes are part of it), and base64's "=" padding
# ends a digest whatever follows it (a delivery id "<digest>=-2"), as does a short counter ("<digest>-2").
# "%3A" and "%3D" are ":" and "=" percent-encoded: a prefixed digest in a URL is found without decoding it.
_DIGEST_IN_TEXT = re.compile(
    r"(?:(?<![A-Za-z0-9])(?:sha-?256|sha2)(?:[:=$_-]|%3A|%3D)?)?"
    r"(?:(?:(?<![0-9A-Za-z])|(?<=%3A)|(?<=%3D))[0-9A-Fa-f]{64}(?![0-9A-Za-z])"
    r"|(?:(?<![A-Za-z0-9+_-])|(?<=%3A)|(?<=%3D))[A-Za-z0-9+/_-]{43}(?:=|(?![A-Za-z0-9+_=-])|(?=-\d{1,3}(?![A-Za-z0-9+/_=-]))))",
    re.IGNORECASE,
)


# A digest glued to an id's prefix ("RF-<base64url digest>"): base64url's own "-" hides it from the pattern
# above. Only for ids and for display, never for free text in the redaction pass, where such a tail may be part
# of a click id that must stay whole. Group 1 is the prefix, group 2 the candidate digest.
GLUED_DIGEST = re.compile(r"(?<![A-Za-z0-9+/_-])([A-Za-z]{1,8}-)([A-Za-z0-9+/_-]{43})(?![A-Za-z0-9+/_=-])")


def _digest_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _DIGEST_IN_TEXT.finditer(text) if is_digest(_ENCODED_SEPARATOR.sub(":", m.group(0)))]


def contains_digest(text: str) -> bool:
    """A SHA-256 digest (as ``is_digest`` reads one) stands somewhere inside the text."""
    return isinstance(text, str) and len(text) >= 43 and bool(_digest_spans(text))


def scrub_digests(text: str) -> str:
    """SHA-256 digests inside free text (hex, base64, prefixed) replaced by ``[redacted]``."""
    if len(text) < 43:
        return text
    for start, end in reversed(_digest_spans(text)):
        text = text[:start] + REDACTED + text[end:]
    return text


# -- text --------------------------------------------------------------------------------------------


def _decodings(value: str) -> list[str]:
    forms = [value]
    current = value
    for _ in range(2):
        if "%" not in current and "+" not in current:
            break
        decoded = unquote_plus(current, errors="replace")
        if decoded == current:
            break
        forms.append(decoded)
        current = decoded
    return forms


def decoded_forms(value: str) -> tuple[str, ...]:
    """The distinct forms a value may hide personal data in: raw, percent-decoded once and twice, lower-cased."""
    forms = _decodings(value)
    lowered = [f.lower() for f in forms]
    out: list[str] = []
    for form in forms + lowered:
        if form not in out:
            out.append(form)
    return tuple(out)


def cannot_be_personal(text: str) -> bool:
    """A cheap first look: too short for a digest, no ``@`` or ``%``, fewer than 7 digits: nothing to find."""
    return len(text) < 43 and "@" not in text and "%" not in text and _digit_count(text) < _MIN_DIGITS


def contains_personal(value: object, bare_numbers: bool = True) -> bool:
    """An email address or a phone number appears in the value, raw or percent-encoded once or twice.

    ``bare_numbers=False`` takes a run of digits alone for an id, not a phone number: for fields whose
    values are ids by definition (an order number), where only a written-out phone number counts.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return bare_numbers and is_phone(value)
    if not isinstance(value, str) or len(value) < 6:
        return False
    # The patterns ignore case, so only the percent-decoded forms need looking at (and only when there are any).
    for form in _decodings(value) if ("%" in value or "+" in value) else (value,):
        if ("@" in form or "%40" in form or "%2540" in form) and (
            _EMAIL.search(form) is not None or _EMAIL_ANY_LOCAL.search(form) is not None
        ):
            return True
        if _phone_matches(form, bare_numbers):
            return True
    return False


def scrub_text(text: str, bare_numbers: bool = True) -> str:
    """Free text with each email address and phone number inside it replaced by ``[redacted]``.

    Addresses percent-encoded once or twice (``jane%40example.com``) are
    found as they are; a phone number percent-encoded with ``%20`` between
    its groups is found by ``contains_personal``, which the caller can use
    to drop what this cannot cut out cleanly. ``bare_numbers`` as in
    ``contains_personal``.
    """
    if len(text) < 6:
        return text
    if any(h in text for h in _EMAIL_HINTS):
        text = _EMAIL.sub(REDACTED, text)
        if "@" in text:
            text = _EMAIL_ANY_LOCAL.sub(REDACTED, text)
    for start, end in reversed(_phone_matches(text, bare_numbers)):
        text = text[:start] + REDACTED + text[end:]
    return text


# -- keys --------------------------------------------------------------------------------------------

# Whole key names (lower-cased, separators removed) that hold personal data: GA4's and Google's
# user-provided data names, Meta's Conversions API names, and the common form-field names.
_PERSONAL_KEY_NAMES = frozenset({
    "email", "mail", "emailaddress", "phone", "tel", "telephone", "mobile", "cell", "fax", "phonenumber",
    "name", "firstname", "lastname", "fullname", "surname", "givenname", "familyname", "middlename",
    "address", "street", "streetaddress", "address1", "address2", "zip", "zipcode", "postcode", "postalcode",
    "city", "birthday", "birthdate", "dob", "dateofbirth", "gender", "ssn",
    # Meta (em, ph, fn, ln, ge, db, ct, st, zp) and the hashed-email names trackers use
    "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "hem", "hph", "hashedemail", "hashedphone",
    "sha256emailaddress", "sha256phonenumber", "sha256firstname", "sha256lastname", "sha256street",
})
# Parts of longer names: customer_email, billingPhone, shipping_address_1, user_first_name.
_PERSONAL_KEY_PART = re.compile(
    r"e[-_ ]?mail"
    r"|(?<!i)(?<!smart)(?<!micro)(?<!head)(?<!ear)phone|mobile[-_ ]?(?:number|no)"
    r"|(?:^|[-_ .])(?:tel|fax|cell)(?:$|[-_ .]|number|no)"
    r"|(?:first|last|sur|given|family|full|middle|maiden|customer|user|billing|shipping|contact|buyer)[-_ ]?name"
    r"|(?:^|[-_ .])[fl]name(?:$|[-_ .])"
    r"|street|address|postal|post[-_ ]?code|zip|(?:^|[-_ .])city(?:$|[-_ .])"
    r"|birth|(?:^|[-_ .])dob(?:$|[-_ .])|gender"
    r"|(?:^|[-_ .])ssn(?:$|[-_ .])|passport|national[-_ ]?id|tax[-_ ]?id"
)
# Matches of the parts above that are not personal: an IP or MAC address is handled as an IP, and a
# URL's or a page's address is not a postal one.
_NOT_PERSONAL_KEYS = frozenset({"ipaddress", "macaddress", "webaddress", "urladdress", "pageaddress"})


def is_personal_key(key: object) -> bool:
    """A key whose name says its value is personal: ``email``, ``billingPhone``, ``first_name``, Meta's ``em``..."""
    return isinstance(key, str) and _personal_key(key)


@functools.lru_cache(maxsize=4096)  # keys come from a small vocabulary; the bound keeps a hostile one small
def _personal_key(key: str) -> bool:
    lower = key.strip().lower()
    norm = lower.replace("_", "").replace("-", "").replace(" ", "").replace(".", "")
    if norm in _NOT_PERSONAL_KEYS:
        return False
    return norm in _PERSONAL_KEY_NAMES or _PERSONAL_KEY_PART.search(lower) is not None
