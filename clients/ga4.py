"""GA4 ``/g/collect``: the hits gtag.js sends to a server container.

When a site sets ``server_container_url``, gtag.js sends its own wire format
to us instead of to google-analytics.com. Google does not document this
format (the Measurement Protocol is a different, JSON one:
https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference);
the names below are the ones gtag.js sends, as in the captured hits in
``tests/fixtures/ga4/``. Fields get sGTM's common event data names
(https://developers.google.com/tag-platform/tag-manager/server-side/common-event-data).

Wire rules that surprised us:

- A GET carries one event. A POST batches: the parameters every event shares
  (``tid``, ``cid``, ``dl``, consent ...) sit in the query string and each body
  line is one event whose parameters override the query's. A POST with an
  empty body is one event in the query string: gtag.js often sends a single
  event that way.
- Event parameters come typed by prefix: ``ep.x`` is a string and ``epn.x`` a
  number. A dataLayer number becomes ``epn.`` even for an id, so
  ``transaction_id`` and ``event_id`` are read as text from either, and
  ``value`` as a number from either.
- Items are ``pr1`` ... ``prN``, one parameter each: ``~``-separated pieces, each
  a two-letter code and its value (``idSKU-1~nmMug~pr12.5~qt2``). Custom item
  parameters come as pairs ``k<n><name>`` / ``v<n><value>``. A ``~`` inside a
  value is escaped once more, so each piece is URL-decoded after splitting.
  An index of several digits is ambiguous in ``v<n>`` (``v105``); the longest
  index that has a matching ``k<n>`` wins.
- User-provided data (enhanced conversions) arrives already hashed in the
  browser, in ``em=tv.1~em.<sha256>~pn.<sha256>~fn0.<sha256>...``, each digest
  in base64url without padding (hex is accepted too). We keep lowercase hex,
  the form the tags and sGTM's ``sha256_*`` fields use. A piece that is not a
  32-byte digest is dropped: it is either garbage or an unhashed value, and
  neither may pass as a hash.
- Click ids are not parameters: they are in the page URL (``dl``), read by
  ``clients._click_ids`` as every client reads them.
- ``_fbp`` / ``_fbc`` arrive as first-party cookies, because the server
  container shares the site's domain.
- An empty numeric parameter (``epn.value=``, ``pr1=idA~qt``) is an absent
  one, not an error: a page whose dataLayer holds "" for an optional number
  should not lose its purchase hit. Text that is not a finite number is a 400.
- A request with neither ``v=2`` nor a ``tid`` is not a GA4 hit: like sGTM's
  GA4 client we do not claim it, and answer 400 as sGTM does for a request
  no client claims.
- Consent is in ``gcs`` and ``gcd`` (decoded in ``gateway.consent``); ``gcd`` is
  the richer one and wins for every signal it sets. Signals neither carries
  stay unset so the container's default applies later.
- Every other parameter gtag.js adds (``_et``, ``_ss``, ``seg``, ``sst.*``,
  client hints ...) is kept in ``extra`` under the key sGTM's GA4 client gives
  it (``gateway.ga4_params``), so the ``ga4`` tag can send the hit on whole.
"""

from __future__ import annotations

from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import Any, Literal

from pydantic import Field

from clients._click_ids import click_ids
from clients._ga4_names import (
    CURRENCY, EP_ID, EP_NUMBER, EP_TEXT, EPN_ID, EPN_NUMBER, EPN_OTHER, FIELD, ITEM, KINDS, PROTOCOL, SKIP, USER_NUMBER,
    USER_TEXT, kind_of,
)
from clients._ga4_openapi import OPENAPI  # noqa: F401 - the client's OpenAPI operations (gateway.openapi reads them here)
from clients._ga4_values import INT, read_currency, read_item, read_json_number, read_number, read_user_data
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway import ga4_params
from gateway.consent import decode_gcd, decode_gcs
from gateway.cookies import read_cookies
from gateway.errors import BadRequest
from gateway.percent import unquote, unquote_plus
from gateway.event import Consent, Event

# Anyone on the internet can send these: events from here never change an order's value (gateway.ledger).
AUTHENTICATED = False
ROUTES = [("GET", "/g/collect"), ("POST", "/g/collect")]


