"""Identity normalisation and hashing, shared by every tag.

Vendors disagree on how to normalise before hashing (Google removes dots from
gmail addresses and wants phones in E.164 with the ``+``; Meta keeps the dots
and wants the phone's digits only), so each vendor's rules live in their own
module beside this one (``google``, ``meta``). What they share is here: the
digest itself, recognising a value that already is a digest (never hash
twice), turning a GA4 ``em`` base64url digest into hex, and dropping blanks
and placeholders instead of hashing them into a useless identifier. Phone
numbers are read in ``phones``, countries in ``countries``.

Blank and placeholder are not the same thing. ``null``, ``undefined`` or
``n/a`` say that nothing was entered, whatever the field (``present``).
``test``, ``unknown`` or ``0`` are what forms put in an identifier when the
customer would not give one (``clean``, and the email checks below); but a
first or last name ``Test`` is a name people have, so names are only checked
for blanks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from typing import Any

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class RequestMemory(threading.local):
    """Answers worked out from personal values, remembered on one thread until ``forget``: key -> answer.

    An order webhook reads its phone number three times and hashes its
    customer's values for Meta twice (the tags, then the identifiers the
    order ledger keeps); each module that remembers such answers keeps them
    in one of these (``phones``, ``meta``). The keys hold raw values, so the
    memory is per thread, bounded by its user (full, it is emptied before
    the next answer is kept), and emptied by ``forget`` as soon as the step
    that read the values is over: no request finds another's values here,
    and none outlives the request that read it.
    """

    def __init__(self) -> None:
        self.written: dict[Any, Any] = {}


_MEMORIES: list[RequestMemory] = []


def request_memory() -> RequestMemory:
    """A ``RequestMemory`` that ``forget`` empties (made once, at a module's import)."""
    memory = RequestMemory()
    _MEMORIES.append(memory)
    return memory


def forget() -> None:
    """Drop every personal value this thread remembers: called as soon as the work that read them is over.

    The collection path calls it after ``Pipeline.process``, ``Ledger.run``
    and ``Ledger.release`` before they return to the storage's writer, and
    the debugger's explanation after its tags.
    """
    for memory in _MEMORIES:
        memory.written.clear()


# What serialisers and forms write for "nothing was entered", in any field.
BLANKS = frozenset({"", "null", "none", "undefined", "n/a", "-", "--", "nil", "[object object]"})

# Values forms and order systems put where they have nothing; hashing them
# would send every such customer as the same "person". Not applied to names.
PLACEHOLDERS = BLANKS | frozenset({"0", "unknown", "test"})

# Addresses that stand for no one. Some local parts say so on any domain
# (noemail@, none@, a system's own noreply@); hashed, every such customer would
# be sent as the one person who owns the address. Others are placeholders only
# at a domain meant for examples: test@example.com, asdf@test.com; test@gmail.com
# is someone's mailbox (and a vector in tests/fixtures/hashing.json).
NO_ADDRESS_LOCALS = frozenset({
    "noemail", "no-email", "no_email", "nomail", "no-mail", "none", "null", "nil", "na", "n/a", "unknown",
    "noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply", "nobody", "anonymous",
})
TEST_WORDS = frozenset({"test", "testing", "tester", "example", "sample", "fake", "dummy", "asdf", "xxx", "email", "mail"})
# RFC 2606 and RFC 6761: names reserved for documentation and testing.
_RESERVED_DOMAINS = frozenset({"example.com", "example.net", "example.org", "localhost"})
_RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost"})


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


def present(value: object) -> str | None:
    """Trimmed text, or None for missing and blank values (``null``, ``n/a``); placeholders are kept."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return None if text.lower() in BLANKS else text


def clean(value: object) -> str | None:
    """Trimmed text, or None for missing, blank and placeholder values (``test``, ``unknown``, ``0``)."""
    text = present(value)
    return None if text is None or text.lower() in PLACEHOLDERS else text


def is_placeholder_email(address: str) -> bool:
    """True for an address that stands for no one: ``noemail@shop.com``, ``test@example.com``, ``asdf@test.com``."""
    local, _, domain = address.lower().rpartition("@")
    local = local.split("+", 1)[0]
    if local in NO_ADDRESS_LOCALS:
        return True
    labels = domain.split(".")
    example_domain = domain in _RESERVED_DOMAINS or labels[-1] in _RESERVED_TLDS or labels[0] in TEST_WORDS
    return local in TEST_WORDS and example_domain
