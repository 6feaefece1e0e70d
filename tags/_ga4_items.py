"""The ``ga4`` tag's items: each item of the event as the ``pr<n>`` value gtag.js writes for it.

``id<id>~nm<name>~...~k0<key>~v0<value>``: a standard field as its two-letter
code and its text, any other key as a ``k<n>``/``v<n>`` pair numbered from 0;
objects, lists, booleans and None have no wire form and are left out. A
``~`` or ``%`` inside a key or value is escaped once more (``%7E``, ``%25``),
so the GA4 client can split an item before it decodes the pieces.

Most items have neither character anywhere: the pieces are written without
looking, joined, and the joined text is checked once (no ``%``, and exactly
one ``~`` between each two pieces); an item that fails the check is written
again by ``_escaped``, piece by piece. Strings, integers and floats are told
apart by their exact type; anything else (a subclass among them) takes the
plain ``isinstance`` path.
"""

from __future__ import annotations

from typing import Any

ITEM_CODES = {
    "item_id": "id", "item_name": "nm", "item_brand": "br", "item_category": "ca", "item_category2": "c2",
    "item_category3": "c3", "item_category4": "c4", "item_category5": "c5", "item_variant": "va",
    "coupon": "cp", "affiliation": "af", "item_list_id": "li", "item_list_name": "ln", "location_id": "lo",
    "creative_name": "cn", "creative_slot": "cs", "promotion_id": "pi", "promotion_name": "pn",
    "price": "pr", "discount": "ds", "quantity": "qt", "index": "lp",
}


def write_item(item: dict[str, Any]) -> str:
    """The ``pr<n>`` value of one item (module docstring)."""
    pieces = []
    custom = 0
    for key, value in item.items():
        kind = type(value)
        if kind is str:
            text = value
        elif kind is float:
            text = str(int(value)) if value.is_integer() else repr(value)
        elif kind is int:
            text = str(value)
        else:
            text = _text(value)
            if text is None:
                continue
        try:
            pieces.append(ITEM_CODES[key] + text)
        except KeyError:
            if type(key) is not str:
                return _escaped(item)
            pieces.append(f"k{custom}{key}")
            pieces.append(f"v{custom}{text}")
            custom += 1
    if not pieces:
        return ""
    joined = "~".join(pieces)
    if "%" in joined or joined.count("~") != len(pieces) - 1:
        return _escaped(item)
    return joined


def _escaped(item: dict[str, Any]) -> str:
    """``write_item``'s answer, each key and value escaped on its own."""
    pieces = []
    custom = 0
    for key, value in item.items():
        text = _text(value)
        if text is None:
            continue
        code = ITEM_CODES.get(key)
        if code is not None:
            pieces.append(code + escape_piece(text))
        else:
            pieces.append(f"k{custom}{escape_piece(key)}")
            pieces.append(f"v{custom}{escape_piece(text)}")
            custom += 1
    return "~".join(pieces)


def _text(value: object) -> str | None:
    """A value's text in an item; None for what has no wire form."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return repr(value) if isinstance(value, float) else str(value)
    return str(value)


def escape_piece(text: str) -> str:
    return text.replace("%", "%25").replace("~", "%7E") if ("%" in text or "~" in text) else text
