"""The redaction pass: what leaves an event when ``ad_user_data`` is denied.

Run once per event by ``gateway.consent`` before any rule or tag sees it, so
that nothing downstream (the outbox, the ledger, logs, the debugger, any
vendor) ever holds what the visitor did not allow. It looks at every field
a request can fill, because personal data hides wherever a page can write:

- ``user_data`` goes whole: it exists to identify the person.
- Identifiers the pipeline needs (``client_id``, ``event_id``,
  ``transaction_id``, ``user_id``): a value that is or holds an email
  address, a phone number or a digest becomes ``pid-`` and 32 hex digits of
  an HMAC-SHA256 under the install's own secret. The same input gives the
  same pseudonym, so idempotency keys and the order ledger still match a
  refund to its order, while nobody without the secret can compute it from
  an address (a plain SHA-256 would be joinable with every vendor's hash).
  An order number (``transaction_id``) of digits alone stays unless
  ``phonenumbers`` reads it as a valid phone number: that field holds the
  order system's number, which operators look orders up by.
- URLs (``page_location``, ``page_referrer``, any string in the event shaped
  like one): the value of a query parameter that is an email address or a
  phone number (percent-decoded once and twice), or a digest, or whose name
  is on ``consent.redact_query_parameters``, becomes ``(redacted)``; an
  email address or written-out phone number in the path or the fragment is
  cut out. Click ids stay: they are the tags' business under ``ad_storage``.
- Free text (``page_title``, ``user_agent``, ``language``, every string in
  ``extra``, ``user_properties`` and ``items`` at any depth): email
  addresses, phone numbers and hex digests inside are replaced.
- Entries whose key is personal (``email``, ``billingPhone``, Meta's ``em``),
  whose key itself is an address, or whose value is wholly an address, a
  phone number (text or JSON number) or a digest (hex, base64, prefixed) are
  removed.

A bare number under a key that names an id, a count, a price or a time
(``item_id``, ``x-ga-page_id``, ``quantity``, ``engagement_time_msec``) is
not taken for a phone number: those keys carry such numbers on every hit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from gateway.event import Event
from gateway.personal import (
    GLUED_DIGEST,
    REDACTED,
    cannot_be_personal,
    contains_digest,
    contains_personal,
    digits_read_as_phone,
    is_digest,
    is_email,
    is_personal_key,
    is_phone,
    scrub_digests,
    scrub_text,
)
from gateway.percent import unquote_plus

QUERY_REDACTED = "(redacted)"
PSEUDONYM_PREFIX = "pid-"
_PSEUDONYM = re.compile(r"pid-[0-9a-f]{32}")
_DIGIT_RUN = re.compile(r"(?<!\d)\d{7,15}(?!\d)")
IDENTIFIERS = ("client_id", "user_id", "event_id", "transaction_id")
# Order numbers: digits alone there are the order system's number, not a phone number, and the operator
# must be able to find the order by it. (An event id of digits alone that reads as a phone number is
# pseudonymised: nothing outside the gateway needs to read it.)
NUMERIC_IDS = frozenset({"transaction_id"})
_FREE_TEXT = ("page_title", "user_agent", "language", "screen_resolution")
_URLS = ("page_location", "page_referrer")
# Key endings whose bare numbers are ids, counts, amounts or times, never phone numbers.
_NUMERIC_KEY_ENDINGS = (
    "id", "ids", "sku", "index", "count", "quantity", "qty", "price", "value", "amount", "total", "tax",
    "shipping", "discount", "time", "timestamp", "ts", "msec", "ms", "seconds", "version",
    "gtin", "ean", "upc", "isbn", "mpn",
)
# GA4 item keys whose value is the product, never the person: "name" there is item_name.
_ITEM_KEYS = frozenset({"name", "item_name", "item_id", "id", "sku", "item_brand", "item_category", "item_variant"})

Pseudonym = Callable[[str], str]


def redact_event(event: Event, query_names: frozenset[str], pseudonym: Pseudonym) -> list[str]:
    """Remove or replace what ``ad_user_data`` denied forbids; the paths touched, never their values."""
    touched: list[str] = []
    if event.user_data is not None:
        event.user_data = None
        touched.append("user_data")
    for name in IDENTIFIERS:
        value = getattr(event, name)
        if value is not None and identifier_is_personal(value, numeric_id=name in NUMERIC_IDS):
            setattr(event, name, pseudonym(value))
            touched.append(name)
    for name in _URLS:
        value = getattr(event, name)
        if value:
            cleaned = redact_url(value, query_names)
            if cleaned != value:
                setattr(event, name, cleaned)
                touched.append(name)
    for name in _FREE_TEXT:
        value = getattr(event, name)
        if value:
            cleaned = _text(value, query_names, bare_numbers=True)
            if cleaned != value:
                setattr(event, name, cleaned)
                touched.append(name)
    walker = _Walker(query_names, touched)
    if event.extra:
        walker.mapping(event.extra, "extra", items=False)
    if event.user_properties:
        walker.mapping(event.user_properties, "user_properties", items=False)
    if event.items:
        walker.sequence(event.items, "items", parent_key="items", items=True)
    return touched


def identifier_is_personal(value: str, numeric_id: bool = False) -> bool:
    """An id that is or holds an email address, a phone number or a digest (see the module docstring)."""
    if cannot_be_personal(value) or (len(value) == 36 and _PSEUDONYM.fullmatch(value) is not None):
        return False  # too plain to hold anything, or already our pseudonym
    if numeric_id and value.isdigit():
        return digits_read_as_phone(value)
    if is_digest(value) or contains_personal(value, bare_numbers=not numeric_id) or contains_digest(value):
        return True
    if "-" in value and any(is_digest(m.group(2)) for m in GLUED_DIGEST.finditer(value)):
        return True  # a digest glued to an id's prefix ("RF-<base64url digest>")
    # An order number inside a composite id ("woocommerce:14155550107:refunded", "RF-14155550107") is held to
    # the same rule as one standing alone: a phone number when phonenumbers reads it as one.
    return numeric_id and any(digits_read_as_phone(run) for run in _DIGIT_RUN.findall(value))


def redact_url(url: str, query_names: frozenset[str]) -> str:
    """A URL with personal query values replaced and addresses cut out of its path and fragment."""
    head, hash_sign, fragment = url.partition("#")
    base, question, query = head.partition("?")
    out = _path(base)
    if question:
        out += "?" + _query(query, query_names)
    if hash_sign:
        # A single-page app's fragment may hold its own path and query: "#/thanks?email=...".
        out += "#" + (redact_url(fragment, query_names) if "=" in fragment else _path(fragment))
    return out


def _path(text: str) -> str:
    if not cannot_be_personal(text):
        # Segment by segment: a phone number right after a slash is one, though in prose it would not be;
        # a segment of digits alone that reads as a phone number goes too (when in doubt, it does not leave).
        text = "/".join(_scrub(s, bare_numbers=True) if contains_personal(s) else s for s in text.split("/"))
    if "%" in text:  # a digest whose "/", "+" or "=" are percent-encoded stands in one segment
        text = "/".join(REDACTED if "%" in s and is_digest(_decoded(s.replace("+", "%2B"))) else s
                        for s in text.split("/"))
    return scrub_digests(text)


def _query(query: str, names: frozenset[str]) -> str:
    pieces = query.split("&")
    for i, piece in enumerate(pieces):
        if not piece:
            continue
        raw_name, equals, raw_value = piece.partition("=")
        name = _decoded(raw_name)
        if contains_personal(raw_name, bare_numbers=False) or is_digest(name):
            pieces[i] = QUERY_REDACTED  # the parameter's name itself is the address
        elif equals and raw_value and (
            name.lower() in names or _value_is_personal(raw_value)
        ):
            pieces[i] = f"{raw_name}={QUERY_REDACTED}"
    return "&".join(pieces)


def _value_is_personal(raw: str) -> bool:
    value = _decoded(raw)
    if is_digest(value) or is_digest(_decoded(value)):
        return True
    # A base64 digest written into a query without encoding: its "+" is a plus, not a space.
    if "+" in raw and is_digest(_decoded(raw.replace("+", "%2B"))):
        return True
    return contains_personal(raw)


def _decoded(raw: str) -> str:
    try:
        return unquote_plus(raw)
    except UnicodeDecodeError:
        return raw


def _is_url(text: str) -> bool:
    return "://" in text[:16] or (text[:1] == "/" and "?" in text)


def _text(text: str, query_names: frozenset[str], bare_numbers: bool) -> str:
    if cannot_be_personal(text):
        return text
    if _is_url(text):
        return redact_url(text, query_names)
    if contains_personal(text, bare_numbers):
        text = _scrub(text, bare_numbers)
    return scrub_digests(text)


def _scrub(text: str, bare_numbers: bool) -> str:
    """``scrub_text``; when what it found is encoded so that it cannot be cut out cleanly, the whole text goes."""
    cleaned = scrub_text(text, bare_numbers)
    return REDACTED if contains_personal(cleaned, bare_numbers) else cleaned


def _numeric_key(key: str) -> bool:
    lower = key.lower()
    return lower.endswith(_NUMERIC_KEY_ENDINGS)


class _Walker:
    """Walks ``extra``, ``user_properties`` and ``items`` in place, noting each path it changed."""

    __slots__ = ("names", "touched")

    def __init__(self, names: frozenset[str], touched: list[str]) -> None:
        self.names = names
        self.touched = touched

    def mapping(self, data: dict[Any, Any], prefix: str, items: bool) -> None:
        doomed: list[Any] = []
        for key, value in data.items():
            if _key_is_personal(key, items):
                doomed.append(key)
                continue
            keep, new = self._value(value, prefix, key, items)
            if not keep:
                doomed.append(key)
            elif new is not value:
                data[key] = new
        for key in doomed:
            del data[key]
            self.touched.append(_path_of(prefix, key))

    def sequence(self, data: list[Any], prefix: str, parent_key: str, items: bool) -> None:
        doomed: list[int] = []
        for i, value in enumerate(data):
            keep, new = self._value(value, prefix, i, items, parent_key)
            if not keep:
                doomed.append(i)
            elif new is not value:
                data[i] = new
        for i in reversed(doomed):
            del data[i]
        self.touched.extend(f"{prefix}[{i}]" for i in doomed)

    def _value(self, value: Any, prefix: str, at: Any, items: bool, parent_key: str = "") -> tuple[bool, Any]:
        """(keep it, its new value): strings scrubbed in place, whole addresses and digests dropped.

        ``at`` is the key (in a mapping) or the index (in a list, whose ``parent_key`` names it).
        """
        key = parent_key if isinstance(at, int) else at if isinstance(at, str) else ""
        if isinstance(value, str):
            if cannot_be_personal(value):
                return True, value
            if is_digest(value):
                return False, None
            bare = not _numeric_key(key)
            if is_email(value) or (is_phone(value) and (bare or not value.strip().isdigit())):
                return False, None
            cleaned = _text(value, self.names, bare)
            if cleaned != value:
                self.touched.append(_path_of(prefix, at))
                return True, cleaned
            return True, value
        if isinstance(value, int) and not isinstance(value, bool):
            return (_numeric_key(key) or not is_phone(value)), value
        if isinstance(value, dict):
            self.mapping(value, _path_of(prefix, at), items)
        elif isinstance(value, list):
            self.sequence(value, _path_of(prefix, at), key, items)
        return True, value


def _path_of(prefix: str, at: Any) -> str:
    return f"{prefix}[{at}]" if isinstance(at, int) else f"{prefix}.{_label(at)}"


@functools.lru_cache(maxsize=4096)  # keys come from a small vocabulary; the bound keeps a hostile one small
def _key_is_personal(key: Any, items: bool) -> bool:
    if not isinstance(key, str):
        return False
    if items and key.lower() in _ITEM_KEYS:
        return False
    return is_personal_key(key) or contains_personal(key) or is_digest(key) or contains_digest(key)


def _label(key: object) -> str:
    """A key as it may appear in a path: never an address or a number someone typed."""
    text = key if isinstance(key, str) else type(key).__name__
    if contains_personal(text) or is_digest(text):
        return "(redacted)"
    return text if len(text) <= 64 else text[:64] + "..."
