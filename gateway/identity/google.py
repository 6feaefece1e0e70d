"""Google's normalisation rules for user-provided data, then SHA-256 as lowercase hex.

Reference: "Normalize and hash user-provided data" in the Google Ads API guides,
https://developers.google.com/google-ads/api/docs/conversions/enhanced-conversions/leads
and the field descriptions of ``UserIdentifier`` / ``OfflineUserAddressInfo``,
https://developers.google.com/google-ads/api/reference/rpc/latest/OfflineUserAddressInfo

- Email: trim, lowercase. Google's pages disagree on dots and ``+suffix`` in
  the local part, so the reading is a choice (``EmailRule``): ``gmail``
  (default; the Customer Match rule a Google maintainer confirmed for
  conversion uploads: only gmail.com and googlemail.com lose every ``.`` and
  any ``+suffix``), ``all_domains`` (the prose of the conversion-upload pages:
  every domain loses both) and ``gmail_dots`` (older client-library examples:
  gmail.com and googlemail.com lose dots only). Hashing a different string
  than Google does is not an error Google reports: the identifier just never
  matches, so the rule is tested against tests/fixtures/hashing.json.
- Phone: E.164 with the leading ``+`` (``+491701234567``; the Data Manager
  API's "Format user data",
  https://developers.google.com/data-manager/api/devguides/concepts/formatting:
  "Include the plus sign (+) and the country code", ``(800)555-0100`` ->
  ``+18005550100``), read by ``gateway.identity.phones`` with a configured
  default region for numbers written without a country code. A number that
  ``phonenumbers`` finds invalid, or whose digits are not the typed ones, is
  dropped: a wrong digit string hashed is a silent non-match, and worse, may
  match someone else.
- First name, last name, street: trim, collapse inner whitespace, lowercase.
- Country: ISO 3166-1 alpha-2, from a code or a name (``gateway.identity.countries``).
- A value that already is a SHA-256 hex digest is passed through lowercased,
  never hashed twice; blanks (``n/a``, ``null``) are dropped, and so are
  placeholder emails and phones (``test@example.com``, ``0000000000``); a
  name ``Test`` is kept.
"""

from __future__ import annotations

import re
from typing import Literal

from gateway.identity import clean, digest_to_hex, is_placeholder_email, is_sha256_hex, present, sha256_hex
from gateway.identity import countries, phones

EmailRule = Literal["gmail", "all_domains", "gmail_dots"]
EMAIL_RULES: tuple[str, ...] = ("gmail", "all_domains", "gmail_dots")

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_SPACES = re.compile(r"\s+")


def normalize_email(value: object, rule: EmailRule = "gmail") -> str | None:
    """The exact string Google hashes for an email address, or None when it is not one."""
    text = clean(value)
    if text is None:
        return None
    text = text.lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or "@" in local or any(c.isspace() for c in text):
        return None
    if is_placeholder_email(text):
        return None
    if rule == "all_domains" or (rule == "gmail" and domain in GMAIL_DOMAINS):
        local = local.split("+", 1)[0].replace(".", "")
    elif rule == "gmail_dots" and domain in GMAIL_DOMAINS:
        local = local.replace(".", "")
    if not local or is_placeholder_email(f"{local}@{domain}"):
        return None
    return f"{local}@{domain}"


def normalize_phone(value: object, default_region: str | None = None) -> str | None:
    """E.164 (``+491701234567``), or None when the number is not valid or not the one typed.

    A number written without ``+`` or ``00`` needs ``default_region``.
    """
    text = clean(value)
    if text is None:
        return None
    return phones.e164_of(text, default_region, bare_digits_have_country_code=False)


def normalize_name(value: object) -> str | None:
    """First or last name: trimmed, inner whitespace collapsed, lowercased; ``Test`` is a name, ``0`` is not.

    Only blanks are dropped (``null``, ``n/a``), not placeholders: a name is
    no identifier on its own, and people are called Test. A value without a
    single letter is no name.
    """
    text = present(value)
    if text is None or not any(ch.isalpha() for ch in text):
        return None
    return _SPACES.sub(" ", text).lower()


def normalize_street(value: object) -> str | None:
    """Street: trimmed, inner whitespace collapsed, lowercased; blanks and placeholders dropped."""
    text = clean(value)
    if text is None:
        return None
    return _SPACES.sub(" ", text).lower()


def normalize_country(value: object) -> str | None:
    """ISO 3166-1 alpha-2, upper case (sent in clear, not hashed), from a code or a name; None when unknown."""
    text = present(value)
    code = countries.country_code(text) if text is not None else None
    return code.upper() if code is not None else None


def _digest_or(value: object, normalized: str | None) -> str | None:
    text = clean(value)
    if text is not None and is_sha256_hex(text):
        return text.lower()
    return None if normalized is None else sha256_hex(normalized)


def hash_email(value: object, rule: EmailRule = "gmail") -> str | None:
    return _digest_or(value, normalize_email(value, rule))


def hash_phone(value: object, default_region: str | None = None) -> str | None:
    return _digest_or(value, normalize_phone(value, default_region))


def hash_name(value: object) -> str | None:
    return _digest_or(value, normalize_name(value))


def hash_street(value: object) -> str | None:
    return _digest_or(value, normalize_street(value))


def prehashed(value: object) -> str | None:
    """An sGTM ``sha256_*`` value as lowercase hex (hex or base64url accepted), or None."""
    text = clean(value)
    return None if text is None else digest_to_hex(text)
