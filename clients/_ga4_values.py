"""The typed values inside a GA4 hit: numbers, currency codes, items (``pr<n>``) and hashed user data (``em``).

Each reader takes the parameter's decoded text and the name to put in a 400
(never the value), and answers the value in the event's own form. The wire
rules are in ``clients.ga4``'s docstring; the GA4 client calls these for
every parameter that carries more than text.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from gateway.errors import BadRequest
from gateway.event import Address, UserData
from gateway.percent import unquote

ITEM_TEXT = {
    "id": "item_id",
    "nm": "item_name",
    "br": "item_brand",
    "ca": "item_category",
    "c2": "item_category2",
    "c3": "item_category3",
    "c4": "item_category4",
    "c5": "item_category5",
    "va": "item_variant",
    "cp": "coupon",
    "af": "affiliation",
    "li": "item_list_id",
    "ln": "item_list_name",
    "lo": "location_id",
    "cn": "creative_name",
    "cs": "creative_slot",
    "pi": "promotion_id",
    "pn": "promotion_name",
}
ITEM_FLOAT = {"pr": "price", "ds": "discount"}
ITEM_INT = {"qt": "quantity", "lp": "index"}
_DIGITS = "0123456789"
# Item piece -> (field, kind), looked up by the piece's first character, then its second: one-character strings
# are shared objects with their hashes kept, so neither lookup allocates or hashes (slicing the code out did both).
_TEXT, _FLOAT, _INTEGER, _CUSTOM_KEY, _CUSTOM_VALUE = None, 1, 2, 3, 4
_ITEM_PIECES: dict[str, dict[str, tuple[str | None, int | None]]] = {}
for _codes, _kind in ((ITEM_TEXT, _TEXT), (ITEM_FLOAT, _FLOAT), (ITEM_INT, _INTEGER)):
    for _code, _field in _codes.items():
        _ITEM_PIECES.setdefault(_code[0], {})[_code[1]] = (_field, _kind)
for _digit in _DIGITS:
    _ITEM_PIECES.setdefault("k", {})[_digit] = (None, _CUSTOM_KEY)
    _ITEM_PIECES.setdefault("v", {})[_digit] = (None, _CUSTOM_VALUE)
del _codes, _kind, _code, _field, _digit
# An item's integers are mostly small (quantity, list position): their text -> the number, what int() gives.
_SMALL_INTS = {str(n): n for n in range(1000)}

_EM_USER = {"em": "sha256_email_address", "pn": "sha256_phone_number"}
_EM_ADDRESS = {"fn0": "sha256_first_name", "ln0": "sha256_last_name", "sa0": "sha256_street"}

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
INT = re.compile(r"[+-]?\d{1,15}", re.ASCII)
_MAX_NUMBER_TEXT = 64
_MAX_SAFE_INT = 2**53  # beyond this a JSON number loses precision in every vendor's parser
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_B64URL_DIGEST = re.compile(r"[A-Za-z0-9_-]{43}=?")


def read_number(text: str, field: str) -> float:
    if len(text) > _MAX_NUMBER_TEXT or not _NUMBER.fullmatch(text):
        raise BadRequest(400, "not a number", field=field)
    number = float(text)
    if not math.isfinite(number):
        raise BadRequest(400, "not a finite number", field=field)
    return number


def read_json_number(text: str, field: str) -> int | float:
    """A number for ``extra``: integers stay integers, so ``epn.count=3`` reads as 3."""
    if INT.fullmatch(text):
        return int(text)
    return read_number(text, field)


def read_integer(text: str, field: str) -> int:
    if len(text) <= 15 and text.isdigit() and text.isascii():
        return int(text)  # what float() and the checks below give for plain digits, without them
    number = read_number(text, field)
    if not number.is_integer() or abs(number) > _MAX_SAFE_INT:
        raise BadRequest(400, "not an integer", field=field)
    return int(number)


def read_currency(text: str, field: str) -> str:
    code = text.upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise BadRequest(400, "not a 3-letter currency code", field=field)
    return code


def read_item(text: str, param: str) -> dict[str, Any] | None:
    """One ``pr<n>`` parameter: ``~``-separated pieces, each a two-letter code (or ``k<n>``/``v<n>``) and a value.

    A piece shorter than three characters says nothing; a code no table
    holds is passed over. Read with str.split and a two-step table lookup per
    piece (``_ITEM_PIECES``); a piece is decoded only when it holds a ``%``,
    and the common numbers (plain digits, one dot at most) are read without
    the checks of ``read_number``, whose answers they are.
    """
    item: dict[str, Any] = {}
    custom_keys: dict[str, str] | None = None
    custom_values: list[str] | None = None
    escaped = "%" in text
    for piece in text.split("~"):
        value = piece[2:]
        if not value:  # a code without a value says nothing
            continue
        try:
            field, kind = _ITEM_PIECES[piece[0]][piece[1]]
        except KeyError:
            continue
        if kind is _TEXT:
            if escaped and "%" in value:
                value = decode_piece(value, param)
            item[field] = value
        elif kind == _FLOAT:
            if escaped and "%" in value:
                value = decode_piece(value, param)
            if value.replace(".", "", 1).isdigit() and value.isascii() and len(value) <= _MAX_NUMBER_TEXT:
                item[field] = float(value)  # what read_number answers for these: they match _NUMBER, and are finite
            else:
                item[field] = read_number(value, f"{param}.{piece[:2]}")
        elif kind == _INTEGER:
            if escaped and "%" in value:
                value = decode_piece(value, param)
            number = _SMALL_INTS.get(value)
            item[field] = read_integer(value, f"{param}.{piece[:2]}") if number is None else number
        elif kind == _CUSTOM_KEY:
            name = piece[1:].lstrip(_DIGITS)
            if custom_keys is None:
                custom_keys = {}
            custom_keys[piece[1:len(piece) - len(name)]] = name
        else:
            if custom_values is None:
                custom_values = []
            custom_values.append(piece[1:])
    if custom_keys and custom_values:
        for key, value in pair_custom(custom_keys, custom_values):
            key = decode_piece(key, param)
            if key:
                item.setdefault(key, decode_piece(value, param))  # a standard field wins over a custom one
    return item or None


def pair_custom(keys: dict[str, str], tails: list[str]) -> list[tuple[str, str]]:
    """Match ``v<n>`` pieces to ``k<n>`` pieces; the longest index with a key wins."""
    pairs = []
    taken: set[str] = set()
    for tail in tails:
        digits = len(tail) - len(tail.lstrip(_DIGITS))
        for n in range(digits, 0, -1):
            index = tail[:n]
            if index in keys and index not in taken:
                taken.add(index)
                pairs.append((keys[index], tail[n:]))
                break
    return pairs


def decode_piece(text: str, param: str) -> str:
    if "%" not in text:
        return text
    try:
        decoded = unquote(text)
    except UnicodeDecodeError:
        raise BadRequest(400, "not valid UTF-8", field=param) from None
    if "\x00" in decoded:
        raise BadRequest(400, "parameter contains a NUL character", field=param)
    return decoded


def read_user_data(text: str) -> UserData | None:
    user: dict[str, str] = {}
    address: dict[str, str] = {}
    for piece in text.split("~"):
        key, dot, value = piece.partition(".")
        if not dot:
            continue
        field = _EM_USER.get(key)
        target = user
        if field is None:
            field = _EM_ADDRESS.get(key)
            target = address
            if field is None:
                continue
        digest = read_digest(value)
        if digest is not None:
            target[field] = digest
    if not user and not address:
        return None
    return UserData(**user, address=Address(**address) if address else None)


def read_digest(text: str) -> str | None:
    """A SHA-256 digest in hex or base64url -> lowercase hex; anything else -> None."""
    if len(text) == 64 and _HEX_DIGEST.fullmatch(text):
        return text.lower()
    if _B64URL_DIGEST.fullmatch(text):
        try:
            raw = base64.urlsafe_b64decode(text[:43] + "=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) == 32:
            return raw.hex()
    return None
