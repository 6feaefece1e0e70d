"""Identity normalisation and hashing, shared by every tag.

Vendors disagree on how to normalise before hashing (Google removes dots from
gmail addresses and wants phones in E.164 with the ``+``; Meta keeps the dots
and wants the phone's digits only), so each vendor's rules live in their own
module beside this one (``google``, ``meta``). What they share is here: the
digest itself, recognising a value that already is a digest (never hash
twice), turning a GA4 ``em`` base64url digest into hex, and dropping blanks
and placeholders instead of hashing them into a useless identifier.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

# Values forms and order systems put where they have nothing; hashing them
# would send every such customer as the same "person".
PLACEHOLDERS = frozenset(
    {"", "null", "none", "undefined", "n/a", "-", "--", "0", "unknown", "test", "nil", "[object object]"}
)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.match(value))


def digest_to_hex(value: str) -> str | None:
    """A SHA-256 digest given as hex or base64url (with or without padding) as lowercase hex.

    None when the value is neither: callers drop such pieces rather than
    hash what is already meant to be a hash.
    """
    value = value.strip()
    if is_sha256_hex(value):
        return value.lower()
    padded = value + "=" * (-len(value) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def clean(value: object) -> str | None:
    """Trimmed text, or None for missing, blank and placeholder values."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if text.lower() in PLACEHOLDERS:
        return None
    return text
