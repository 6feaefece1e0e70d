"""What the GA4 client does with each parameter of a hit, by the parameter's name.

``clients.ga4._event`` walks every parameter of a hit; what it does with one
(copy it to an event field, read it as ``ep.*``/``epn.*``/``up.*``, collect an
item, keep a protocol parameter, pass it by) depends on the name alone. A
page sends the same thirty-odd names in every hit, so each name is read once
(``kind_of``) and then found in ``KINDS``: (kind, what the kind needs). The
kinds are distinct objects compared with ``is``.
"""

from __future__ import annotations

from typing import Any

# Parameters copied to an event field as they are.
TEXT_FIELDS = {
    "cid": "client_id",
    "uid": "user_id",
    "dl": "page_location",
    "dr": "page_referrer",
    "dt": "page_title",
    "ul": "language",
    "sr": "screen_resolution",
}
# Parameters the walk passes by because they are read by name (en, tid, cu, em, sid, sct, npa, gcs, gcd)
# or say nothing (v is always 2). Every other protocol parameter gtag.js adds is kept under its sGTM name
# by ``gateway.ga4_params``.
READ_ELSEWHERE = frozenset({"en", "tid", "cu", "em", "sid", "sct", "npa", "gcs", "gcd", "v"})
# Event parameters with their own event field, whichever prefix brings them.
ID_PARAMS = frozenset({"transaction_id", "event_id"})
NUMBER_PARAMS = frozenset({"value", "tax", "shipping"})
MAX_ITEMS_INDEX_DIGITS = 3  # pr1 ... pr999; GA4 itself keeps 200

PROTOCOL, FIELD, SKIP, EP_TEXT, ITEM, EPN_NUMBER, EP_NUMBER, EP_ID, EPN_ID, CURRENCY, EPN_OTHER, \
    USER_TEXT, USER_NUMBER = (f"kind:{n}" for n in range(13))  # distinct objects, compared with ``is``
KINDS: dict[str, tuple[str, Any]] = {}
# Bounds, so that names a hostile client makes up cost at most 4,096 names of 64 characters: past them, a name
# is read each time.
MAX_KINDS = 4096
MAX_KIND_NAME = 64


def kind_of(key: str) -> tuple[str, Any]:
    """How the GA4 client treats the parameter ``key``, remembered for the next hit while there is room."""
    kind = _classify(key)
    if len(KINDS) < MAX_KINDS and len(key) <= MAX_KIND_NAME:
        KINDS[key] = kind
    return kind


def _classify(key: str) -> tuple[str, Any]:
    """(kind, what it needs) for the name ``key``: the rules of ``clients.ga4``'s module docstring."""
    if key in READ_ELSEWHERE:
        return SKIP, None
    field = TEXT_FIELDS.get(key)
    if field is not None:
        return FIELD, field
    prefix, dot, pname = key.partition(".")
    if dot:
        if not pname:
            return SKIP, None
        if prefix == "ep" or prefix == "epn":
            text = prefix == "ep"
            if pname in ID_PARAMS:
                return (EP_ID, pname) if text else (EPN_ID, (pname, f"ep.{pname}"))
            if pname in NUMBER_PARAMS:
                return (EP_NUMBER, (pname, f"epn.{pname}")) if text else (EPN_NUMBER, pname)
            if pname == "currency":
                return CURRENCY, None
            return (EP_TEXT, pname) if text else (EPN_OTHER, pname)
        if prefix == "up":
            return USER_TEXT, pname
        if prefix == "upn":
            return USER_NUMBER, pname
        return PROTOCOL, None  # sst.* and whatever else gtag.js adds with a dot
    if key.startswith("pr") and 2 < len(key) <= 2 + MAX_ITEMS_INDEX_DIGITS:
        index = key[2:]
        if index.isascii() and index.isdigit():
            return ITEM, int(index)
    return PROTOCOL, None
