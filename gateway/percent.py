"""Percent-decoding for query strings, strict about UTF-8, without the standard library's detours.

``urllib.parse.unquote`` splits its input on a regular expression of
non-ASCII runs and decodes piece by piece; a page view carries three
percent-encoded URLs, and that took a tenth of the time spent on a hit.
This reads the whole text as UTF-8 once, replaces each ``%XX`` from a table
and decodes once. A ``%`` not followed by two hex digits stays as it is, as
in ``unquote``.
"""

from __future__ import annotations

_HEX = "0123456789abcdefABCDEF"
_BYTE_OF: dict[bytes, bytes] = {
    (high + low).encode("ascii"): bytes([int(high + low, 16)]) for high in _HEX for low in _HEX
}


def unquote(text: str) -> str:
    """``%XX`` escapes decoded; raises ``UnicodeDecodeError`` when the bytes they make are not UTF-8."""
    if "%" not in text:
        return text
    parts = text.encode("utf-8", "surrogatepass").split(b"%")
    out = [parts[0]]
    append = out.append
    for part in parts[1:]:
        byte = _BYTE_OF.get(part[:2])
        if byte is None:
            append(b"%")
            append(part)
        else:
            append(byte)
            append(part[2:])
    return b"".join(out).decode("utf-8")


def unquote_plus(text: str) -> str:
    """As ``unquote``, with ``+`` read as a space first (form encoding)."""
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text)
