"""Percent-decoding agrees with the standard library's strict decoding, error for error."""

from __future__ import annotations

from urllib.parse import unquote as stdlib_unquote, unquote_plus as stdlib_unquote_plus

from hypothesis import given, settings, strategies as st

from gateway.percent import unquote, unquote_plus

PIECES = list("%+aZ09fF\u00e9\u20ac =&") + ["%C3", "%A9", "%c3%a9", "%e2%82%ac", "%ff", "%00", "%2", "%%", "%g1", "%2B"]
texts = st.lists(st.sampled_from(PIECES), max_size=30).map("".join) | st.text(max_size=30)


def outcome(fn, text):
    try:
        return fn(text)
    except UnicodeDecodeError:
        return UnicodeDecodeError


@settings(max_examples=500)
@given(texts)
def test_unquote_matches_the_standard_library(text):
    assert outcome(unquote, text) == outcome(lambda t: stdlib_unquote(t, errors="strict"), text)
    assert outcome(unquote_plus, text) == outcome(lambda t: stdlib_unquote_plus(t, errors="strict"), text)


def test_examples():
    assert unquote_plus("Blue%20Mug+%E2%82%AC") == "Blue Mug \u20ac"
    assert unquote("100%") == "100%"
    assert outcome(unquote, "%C3") is UnicodeDecodeError
