"""GA4 items both ways: the client's ``read_item`` against a reference written from the wire rules, and the
``ga4`` tag's ``write_item`` read back by it.

The reference reader below follows the rules as ``clients.ga4`` and
``clients._ga4_values`` state them, one plain step at a time (a regular
expression per piece, ``urllib`` to decode), and shares no code with the
reader under test beyond the item tables. The round trip takes random items
as the pipeline hands them to the tag (text, numbers, values with no wire
form, custom parameters, ``~`` and ``%`` inside) and checks that the client
reads back what the tag meant, within the protocol's own limits: an empty
value is no value, a custom key cannot start with a digit (its digits would
read as part of the index), and an item with more than ten custom
parameters can be ambiguous (``v105``), so none is generated.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import unquote

from hypothesis import given, settings, strategies as st

from clients._ga4_values import ITEM_FLOAT, ITEM_INT, ITEM_TEXT, read_item
from gateway.errors import BadRequest
from tags._ga4_items import ITEM_CODES, write_item

PARAM = "pr3"

# -- the reference reader ----------------------------------------------------------------------------------------

# A number as the GA4 client accepts one: ASCII, optional sign, digits with an optional fraction (or a fraction
# alone), an optional exponent; 64 characters at most, and finite.
NUMBER_TEXT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
CUSTOM_PIECE = re.compile(r"([kv])([0-9]+)(.*)", re.DOTALL)


def reference_decode(text: str) -> str:
    if "%" not in text:
        return text
    try:
        decoded = unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(400, "not valid UTF-8", field=PARAM) from None
    if "\x00" in decoded:
        raise BadRequest(400, "parameter contains a NUL character", field=PARAM)
    return decoded


def reference_number(text: str, field: str) -> float:
    if len(text) > 64 or NUMBER_TEXT.fullmatch(text) is None:
        raise BadRequest(400, "not a number", field=field)
    number = float(text)
    if math.isinf(number) or math.isnan(number):
        raise BadRequest(400, "not a finite number", field=field)
    return number


def reference_integer(text: str, field: str) -> int:
    number = reference_number(text, field)
    if number != int(number) or abs(number) > 2**53:
        raise BadRequest(400, "not an integer", field=field)
    if len(text) <= 15 and text.isascii() and text.isdigit():
        return int(text)  # plain digits: exact, whatever float() would round
    return int(number)


def reference_item(text: str) -> dict[str, Any] | None:
    """``pr<n>``: ``~``-separated pieces, a two-letter code and its value each, or ``k<n><name>``/``v<n><value>``."""
    item: dict[str, Any] = {}
    keys: dict[str, str] = {}
    values: list[tuple[str, str]] = []  # (all the digits after the v, the rest)
    for piece in text.split("~"):
        if len(piece) < 3:
            continue  # a code without a value
        code, value = piece[:2], piece[2:]
        if code in ITEM_TEXT:
            item[ITEM_TEXT[code]] = reference_decode(value)
        elif code in ITEM_FLOAT:
            item[ITEM_FLOAT[code]] = reference_number(reference_decode(value), f"{PARAM}.{code}")
        elif code in ITEM_INT:
            item[ITEM_INT[code]] = reference_integer(reference_decode(value), f"{PARAM}.{code}")
        else:
            custom = CUSTOM_PIECE.fullmatch(piece)
            if custom is None:
                continue  # a code nobody knows
            letter, digits, rest = custom.groups()
            if letter == "k":
                keys[digits] = rest  # a k piece's index is all its digits; a later one replaces an earlier one
            else:
                values.append((digits, rest))
    used: set[str] = set()
    for digits, rest in values:
        # v105 is v1 + "05", v10 + "5" or v105 + "": the longest index with a key not used yet.
        for length in range(len(digits), 0, -1):
            index = digits[:length]
            if index in keys and index not in used:
                used.add(index)
                key = reference_decode(keys[index])
                if key:
                    value = reference_decode(digits[length:] + rest)
                    if key not in item:  # a standard field wins
                        item[key] = value
                break
    return item or None


def outcome(read, text: str) -> Any:
    try:
        item = read(text)
    except BadRequest as exc:
        return ("400", exc.error, exc.field)
    return None if item is None else [(key, type(value), value) for key, value in item.items()]


CODES = [*ITEM_TEXT, *ITEM_FLOAT, *ITEM_INT]
custom_codes = st.builds(lambda letter, index: f"{letter}{index}", st.sampled_from("kv"),
                         st.integers(0, 12) | st.sampled_from([105, 1000, 7, 10]))
codes = (st.sampled_from(CODES) | custom_codes
         | st.sampled_from(["", "k", "v", "kx", "vz", "zz", "p", "PR", "ID", "ｉd", "é", "k٣", "c9"]))
numbers = (st.integers(-10**20, 10**20).map(str) | st.floats(allow_nan=True).map(repr)
           | st.sampled_from(["12.50", "1e3", "1E+3", ".5", "5.", ".", "+1", "-0", "0015", "1_000", " 1", "1 ", "١",
                              "nan", "inf", "-inf", "1e400", "9" * 64, "9" * 65, "9007199254740993", "0x1A", "1e-400"]))
values = (numbers | st.text(max_size=8)
          | st.sampled_from(["%7E", "%25", "%C3%A9", "%ff", "%00", "%", "%4", "%zz", "a%2", "%E2%82", "~", "Mug%20No.%201"]))
pieces = st.builds(lambda code, value: code + value, codes, values | st.just(""))
item_texts = st.lists(pieces, max_size=10).map("~".join)


@settings(max_examples=3000)
@given(item_texts)
def test_read_item_reads_as_the_wire_rules_say(text):
    assert outcome(lambda t: read_item(t, PARAM), text) == outcome(reference_item, text)


# -- the round trip: what the tag writes, the client reads back ------------------------------------------------

READ_AS = {**{field: "text" for field in ITEM_TEXT.values()}, **{field: "float" for field in ITEM_FLOAT.values()},
           **{field: "integer" for field in ITEM_INT.values()}}
assert set(READ_AS) == set(ITEM_CODES)  # the tag writes every field the client reads, as the same field

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12) | st.sampled_from(
    ["~", "%", "%25", "%7E", "a~b%c", "100%", "~~", "12.5", "k0x", "v0y"])
no_wire_form = st.none() | st.booleans() | st.just({"a": 1}) | st.just([1, 2])
scalars = texts | st.integers(-10**18, 10**18) | st.floats(allow_nan=False, allow_infinity=False)


def field_values(field: str) -> st.SearchStrategy[Any]:
    kind = READ_AS[field]
    if kind == "float":
        return (st.integers(-10**15, 10**15) | st.floats(-1e15, 1e15, allow_nan=False)) | no_wire_form
    if kind == "integer":
        return st.integers(-2**53, 2**53) | st.integers(-10**6, 10**6).map(float) | no_wire_form
    return scalars | no_wire_form


standard = st.sampled_from(sorted(ITEM_CODES)).flatmap(lambda field: st.tuples(st.just(field), field_values(field)))
custom_keys = texts.filter(lambda key: key and not key[0].isdigit() and key not in ITEM_CODES)
custom = st.tuples(custom_keys, scalars | no_wire_form)


@st.composite
def items(draw) -> dict[str, Any]:
    pairs = draw(st.lists(standard | custom, max_size=14))
    item: dict[str, Any] = {}
    for key, value in pairs:
        item.setdefault(key, value)
    customs = [key for key in item if key not in ITEM_CODES and item[key] is not None
               and not isinstance(item[key], (bool, dict, list))]
    for key in customs[10:]:
        del item[key]  # at most ten custom parameters: v0 ... v9, never an ambiguous index
    return item


def text_of(value: Any) -> str:
    """A value as gtag.js writes it: integral numbers without a fraction."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def meant(item: dict[str, Any]) -> dict[str, Any] | None:
    """What the client should read back: the standard fields in order, then the custom parameters."""
    fields: dict[str, Any] = {}
    customs: dict[str, Any] = {}
    for key, value in item.items():
        if value is None or isinstance(value, (bool, dict, list)):
            continue
        text = text_of(value)
        if not text:
            continue  # an empty piece says nothing
        kind = READ_AS.get(key)
        if kind is None:
            customs[key] = text
        elif kind == "float":
            fields[key] = float(value)
        elif kind == "integer":
            fields[key] = int(value)
        else:
            fields[key] = text
    return {**fields, **customs} or None


@settings(max_examples=2000)
@given(items())
def test_an_item_the_tag_writes_reads_back_as_it_was_meant(item):
    written = write_item(item)
    read = read_item(written, PARAM)
    want = meant(item)
    assert read == want
    if read is not None:
        assert list(read) == list(want)  # the same order
        assert [type(value) for value in read.values()] == [type(value) for value in want.values()]


@settings(max_examples=1000)
@given(items())
def test_the_tag_escapes_every_tilde_and_percent_inside_a_piece(item):
    written = write_item(item)
    pieces = written.split("~") if written else []
    meant_pieces = [key for key, value in item.items()
                    if value is not None and not isinstance(value, (bool, dict, list))]
    customs = sum(key not in ITEM_CODES for key in meant_pieces)
    assert len(pieces) == len(meant_pieces) + customs  # a custom parameter is two pieces, k<n> and v<n>
    assert all(re.fullmatch(r"[^%]*(%(25|7E)[^%]*)*", piece) for piece in pieces)
