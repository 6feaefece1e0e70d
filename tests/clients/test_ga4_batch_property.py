"""A POST batch's events are each the event of a GET hit carrying the query string and that one body line.

That is what a batched hit means: gtag.js puts what the page's events share
in the query string and each event's own parameters on a body line, and the
client reads each line together with the query string. The reference here is
the GET path: one hit whose query string is the batch's query string, ``&``,
and the line, so the last value of a repeated name wins, at its first name's
place. Any shortcut in reading a batch (such as reading the query's part once
for all lines) has to keep this.

Parameters are drawn from a vocabulary that makes every kind of name meet
its partners: fields, protocol and system parameters, custom text and
numbers in both forms, ids in both forms, ``cu`` and ``ep.currency``,
items, user properties, consent, names the client skips, and a value that
does not read (``ep.value=abc``), which a partner on another line can spare.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from clients import ga4
from gateway.client import RawRequest
from gateway.errors import BadRequest
from gateway.event import Event

RECEIVED_AT = datetime(2024, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
CONFIG = ga4.Config(type="ga4")

# name -> values it may take (already URL-encoded, as on the wire)
VOCABULARY: dict[str, list[str]] = {
    "v": ["2"], "tid": ["G-ABC123XYZ", "G-OTHER1"], "cid": ["123.456", "9.9"], "uid": ["u-1", ""],
    "sid": ["1732360000", ""], "sct": ["3", "x"], "npa": ["1", ""], "gcs": ["G111", "G100", "G1--"],
    "gcd": ["13r3r3r2r5l1", "13p3p3p2p5l1"], "dl": ["https%3A%2F%2Fshop.example%2F%3Fgclid%3Dabc", ""],
    "dr": ["https%3A%2F%2Fref.example%2F"], "dt": ["Caf%C3%A9", "Home"], "ul": ["de-de"], "sr": ["1920x1080"],
    "en": ["page_view", "purchase", "scroll"], "_et": ["120", "x"], "_s": ["2", "3"], "_ss": ["1"], "_fv": ["1"],
    "_p": ["1732360000123"], "seg": ["1"], "uaa": ["x86"], "uamb": ["0", "1"], "sst.tft": ["1732"],
    "ep.page_type": ["home", "product"], "epn.page_type": ["3"], "ep.note": ["hello+world", ""],
    "epn.score": ["4.5", "7"], "ep.value": ["12.5", "", "abc"], "epn.value": ["49.9", ""], "epn.tax": ["1.5"],
    "ep.transaction_id": ["T-1", ""], "epn.transaction_id": ["77"], "ep.event_id": ["e-1"],
    "cu": ["EUR", "usd", ""], "ep.currency": ["GBP", ""], "pr1": ["idSKU-1~nmShoe~pr10.5~qt2", "idA"],
    "pr2": ["idSKU-2~caShoes"], "up.plan": ["pro", ""], "upn.age": ["33", ""], "ep.x-ga-page_id": ["7"],
    "em": ["tv.1~em.abc"], "gclid": ["g-1"], "_dbg": ["1"], "tfd": ["1000"],
}
NAMES = sorted(VOCABULARY)


def pairs(min_size: int, max_size: int) -> st.SearchStrategy[list[tuple[str, str]]]:
    pair = st.sampled_from(NAMES).flatmap(lambda name: st.tuples(st.just(name), st.sampled_from(VOCABULARY[name])))
    return st.lists(pair, min_size=min_size, max_size=max_size)


def encode(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{name}={value}" for name, value in params)


def read(method: str, query: str, body: str = "") -> list[dict[str, Any]] | tuple[str, Any]:
    raw = RawRequest(method, "/g/collect", query, {"user-agent": "Mozilla/5.0"}, body.encode(), "203.0.113.7",
                     RECEIVED_AT)
    try:
        result = ga4.parse(raw, CONFIG)
    except BadRequest as exc:
        return exc.error, exc.field
    for event in result.events:  # the client builds its events unvalidated: each passes validation
        assert Event.from_data(msgspec.to_builtins(event)) == event
    # The whole event, and the order of what holds an order (extra's keys reach the ga4 tag's wire in it).
    return [msgspec.structs.asdict(event) | {"extra order": list(event.extra)} for event in result.events]


@settings(max_examples=400, deadline=None)
@given(query=pairs(0, 14), lines=st.lists(pairs(0, 6), min_size=1, max_size=4))
def test_each_line_of_a_batch_is_the_get_hit_of_the_query_and_that_line(query, lines) -> None:
    batch = read("POST", encode(query), "\r\n".join(encode(line) for line in lines))
    singles = [read("GET", "&".join(filter(None, (encode(query), encode(line))))) for line in lines if line]
    if not singles:  # no line with a parameter: the query string alone is the hit
        singles = [read("GET", encode(query))]
    if isinstance(batch, tuple):  # refused: the first line the GET path refuses, for the same reason and name
        refused = next(single for single in singles if isinstance(single, tuple))
        assert batch == refused
        return
    assert batch == [single[0] for single in singles]


def test_a_batch_whose_lines_repeat_query_parameters_or_their_partners_reads_them_whole() -> None:
    query = "v=2&tid=G-ABC123XYZ&ep.value=12.5&cu=EUR&dt=Home"
    body = "en=a\r\nen=b&epn.value=49.9\r\nen=c&dt=Other&cu=\r\nen=d&ep.currency=GBP"
    events = ga4.parse(RawRequest("POST", "/g/collect", query, {}, body.encode(), "203.0.113.7", RECEIVED_AT),
                       CONFIG).events
    assert [(e.event_name, e.value, e.currency, e.page_title) for e in events] == [
        ("a", 12.5, "EUR", "Home"),   # the query's part as read once
        ("b", 49.9, "EUR", "Home"),   # epn.value beside the query's ep.value: the number form wins
        ("c", 12.5, None, "Other"),   # repeats dt and cu: the line's values, cu empty means none
        ("d", 12.5, "EUR", "Home"),   # ep.currency loses to the query's cu
    ]


@pytest.mark.parametrize("query,body,expected", [
    # cu on a line wins over the query's ep.currency, as it does in one hit whatever the order
    ("ep.currency=GBP", "en=a&cu=EUR\r\nen=b&cu=\r\nen=c", [("a", "EUR", None), ("b", "GBP", None),
                                                              ("c", "GBP", None)]),
    # epn.value on a line spares the query's unreadable ep.value; a line without it is refused for it
    ("ep.value=abc", "en=a&epn.value=49.9\r\nen=b&epn.value=5", [("a", None, 49.9), ("b", None, 5.0)]),
    # the query's epn.value wins over a line's ep.value; the query's ep.value loses to a line's epn.value
    ("epn.value=7&ep.tax=2", "en=a&ep.value=1&epn.tax=3", [("a", None, 7.0)]),
])
def test_a_line_with_the_partner_of_a_query_parameter_reads_as_the_whole_hit(query, body, expected) -> None:
    events = ga4.parse(RawRequest("POST", "/g/collect", "v=2&tid=G-ABC123XYZ&" + query, {}, body.encode(),
                                  "203.0.113.7", RECEIVED_AT), CONFIG).events
    assert [(e.event_name, e.currency, e.value) for e in events] == expected
    if query == "epn.value=7&ep.tax=2":
        assert events[0].tax == 3.0


@pytest.mark.parametrize("body,field", [
    ("dt=x\r\nen=b", "en"),  # the line's own event name is checked before anything is read
    ("en=a&epn.value=abc", "epn.tax"),  # the query's parameters are read before the line's
])
def test_a_bad_batch_is_refused_for_the_parameter_the_get_path_names(body: str, field: str) -> None:
    with pytest.raises(BadRequest) as refused:
        ga4.parse(RawRequest("POST", "/g/collect", "v=2&tid=G-ABC123XYZ&epn.tax=x", {}, body.encode(), "203.0.113.7",
                             RECEIVED_AT), CONFIG)
    assert refused.value.field == field