class Config(ClientConfig):
    type: Literal["ga4"]
    measurement_ids: list[str] | None = Field(
        None, description="GA4 measurement ids (tid) accepted; a hit for any other id gets 400. Unset accepts all."
    )

    @cached_property
    def allowed_ids(self) -> frozenset[str] | None:
        """``measurement_ids`` as a set, built on first use (a plain attribute after that, read on every hit)."""
        return None if self.measurement_ids is None else frozenset(self.measurement_ids)


_KEPT_BY_NAME = ("gcs", "gcd")  # read for consent, and kept as they came (x-ga-gcs, x-ga-gcd) for the ga4 tag
_MAX_EVENT_NAME = 200
_FB_COOKIES = frozenset({"_fbp", "_fbc"})


def parse(raw: RawRequest, config: Config) -> ClientResult:
    query = _params(raw.query_string, "query")
    shared = _Shared(raw, config)
    lines = _body_lines(raw) if raw.method == "POST" and raw.body else []
    if not lines:
        return ClientResult([_event(query, shared)], status=204, consent_sources=shared.consent_sources)
    events = []
    for number, line in lines:
        params = dict(query)
        try:
            params.update(_params(line, f"body line {number}"))
            events.append(_event(params, shared))
        except BadRequest as exc:
            raise BadRequest(exc.status, exc.error, field=exc.field, detail={"field": exc.field, "line": number}) from None
    return ClientResult(events, status=204, consent_sources=shared.consent_sources)


class _Shared:
    """What every event of one request takes from the request itself."""

    __slots__ = ("allowed", "ip", "user_agent", "fbp", "fbc", "received_at", "consent_sources")

    def __init__(self, raw: RawRequest, config: Config) -> None:
        self.allowed = config.allowed_ids
        self.ip = raw.client_ip
        self.user_agent = raw.headers.get("user-agent") or None
        cookies = read_cookies(raw.headers.get("cookie"), _FB_COOKIES)
        self.fbp = cookies.get("_fbp")
        self.fbc = cookies.get("_fbc")
        self.received_at = raw.received_at
        self.consent_sources: list[dict[str, str]] = []  # per event: signal -> "gcs" | "gcd", for the debugger


def _body_lines(raw: RawRequest) -> list[tuple[int, str]]:
    try:
        text = raw.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "body is not valid UTF-8", field="body") from None
    # Lines end in \r\n or \n; gtag.js never sends a raw \r inside a line.
    return [(i, line.rstrip("\r")) for i, line in enumerate(text.split("\n"), 1) if line.strip()]


def _params(text: str, where: str) -> dict[str, str]:
    """URL-encoded ``a=1&b=2`` -> dict; the last of repeated names wins.

    Every step is a C call over all the pieces at once: the pieces are
    split at ``=`` by ``map``, and when any of them is escaped, the values
    are joined with ``\x01``, decoded in one ``unquote`` and split again
    (into as many values, or a value held an escaped ``\x01``), so a page
    view's three URLs, or ten items' names, cost one decode instead of one
    each. An escape cannot reach across the ``\x01`` between two values,
    nor can a UTF-8 sequence, so the joined decode succeeds exactly when
    each value's would. Anything else (a name to decode, a value that is not
    UTF-8 or holds a NUL, a ``\x01`` in the text) is read by
    ``_params_pieces``, which raises for the first bad piece.
    """
    if not text.isascii():
        text = _utf8_text(text, where)
    pairs = list(map(str.partition, text.split("&"), repeat("=")))
    if "%" not in text and "+" not in text:
        if "\x00" in text:
            return _params_pieces(text, where)
        out = dict(zip(map(_NAME, pairs), map(_VALUE, pairs)))
    else:
        if "\x01" in text:
            return _params_pieces(text, where)
        values = _SEPARATOR.join(map(_VALUE, pairs))
        if "+" in values:
            values = values.replace("+", " ")
        try:
            decoded = unquote(values)
        except UnicodeDecodeError:
            return _params_pieces(text, where)
        if "\x00" in decoded:
            return _params_pieces(text, where)
        values_read = decoded.split(_SEPARATOR)
        if len(values_read) != len(pairs):  # a value held an escaped separator (%01)
            return _params_pieces(text, where)
        out = dict(zip(map(_NAME, pairs), values_read))
        names = "".join(out)
        if "%" in names or "+" in names:
            return _params_each(text.split("&"), where)  # a name to decode: rare, done in order by the general loop
    out.pop("", None)  # a piece without a name says nothing
    return out


