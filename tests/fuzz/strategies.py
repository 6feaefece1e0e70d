"""Hostile inputs: values a buggy page, a broken order system or an attacker could send.

Each strategy mixes the plausible (so examples get past the first check and
reach the ledger, consent and the tags) with the nasty: NULs, broken
percent-escapes, bytes that are not UTF-8, numbers past float range,
dates at the ends of the calendar, deep nesting, huge strings.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

NASTY_TEXT = [
    "", " ", "\t", "\x00", "a\x00b", "%00", "%", "%%", "%zz", "%e2%82", "%ff%fe", "+", "&", "=", "~", "~~", ".",
    "nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e-400", "9" * 40, "-0", "0x10", "1_000",
    " 12 ", "１２３", "١٢", "1,5", "1.", ".5", "+.5e-3", "\u202e", "\ufeff", "null", "true", "[]", "{}",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "0001-01-01", "9999-12-31T23:59:59",
    "2026-04-23T14:31:09+02:00", "2026-04-23T14:31:09Z", "2026-02-30T10:00:00Z", "yesterday",
    "jane.doe@example.com", "+49 170 5550199", "G111", "G1--", "G100", "13r3r3r2r5l1", "11p1p1p1p5",
    "EUR", "eur", "EURO", "€€€", "Cj0-test-gclid", "x" * 300,
]

def mostly(plausible: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """``plausible`` ``odds`` times out of ``odds + 1``, else ``hostile``.

    Deep enough to reach the code that reads a value, nasty enough to hurt it.
    """
    # sampled_from, not integers: hypothesis draws boundary integers (0) far more often than 1 in odds + 1
    return st.sampled_from([False] * odds + [True]).flatmap(lambda bad: hostile if bad else plausible)


plain = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
text = mostly(plain, st.one_of(st.text(max_size=40), st.sampled_from(NASTY_TEXT)))
big_ints = st.one_of(st.integers(), st.sampled_from([2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]))
floats = st.floats(allow_nan=False, allow_infinity=False)
numberish = st.one_of(big_ints, floats, st.decimals(allow_nan=False, allow_infinity=False).map(str), text)


def iso_times() -> st.SearchStrategy[str]:
    """ISO 8601 times, often near the ends of what datetime can hold, with and without an offset."""
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=st.none() | offsets
    )
    edges = st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), datetime(1970, 1, 1)]).flatmap(
        lambda d: offsets.map(lambda tz: d.replace(tzinfo=tz))
    )
    return st.one_of(moments, edges).map(lambda d: d.isoformat()) | st.sampled_from(NASTY_TEXT)


def recent_times(naive: bool = False) -> st.SearchStrategy[str]:
    """ISO 8601 times of the last years, as order systems send them (naive: without an offset, as WooCommerce's *_gmt)."""
    offsets = st.sampled_from([0, 60, 120, -300, 330, -600]).map(lambda m: timezone(timedelta(minutes=m)))
    moments = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1),
                           timezones=st.none() if naive else offsets)
    return moments.map(lambda d: d.isoformat(timespec="seconds"))


json_scalars = st.one_of(st.none(), st.booleans(), big_ints, floats, text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def deeply_nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """An object nested ``depth`` levels deep, objects and lists alternating."""
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return {"k": value}


nested = st.integers(30, 600).map(deeply_nested)
hostile_json = st.sampled_from([json_values] * 5 + [text] * 2 + [nested]).flatmap(lambda strategy: strategy)


def dumps(value: Any) -> bytes:
    """JSON as a careless sender writes it: big integers kept, NaN and Infinity as bare words."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def objects(
    draw: st.DrawFn,
    fields: dict[str, st.SearchStrategy[Any]],
    required: tuple[str, ...] = (),
    max_hostile: int = 2,
) -> dict[str, Any]:
    """An object of known fields, each drawn from its plausible strategy except at most ``max_hostile``
    drawn from anything at all, plus now and then an unknown key.

    Mostly plausible on purpose: an example with one bad field in an
    otherwise good object reaches the code that reads that field.
    """
    keys = [k for k in fields if k in required or draw(st.booleans())]
    count = min(max_hostile, len(keys), draw(st.sampled_from([0] * 5 + [1] * 2 + [2])))
    hostile = set(draw(st.lists(st.sampled_from(keys), min_size=count, max_size=count, unique=True))) if keys else set()
    out = {k: draw(st.one_of(hostile_json, numberish)) if k in hostile else draw(fields[k]) for k in keys}
    if draw(st.sampled_from([False] * 4 + [True])):
        out.update(draw(st.dictionaries(text, hostile_json, max_size=2)))
    return out


# -- bodies on the wire ------------------------------------------------------------------------


@st.composite
def mangled(draw: st.DrawFn, body: bytes) -> bytes:
    """The body as sent, or truncated, padded, re-encoded, or with bytes flipped."""
    how = draw(st.sampled_from(["as_is"] * 12 + ["truncate", "latin1", "utf16", "flip", "pad", "bom"]))
    if how == "truncate" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "latin1":
        return body.decode("utf-8", "replace").encode("latin-1", "replace")
    if how == "utf16":
        return body.decode("utf-8", "replace").encode("utf-16")
    if how == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
    if how == "pad":
        return body + draw(st.sampled_from([b"\x00", b" " * 2000, b"\n{}", b"\xff"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    return body


def encode_query(pairs: list[tuple[str, str, str]]) -> bytes:
    """(key, value, how) -> ``a=1&b=2``; ``how`` is quoted, raw (UTF-8 as is) or latin1 (bytes that are not UTF-8)."""
    parts = []
    for key, value, how in pairs:
        if how == "quoted":
            parts.append(f"{quote(key, safe='.')}={quote(value, safe='')}".encode())
        elif how == "raw":
            parts.append(key.encode("utf-8", "replace") + b"=" + value.encode("utf-8", "replace"))
        else:
            parts.append(key.encode("latin-1", "replace") + b"=" + value.encode("latin-1", "replace"))
    return b"&".join(parts)


ENCODINGS = st.sampled_from(["quoted"] * 10 + ["raw", "latin1"])


@st.composite
def query_of(draw: st.DrawFn, params: dict[str, Any]) -> bytes:
    """A parameter dict as a query string, each value encoded as ``ENCODINGS`` says."""
    return encode_query([(k, str(v), draw(ENCODINGS)) for k, v in params.items()])


def query_pairs(keys: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """``a=1&b=2`` of any keys and values, encoded in any of the ways."""
    return st.lists(st.tuples(keys, values, ENCODINGS), max_size=14).map(encode_query)
