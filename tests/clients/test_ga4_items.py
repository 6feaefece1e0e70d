"""The item parser (``pr<n>``, str.split-based) reads every item as the character-by-character parser it replaced."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from clients import _ga4_values as values
from gateway.errors import BadRequest

CODES = ["id", "nm", "br", "ca", "c2", "va", "pr", "ds", "qt", "lp", "k0", "v0", "k1", "v1", "k10", "v10", "v105",
         "k", "v", "zz", "kx", "v9"]
VALUES = ["SKU-1", "Mug%20No.%201", "12.5", "2", "-3", "1e3", "x", "", "%7E", "%C3%A9", "%ff", "0015", "1.5e400",
          "9007199254740993", "\u00e9", "%00"]
pieces = st.tuples(st.sampled_from(CODES), st.sampled_from(VALUES) | st.text(max_size=6)).map("".join)
items = st.lists(pieces, max_size=8).map("~".join)


def reference_item(text: str, param: str) -> dict[str, Any] | None:
    """The parser before this change, kept as written then (a loop over each index digit)."""
    item: dict[str, Any] = {}
    custom_keys: dict[str, str] | None = None
    custom_values: list[str] | None = None
    for piece in text.split("~"):
        if len(piece) < 3:
            continue
        code = piece[:2]
        head, second = piece[0], piece[1]
        if (head == "k" or head == "v") and "0" <= second <= "9":
            if head == "k":
                end = 2
                while end < len(piece) and "0" <= piece[end] <= "9":
                    end += 1
                if custom_keys is None:
                    custom_keys = {}
                custom_keys[piece[1:end]] = piece[end:]
            else:
                if custom_values is None:
                    custom_values = []
                custom_values.append(piece[1:])
            continue
        field = values.ITEM_TEXT.get(code)
        if field is not None:
            item[field] = values.decode_piece(piece[2:], param)
            continue
        field = values.ITEM_FLOAT.get(code)
        if field is not None:
            item[field] = values.read_number(values.decode_piece(piece[2:], param), f"{param}.{code}")
            continue
        field = values.ITEM_INT.get(code)
        if field is not None:
            number = values.read_number(values.decode_piece(piece[2:], param), f"{param}.{code}")
            if not number.is_integer() or abs(number) > 2**53:
                raise BadRequest(400, "not an integer", field=f"{param}.{code}")
            item[field] = int(number)
    if custom_keys and custom_values:
        pairs, taken = [], set()
        for tail in custom_values:
            digits = 0
            while digits < len(tail) and "0" <= tail[digits] <= "9":
                digits += 1
            for n in range(digits, 0, -1):
                index = tail[:n]
                if index in custom_keys and index not in taken:
                    taken.add(index)
                    pairs.append((custom_keys[index], tail[n:]))
                    break
        for key, value in pairs:
            key = values.decode_piece(key, param)
            if key:
                item.setdefault(key, values.decode_piece(value, param))
    return item or None


def outcome(fn, text):
    try:
        return fn(text, "pr1")
    except BadRequest as exc:
        return ("400", exc.error, exc.field)


@settings(max_examples=1500)
@given(items)
def test_item_parser_reads_as_the_reference(text):
    new, old = outcome(values.read_item, text), outcome(reference_item, text)
    assert new == old
    if isinstance(new, dict):
        assert list(new) == list(old)  # the same field order too
        assert [type(v) for v in new.values()] == [type(v) for v in old.values()]