_NAME = itemgetter(0)  # of a partitioned piece (name, "=", value), and of an item entry (index, name, value)
_VALUE = itemgetter(2)
_INDEX = _NAME
_SEPARATOR = "\x01"


def _params_pieces(text: str, where: str) -> dict[str, str]:
    """``_params`` one escaped piece at a time: what raises for the first bad piece, in the order of the pieces."""
    pieces = text.split("&")
    out = {key: value for key, _, value in map(str.partition, pieces, repeat("=")) if key}
    if "\x00" in text:
        return _params_each(pieces, where)
    for piece in [piece for piece in pieces if "%" in piece or "+" in piece]:
        key, _, raw = piece.partition("=")
        if "%" in key or "+" in key:
            return _params_each(pieces, where)
        if not key:
            continue
        value = _unquote_plus(raw, key)
        if "\x00" in value:
            raise BadRequest(400, "parameter contains a NUL character", field=key)
        if out[key] == raw:
            out[key] = value
    return out


def _params_each(pieces: list[str], where: str) -> dict[str, str]:
    """The general loop: every name and value decoded in order."""
    out: dict[str, str] = {}
    for key, _, value in map(str.partition, pieces, repeat("=")):
        if "%" in key or "+" in key:
            key = _unquote_plus(key, where)
        if not key:
            continue
        if "%" in value or "+" in value:
            value = _unquote_plus(value, key)
        if "\x00" in value:
            raise BadRequest(400, "parameter contains a NUL character", field=key)
        out[key] = value
    return out


