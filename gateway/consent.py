"""Consent Mode v2: reading the signals, and enforcing them on an event.

Reading. gtag.js carries consent in two query parameters:

- ``gcs=G1xy``: ``x`` is ad_storage, ``y`` analytics_storage; ``1`` granted,
  ``0`` denied, ``-`` not set. It says nothing about ad_user_data or
  ad_personalization, which is why ``gcd`` exists.
- ``gcd``, e.g. ``13r3r3r2r5l1`` (the 2024 form is ``11p1p1p1p5``): digits and
  letters alternate; the letters at index 2, 4, 6 and 8 are ad_storage,
  analytics_storage, ad_user_data and ad_personalization. Each letter packs
  the default and the update into one symbol (see ``_GCD_LETTERS``); the
  effective state is the update when there is one, else the default. ``l``
  means the page never set that signal.

JSON bodies (the beacon, webhooks) carry ``{"ad_user_data": "granted", ...}``.

Decoders never raise: a garbled consent string is the page's problem, and the
request still counts, with the container's default for what it did not say.
A JSON ``consent`` object that is not one of ours is refused with a 400
instead, because its sender is our integration, and a typo there would
otherwise silently turn into the default for every order.

Enforcing (``apply_consent``), before any rule or tag sees the event:

- a signal the request did not carry takes ``consent.default`` from the container;
- ``ad_user_data`` denied: ``user_data`` goes, and so does anything personal
  hiding in ``extra``, ``user_properties``, custom item parameters or a
  ``user_id`` that is really an email address. Keys are judged by their name
  (``customer_email``, ``billingPhone``, ``zip`` ...) and string values by
  their shape (an email address, a phone number). Both tests are heuristics
  that err on the side of removing: a lost custom parameter costs a report
  column, a leaked email address costs a legal basis;
- ``ad_storage`` denied: ``fbp`` and ``fbc``, which are read from cookies, go.

Click ids from the URL (gclid, gbraid, wbraid, fbclid), the IP address and
the user agent stay: they are not data the user provided, and Google's
consent mode still sends the click id on denied pings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import BadRequest
from gateway.event import CONSENT_SIGNALS, Consent, ConsentState, Event

if TYPE_CHECKING:
    from gateway.config import ConsentDefaults

_GCS_STATES: dict[str, ConsentState] = {"1": "granted", "0": "denied"}

# One letter = (default, update). Only the effective state matters here:
# the update when there is one, else the default. 'l' (not set) and unknown
# letters are absent on purpose.
_GCD_LETTERS: dict[str, ConsentState] = {
    "p": "denied",   # denied by default, no update
    "q": "denied",   # denied by default, denied on update
    "t": "granted",  # granted by default, no update
    "r": "granted",  # denied by default, granted on update
    "m": "denied",   # no default, denied on update
    "n": "granted",  # no default, granted on update
    "u": "denied",   # granted by default, denied on update
    "v": "granted",  # granted by default, granted on update
}
_GCD_POSITIONS = tuple(zip((2, 4, 6, 8), CONSENT_SIGNALS))
_GCD_DIGIT_POSITIONS = (0, 1, 3, 5, 7)
_GCD_MAX_LENGTH = 64  # today's strings have 10 to 12 characters

_MAPPING_STATES: dict[Any, ConsentState] = {"granted": "granted", "denied": "denied"}
_SIGNAL_SET = frozenset(CONSENT_SIGNALS)


def decode_gcs(value: str) -> dict[str, ConsentState]:
    """``G1xy`` -> ad_storage from x, analytics_storage from y; anything else -> {}."""
    if not isinstance(value, str) or len(value) != 4 or not value.startswith("G1"):
        return {}
    out: dict[str, ConsentState] = {}
    ad = _GCS_STATES.get(value[2])
    if ad is not None:
        out["ad_storage"] = ad
    analytics = _GCS_STATES.get(value[3])
    if analytics is not None:
        out["analytics_storage"] = analytics
    return out


def decode_gcd(value: str) -> dict[str, ConsentState]:
    """The effective state of each signal a ``gcd`` string sets; malformed -> {}."""
    if not isinstance(value, str) or not 9 <= len(value) <= _GCD_MAX_LENGTH:
        return {}
    for i in _GCD_DIGIT_POSITIONS:
        if value[i] not in "0123456789":
            return {}
    out: dict[str, ConsentState] = {}
    for i, signal in _GCD_POSITIONS:
        state = _GCD_LETTERS.get(value[i])
        if state is not None:
            out[signal] = state
    return out


def consent_from_mapping(obj: object, field: str) -> Consent:
    """A JSON ``consent`` object: the four signals, "granted"/"denied" or true/false.

    ``null`` for a signal means the sender did not say (the default applies).
    Anything else is refused, naming ``field.<key>`` and never the value.
    """
    if not isinstance(obj, Mapping):
        raise BadRequest(400, "invalid consent", field=field)
    states: dict[str, ConsentState] = {}
    for key, value in obj.items():
        if key not in _SIGNAL_SET:
            raise BadRequest(400, "invalid consent", field=f"{field}.{_key_label(key)}")
        if value is None:
            continue
        if value is True:
            states[key] = "granted"
        elif value is False:
            states[key] = "denied"
        else:
            state = _MAPPING_STATES.get(value) if isinstance(value, str) else None
            if state is None:
                raise BadRequest(400, "invalid consent", field=f"{field}.{key}")
            states[key] = state
    return Consent(**states)


def _key_label(key: object) -> str:
    text = key if isinstance(key, str) else type(key).__name__
    return text if len(text) <= 64 else text[:64] + "..."


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """What ``apply_consent`` did: signals taken from the default, and field paths removed.

    Paths only, never values, so the decision can be logged and counted.
    """

    defaulted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


# Key names that suggest personal data, matched against the lower-cased key
# with separators kept ("customerEmail" -> "customeremail" still matches).
_PII_KEY = re.compile(
    r"e[-_ ]?mail"
    r"|(?<!i)(?<!smart)(?<!micro)(?<!head)(?<!ear)phone|mobile[-_ ]?(?:number|no)|(?:^|[-_ .])(?:tel|fax|cell)(?:$|[-_ .]|number|no)"
    r"|(?:first|last|sur|given|family|full|middle|maiden|customer|user|billing|shipping|contact|buyer)[-_ ]?name"
    r"|(?:^|[-_ .])[fl]name(?:$|[-_ .])"
    r"|street|address|postal|post[-_ ]?code|zip|(?:^|[-_ .])city(?:$|[-_ .])"
    r"|birth|(?:^|[-_ .])dob(?:$|[-_ .])|gender"
    r"|(?:^|[-_ .])ssn(?:$|[-_ .])|passport|national[-_ ]?id|tax[-_ ]?id"
)
_EMAIL_VALUE = re.compile(r"[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[A-Za-z]{2,}")
# Only the characters phone numbers are written with, and enough of them.
_PHONE_CHARS = re.compile(r"[0-9 ().+/-]{7,32}")
_PHONE_SEPARATED = re.compile(r"[ ()-]")


def _looks_like_phone(value: str) -> bool:
    if not _PHONE_CHARS.fullmatch(value):
        return False
    text = value.strip()
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+"):
        return 7 <= digits <= 15 and text.count("+") == 1      # international form
    if text.startswith("0") and not text.startswith("00"):
        return 9 <= digits <= 11 and "+" not in text          # national form with trunk 0
    if "+" in text:
        return False
    # Formatted national numbers without a trunk prefix, e.g. (555) 123-4567.
    # Bare digit strings are left alone: they are mostly ids and timestamps.
    return 10 <= digits <= 11 and _PHONE_SEPARATED.search(text) is not None


def _looks_personal(value: str) -> bool:
    return ("@" in value and _EMAIL_VALUE.search(value) is not None) or _looks_like_phone(value)


def _is_personal_key(key: object) -> bool:
    return isinstance(key, str) and _PII_KEY.search(key.lower()) is not None


def _scrub_dict(data: dict[Any, Any], prefix: str, removed: list[str], values: bool) -> None:
    doomed = None
    for key, value in data.items():
        if _is_personal_key(key) or (values and isinstance(value, str) and _looks_personal(value)):
            if doomed is None:
                doomed = []
            doomed.append(key)
        elif isinstance(value, dict):
            _scrub_dict(value, f"{prefix}.{key}", removed, values)
        elif isinstance(value, list):
            _scrub_list(value, f"{prefix}.{key}", removed, values)
    if doomed:
        for key in doomed:
            del data[key]
            removed.append(f"{prefix}.{key}")


def _scrub_list(data: list[Any], prefix: str, removed: list[str], values: bool) -> None:
    doomed = None
    for i, value in enumerate(data):
        if isinstance(value, str):
            if values and _looks_personal(value):
                if doomed is None:
                    doomed = []
                doomed.append(i)
        elif isinstance(value, dict):
            _scrub_dict(value, f"{prefix}[{i}]", removed, values)
        elif isinstance(value, list):
            _scrub_list(value, f"{prefix}[{i}]", removed, values)
    if doomed:
        for i in reversed(doomed):
            del data[i]
        removed.extend(f"{prefix}[{i}]" for i in doomed)


def apply_consent(event: Event, defaults: ConsentDefaults) -> ConsentDecision:
    """Fill missing signals from ``defaults`` and remove what the consent state forbids.

    Mutates ``event`` in place and says what it did.
    """
    consent = event.consent
    defaulted: list[str] = []
    for signal in CONSENT_SIGNALS:
        if getattr(consent, signal) is None:
            setattr(consent, signal, getattr(defaults, signal))
            defaulted.append(signal)

    removed: list[str] = []
    if consent.ad_user_data == "denied":
        if event.user_data is not None:
            event.user_data = None
            removed.append("user_data")
        if event.user_id is not None and _looks_personal(event.user_id):
            event.user_id = None
            removed.append("user_id")
        if event.extra:
            _scrub_dict(event.extra, "extra", removed, values=True)
        if event.user_properties:
            _scrub_dict(event.user_properties, "user_properties", removed, values=True)
        if event.items:
            # Item values are ids, names and prices: a long numeric SKU must not
            # pass for a phone number, so only names and email-shaped values count.
            for i, item in enumerate(event.items):
                if isinstance(item, dict):
                    _scrub_items_entry(item, f"items[{i}]", removed)

    if consent.ad_storage == "denied":
        if event.fbp is not None:
            event.fbp = None
            removed.append("fbp")
        if event.fbc is not None:
            event.fbc = None
            removed.append("fbc")

    return ConsentDecision(tuple(defaulted), tuple(removed))


def _scrub_items_entry(item: dict[str, Any], prefix: str, removed: list[str]) -> None:
    doomed = [
        key
        for key, value in item.items()
        if _is_personal_key(key) or (isinstance(value, str) and "@" in value and _EMAIL_VALUE.search(value))
    ]
    for key in doomed:
        del item[key]
        removed.append(f"{prefix}.{key}")
