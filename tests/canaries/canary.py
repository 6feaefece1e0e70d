"""The canaries: a unique email, phone and name per example, and every form a leak of one could take.

A leak is rarely the value exactly as it was sent. A tag hashes it, a URL
percent-encodes it, a log lower-cases it, a recorder base64s a digest. So
each canary comes with its *needles*: the byte strings to look for, named by
the form they stand for (``raw``, ``lower``, ``quote``, ``quote_plus``,
``sha256_hex:<normalised form>``, ``sha256_b64:...``). The hash forms follow
the vendors' own normalisation, written here from their references rather
than taken from the gateway (a test that reused the gateway's normaliser
would miss the gateway's mistakes):

- email: trimmed, lower case (Google's "Normalize and hash user-provided
  data", https://developers.google.com/google-ads/api/docs/conversions/enhanced-conversions/leads,
  and Meta's customer information parameters,
  https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters);
  the addresses are never gmail.com, where Google's rule would also drop dots;
- phone: E.164 with the ``+`` (Google) and its digits without it (Meta);
- name: lower case (both).

Needles are searched in a lower-cased copy of a place unless their form is
case-sensitive (base64), so ``raw`` also finds ``CNRY...@EXAMPLE.ORG``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, quote_plus

import phonenumbers

Kind = Literal["email", "phone", "name"]
KINDS: tuple[Kind, ...] = ("email", "phone", "name")

# Never reused within a process: hypothesis may draw the same letters twice, and a canary
# found in the database must belong to exactly one example.
_SERIAL = itertools.count(1)
_PHONES_USED: set[str] = set()

# Area codes of the US and Canada that phonenumbers accepts with most exchanges.
AREA_CODES = (201, 202, 206, 212, 213, 305, 310, 312, 404, 415, 503, 512, 602, 617, 646, 702, 713, 718, 801, 917)


@dataclass(frozen=True)
class Needle:
    form: str  # e.g. "raw", "quote", "sha256_hex:+14155550132"
    text: bytes
    case_sensitive: bool = False


@dataclass(frozen=True)
class Canary:
    kind: Kind
    value: str  # the canonical value: lower-case email, E.164 phone, capitalised surname
    variants: tuple[str, ...] = field(default=())  # other ways it is written when placed

    # -- normalised forms, as each vendor hashes them -----------------------------------------

    def normalised(self) -> tuple[str, ...]:
        """The strings a vendor would hash (Google first)."""
        if self.kind == "email":
            return (self.value.strip().lower(),)
        if self.kind == "phone":
            return (self.value, self.value.lstrip("+"))  # Google: E.164; Meta: its digits
        return (self.value.lower(),)

    def digest(self, which: int = 0) -> bytes:
        return hashlib.sha256(self.normalised()[which].encode()).digest()

    def sha256_hex(self, which: int = 0) -> str:
        return self.digest(which).hex()

    @property
    def national(self) -> str:
        """A phone's ten national digits (what every written form of it contains, separators aside)."""
        return self.value[-10:]

    # -- what to look for -------------------------------------------------------------------------

    def needles(self) -> list[Needle]:
        texts: dict[str, str] = {}
        for text in (self.value, *self.variants):
            texts.setdefault(f"raw:{text}", text)
            texts.setdefault(f"quote:{text}", quote(text, safe=""))
            texts.setdefault(f"quote_plus:{text}", quote_plus(text, safe=""))
            texts.setdefault(f"quote_twice:{text}", quote(quote(text, safe=""), safe=""))  # a URL inside a URL
        if self.kind == "email":
            texts["local_part"] = self.value.split("@", 1)[0]
        if self.kind == "phone":
            texts["national_digits"] = self.national
        out = [Needle(form, text.encode().lower()) for form, text in texts.items()]
        for which, norm in enumerate(self.normalised()):
            digest = self.digest(which)
            out.append(Needle(f"sha256_hex:{norm}", digest.hex().encode()))
            # 43 characters: the padded and the unpadded form both contain them.
            out.append(Needle(f"sha256_b64:{norm}", base64.b64encode(digest)[:43], case_sensitive=True))
            out.append(Needle(f"sha256_b64url:{norm}", base64.urlsafe_b64encode(digest)[:43], case_sensitive=True))
        unique: dict[tuple[bytes, bool], Needle] = {}
        for needle in out:  # the first form named wins: "raw" before "quote" when they are the same bytes
            unique.setdefault((needle.text, needle.case_sensitive), needle)
        return list(unique.values())
        return out


def email_canary(letters: str) -> Canary:
    serial = next(_SERIAL)
    local = f"cnry{letters}{serial}z"  # the z ends it: no canary is the start of another
    value = f"{local}@example.org"
    return Canary("email", value, (f"Cnry{letters.upper()}{serial}Z@Example.ORG",))


def phone_canary(area: int, exchange: int, line: int) -> Canary | None:
    """+1 area-exchange-line (the next unused line when that one was used), or None when none is valid."""
    for step in range(10000):
        number = f"+1{area:03d}{exchange:03d}{(line + step) % 10000:04d}"
        if number not in _PHONES_USED:
            break
    else:
        return None
    if not phonenumbers.is_valid_number(phonenumbers.parse(number)):
        return None
    _PHONES_USED.add(number)
    national = number[2:]
    a, b, c = national[:3], national[3:6], national[6:]
    variants = (f"+1 {a} {b} {c}", f"+1-{a}-{b}-{c}", f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1.{a}.{b}.{c}", number[1:])
    return Canary("phone", number, variants)


def name_canary(letters: str) -> Canary:
    serial = next(_SERIAL)
    # Letters only (a name has no digits): the serial is spelled in letters after a fixed stem.
    spelled = "".join("abcdefghij"[int(d)] for d in str(serial))
    surname = f"Qz{letters}x{spelled}y"  # y is no digit's letter: no canary is the start of another
    return Canary("name", surname.capitalize(), (surname.upper(),))