def _utf8_text(text: str, where: str) -> str:
    """Raw non-ASCII bytes in a query string, which the app hands over as latin-1, read as UTF-8."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:  # already text (a caller that decoded it), not bytes in disguise
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(400, "not valid UTF-8", field=where) from None
        return text
    except UnicodeDecodeError:
        raise BadRequest(400, "not valid UTF-8", field=where) from None


def _unquote_plus(text: str, field: str) -> str:
    try:
        return unquote_plus(text)
    except UnicodeDecodeError:
        raise BadRequest(400, "not valid UTF-8", field=field) from None


def _event(params: dict[str, str], shared: _Shared) -> Event:
    version = params.get("v")
    if (version != "2") if version is not None else not params.get("tid"):
        # sGTM's GA4 client claims only protocol v2 hits with a measurement id
        # (https://taggingdocs.com/server-side/clients/ga4-web-client), and a request no
        # client claims gets 400 (https://github.com/NHinternesch/gtm-server-client-custom-event-parser/issues/1,
        # on sGTM's behaviour; clients and claiming: https://developers.google.com/tag-platform/tag-manager/server-side/intro).
        # A tid alone (gtag.js always sends both) is taken as v2.
        raise BadRequest(400, "not a GA4 hit: without v=2 or a tid, no client claims it", field="v")
    name = params.get("en")
    if not name:
        raise BadRequest(400, "missing event name", field="en")
    if len(name) > _MAX_EVENT_NAME:
        raise BadRequest(400, f"event name longer than {_MAX_EVENT_NAME} characters", field="en")
    tid = params.get("tid") or None
    if shared.allowed is not None and tid not in shared.allowed:
        raise BadRequest(400, "measurement id not accepted here", field="tid")

    data: dict[str, Any] = {
        "event_name": name,
        "timestamp": shared.received_at,
        "ip_override": shared.ip,
        "user_agent": shared.user_agent,
        "fbp": shared.fbp,
        "fbc": shared.fbc,
    }
    extra: dict[str, Any] = {}
    user_properties: dict[str, Any] | None = None
    items: list[tuple[int, str, str]] | None = None
    protocol: list[tuple[str, str]] = []
    currency_param = "cu" if params.get("cu") else None

    for key, value in params.items():
        kind, what = KINDS.get(key) or kind_of(key)
        if kind is PROTOCOL:
            protocol.append((key, value))
        elif kind is FIELD:
            if value:
                data[what] = value
        elif kind is SKIP:
            continue
        elif kind is EP_TEXT:
            extra[what] = value
        elif kind is ITEM:
            if items is None:
                items = []
            items.append((what, key, value))
        elif kind is EPN_NUMBER:
            if value:
                data[what] = read_number(value, key)
        elif kind is EP_NUMBER:  # the number form wins when a page sends both
            if value and not params.get(what[1]):
                data[what[0]] = read_number(value, key)
        elif kind is EP_ID:
            if value:
                data[what] = value
        elif kind is EPN_ID:  # text wins when a page sends both forms
            if value and not params.get(what[1]):
                data[what[0]] = value
        elif kind is CURRENCY:
            if currency_param is None and value:
                currency_param = key
        elif kind is EPN_OTHER:
            if value:
                extra[what] = read_json_number(value, key)
        elif kind is USER_TEXT or (kind is USER_NUMBER and value):
            if user_properties is None:
                user_properties = {}
            user_properties[what] = value if kind is USER_TEXT else read_json_number(value, key)

    if currency_param is not None:
        data["currency"] = read_currency(params[currency_param], currency_param)
    if items is not None:
        items.sort(key=_INDEX)  # stable: a repeated index keeps the order of the query
        built = [item for _, key, value in items if (item := read_item(value, key))]
        if built:
            data["items"] = built
    if user_properties is not None:
        data["user_properties"] = user_properties
    em = params.get("em")
    if em:
        data["user_data"] = read_user_data(em)
    location = data.get("page_location")
    if location is not None:
        data.update(click_ids(location))

    # Protocol parameters last, so a custom ep.<name> cannot replace them.
    if tid is not None:
        extra["measurement_id"] = tid
    sid = params.get("sid")
    if sid:
        extra["ga_session_id"] = sid
    sct = params.get("sct")
    if sct and INT.fullmatch(sct):
        extra["ga_session_number"] = int(sct)
    npa = params.get("npa")
    if npa:
        extra["npa"] = npa  # non-personalised ads flag as the page set it
    protocol.extend((name, params[name]) for name in _KEPT_BY_NAME if params.get(name))
    if protocol:
        ga4_params.keep(protocol, extra)
    data["extra"] = extra
    data["consent"] = _consent(params.get("gcs"), params.get("gcd"), shared)

    # Built without validation (a Struct checks the names, which are the model's, not the values): every value
    # above is a string, or a number from read_number, or built by a reader here, and the name fits the model's
    # 1..200 characters. tests/clients/test_ga4_batch_property.py validates every event it parses with from_data.
    return Event(**data)


def _consent(gcs: str | None, gcd: str | None, shared: _Shared) -> Consent:
    """The consent signals the hit carries; notes their sources."""
    signals = (gcs, gcd)
    decoded = _DECODED.get(signals)
    if decoded is None:
        states = decode_gcs(gcs) if gcs else {}
        note = dict.fromkeys(states, "gcs")
        if gcd:
            from_gcd = decode_gcd(gcd)
            states.update(from_gcd)
            note.update(dict.fromkeys(from_gcd, "gcd"))
        decoded = (states, note)
        if len(_DECODED) < _MAX_DECODED and len(gcd or "") <= _GCD_REMEMBERED:
            _DECODED[signals] = decoded
    shared.consent_sources.append(dict(decoded[1]))
    return Consent(**decoded[0])


# (gcs, gcd) -> the signals they set and where each came from. Visitors send a handful of distinct pairs,
# so each is decoded once; the bounds keep what a hostile client makes up from growing it (past them, a
# pair is decoded each time). Each event gets copies, so none shares the dicts kept here.
_DECODED: dict[tuple[str | None, str | None], tuple[dict[str, str], dict[str, str]]] = {}
_MAX_DECODED = 256
_GCD_REMEMBERED = 16  # today's gcd strings have 10 to 12 characters
