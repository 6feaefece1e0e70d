"""Percent-decoding and -encoding for query strings, strict about UTF-8, without the standard library's detours.

``urllib.parse.unquote`` splits its input on a regular expression of
non-ASCII runs and decodes piece by piece; a page view carries three
percent-encoded URLs, and that took a tenth of the time spent on a hit.
This reads the whole text as UTF-8 once, replaces each ``%XX`` from a table
and decodes once. A ``%`` not followed by two hex digits stays as it is, as
in ``unquote``.

``encode_component`` is JavaScript's ``encodeURIComponent``, which is how
gtag.js writes every parameter name and value and so how the ``ga4`` tag
writes them back. ``urllib.parse.quote`` checks its ``safe`` argument,
encodes and then builds the result byte by byte in a Python comprehension;
for ASCII text this decides with ``str.isalnum`` or one regular expression
that a name or value needs nothing, and otherwise replaces each character to
escape, once per distinct character (a URL holds a handful: ``:/?=&``).
"""

from __future__ import annotations

import codecs
import re

_unicode_escape_decode = codecs.unicode_escape_decode
_HEX = "0123456789abcdefABCDEF"
_BYTE_OF: dict[bytes, bytes] = {
    (high + low).encode("ascii"): bytes([int(high + low, 16)]) for high in _HEX for low in _HEX
}


def unquote(text: str) -> str:
    """``%XX`` escapes decoded; raises ``UnicodeDecodeError`` when the bytes they make are not UTF-8.

    ASCII text whose every ``%`` starts an escape (nearly every query) is
    decoded by Python's own codecs in C: each ``%`` becomes ``\\x`` (the
    text's own backslashes doubled first, so that no other escape exists),
    ``unicode_escape`` turns each ``\\xXX`` into the character of that byte,
    and the bytes are read as UTF-8. Four C passes cost half of the loop
    below. A ``%`` without two hex digits makes ``unicode_escape`` fail, and
    the loop, which keeps such a ``%`` as it is, decides. The codec is
    called as a function (``codecs.unicode_escape_decode``, which takes the
    ASCII text as it is): ``bytes.decode("unicode_escape")`` looks the codec
    up by its name on every call, which cost a third of a short decode.
    """
    if "%" not in text:
        return text
    if text.isascii():
        try:
            escaped = text.replace("\\", "\\\\").replace("%", "\\x") if "\\" in text else text.replace("%", "\\x")
            return _unicode_escape_decode(escaped)[0].encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            pass  # a lone % (kept as it is below) or bytes that are not UTF-8 (raised below)
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


# What encodeURIComponent leaves as it is (ECMA-262, "uriUnreserved": letters, digits and -_.!~*'()).
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()"
_UNRESERVED_SET = frozenset(_UNRESERVED)
_PLAIN = re.compile(r"[A-Za-z0-9\-_.!~*'()]*")
# Byte -> its text in the output: itself when unreserved, else %XX.
_ESCAPE: tuple[str, ...] = tuple(chr(b) if chr(b) in _UNRESERVED_SET else f"%{b:02X}" for b in range(256))
_escape_byte = _ESCAPE.__getitem__


def encode_component(text: str) -> str:
    """``text`` percent-encoded as ``encodeURIComponent`` does: UTF-8 bytes, uppercase hex.

    Raises ``UnicodeEncodeError`` for a lone surrogate, where JavaScript throws ``URIError``.
    """
    if not text.isascii():
        return "".join(map(_escape_byte, text.encode("utf-8")))
    if text.isalnum() or _PLAIN.fullmatch(text):
        return text  # nothing to escape: most names and values (isalnum is the cheapest test, and often enough)
    if "%" in text:
        text = text.replace("%", "%25")  # first, so that no escape written below is escaped again
    for char in set(text).difference(_UNRESERVED_SET, "%"):
        text = text.replace(char, _ESCAPE[ord(char)])
    return text


def encode_query(pairs: list[tuple[str, str]]) -> str:
    """``name=value&...`` with every name and value through ``encode_component``.

    One pass over the whole text rather than a call per name and value (a
    page view has about sixty): the pairs are joined with two control
    characters standing for ``=`` and ``&``, the joined text is escaped once,
    and the stand-ins become the separators last. The stand-ins are kept out
    of the escaping only when the joined text holds exactly as many of them as
    the separators it needs: a name or value that holds one itself takes the
    per-piece path, where it is escaped like any other character.
    """
    if not pairs:
        return ""
    joined = _PAIR.join(map(_EQUALS.join, pairs))  # str.join of each (name, value): no Python frame per pair
    if joined.count(_EQUALS) != len(pairs) or joined.count(_PAIR) != len(pairs) - 1:
        return "&".join([f"{encode_component(name)}={encode_component(value)}" for name, value in pairs])
    raw = joined.encode("utf-8")
    # Non-ASCII text: its UTF-8 bytes, one character each, so that each byte is escaped on its own below.
    text = joined if len(raw) == len(joined) else raw.decode("latin-1")
    # The bytes left once every byte kept as it is went: bytes.translate deletes from a 256-entry table, a
    # quarter of str.translate's cost, which looks each character up in a dict.
    found = raw.translate(None, _KEPT_BYTES)
    if found:
        escaped = set(found)
        if _PERCENT in escaped:
            text = text.replace("%", "%25")  # first, so that no escape written below is escaped again
            escaped.discard(_PERCENT)
        for byte in escaped:
            text = text.replace(chr(byte), _ESCAPE[byte])
    return text.replace(_EQUALS, "=").replace(_PAIR, "&")


# Stand-ins for the separators while the joined pairs are escaped (control characters: rare in a name or value).
_EQUALS, _PAIR = "\x00", "\x01"
# What encodeURIComponent keeps, and the stand-ins: the bytes ``encode_query`` deletes to find what to escape.
_KEPT_BYTES = (_UNRESERVED + _EQUALS + _PAIR).encode("ascii")
_PERCENT = ord("%")
