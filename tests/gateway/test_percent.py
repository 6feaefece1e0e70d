"""Percent-decoding agrees with the standard library's strict decoding, error for error."""

from __future__ import annotations

from urllib.parse import unquote as stdlib_unquote, unquote_plus as stdlib_unquote_plus

from hypothesis import given, settings, strategies as st

from gateway.percent import encode_component, encode_query, unquote, unquote_plus

# Backslashes and escape-like text too: the fast path hands ASCII text to Python's unicode_escape codec.
PIECES = list("%+aZ09fF\u00e9\u20ac =&\\x") + ["%C3", "%A9", "%c3%a9", "%e2%82%ac", "%ff", "%00", "%2", "%%", "%g1",
                                                "%2B", "%5C", "%5c", "\\x41", "\\N{DASH}", "\\u0041", "%0A", "%80"]
texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join) | st.text(max_size=30)


def outcome(fn, text):
    try:
        return fn(text)
    except UnicodeDecodeError:
        return UnicodeDecodeError


@settings(max_examples=1500)
@given(texts)
def test_unquote_matches_the_standard_library(text):
    assert outcome(unquote, text) == outcome(lambda t: stdlib_unquote(t, errors="strict"), text)
    assert outcome(unquote_plus, text) == outcome(lambda t: stdlib_unquote_plus(t, errors="strict"), text)


def test_examples():
    assert unquote_plus("Blue%20Mug+%E2%82%AC") == "Blue Mug \u20ac"
    assert unquote("100%") == "100%"
    assert outcome(unquote, "%C3") is UnicodeDecodeError
    assert unquote("a\\x41%5C%41\\N{DASH}") == "a\\x41\\A\\N{DASH}"  # backslashes stay text, escaped or not
    assert unquote("50%-off%20now") == "50%-off now"  # a % without two hex digits stays, the others are decoded


_URI_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")


def reference_encode_uri_component(text: str) -> str:
    """ECMA-262's Encode(string, uriUnreserved), character by character: the spec's algorithm, written plainly."""
    out = []
    for char in text:
        if char in _URI_UNRESERVED:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))  # a lone surrogate raises (URIError in JS)
    return "".join(out)


def encoded(fn, text):
    try:
        return fn(text)
    except UnicodeEncodeError:
        return UnicodeEncodeError


ENCODE_PIECES = list("aZ09-_.!~*'() %&=+/?#;:@,$[]\"<>\\^`{|}\x00\x7f\t\n\u00e9\u20ac\U0001f600\ud800")


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(ENCODE_PIECES), max_size=40).map("".join) | st.text(max_size=40))
def test_encode_component_matches_encode_uri_component(text):
    assert encoded(encode_component, text) == encoded(reference_encode_uri_component, text)


def test_encode_component_examples():
    # Values as browsers' encodeURIComponent gives them.
    assert encode_component("https://shop.example/mug?gclid=A&b=c d") == (
        "https%3A%2F%2Fshop.example%2Fmug%3Fgclid%3DA%26b%3Dc%20d")
    assert encode_component("Blue Mug \u20ac") == "Blue%20Mug%20%E2%82%AC"
    assert encode_component("it's(ok)!*~") == "it's(ok)!*~"
    assert encode_component("") == ""
    assert encode_component("\U0001f600") == "%F0%9F%98%80"


QUERY_PIECES = ENCODE_PIECES + ["\ue000", "\ue001", "\x00", "\x01", "&", "=", "%"]
pair_texts = st.lists(st.sampled_from(QUERY_PIECES), max_size=12).map("".join) | st.text(max_size=12)


@settings(max_examples=1000)
@given(st.lists(st.tuples(pair_texts, pair_texts), max_size=8))
def test_encode_query_matches_encoding_each_name_and_value(pairs):
    def reference(pairs):
        return "&".join(f"{reference_encode_uri_component(n)}={reference_encode_uri_component(v)}" for n, v in pairs)

    assert encoded(encode_query, pairs) == encoded(reference, pairs)


def test_encode_query_examples():
    assert encode_query([]) == ""
    assert encode_query([("dl", "https://x.example/?a=1&b=2"), ("en", "page_view")]) == (
        "dl=https%3A%2F%2Fx.example%2F%3Fa%3D1%26b%3D2&en=page_view")
    # The separators' stand-ins inside a value are escaped, not read as separators.
    assert encode_query([("a", "\ue000\ue001")]) == "a=%EE%80%80%EE%80%81"
    # The stand-ins the one-pass path uses for "=" and "&", inside a name or value, are escaped like any character.
    assert encode_query([("a\x00", "\x01b"), ("c", "d")]) == "a%00=%01b&c=d"
    assert encode_query([("a", "\x00")]) == "a=%00"
    assert encode_query([("dl", "https://x.example/caf\u00e9?q=100%"), ("en", "x")]) == (
        "dl=https%3A%2F%2Fx.example%2Fcaf%C3%A9%3Fq%3D100%25&en=x")
