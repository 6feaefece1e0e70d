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

import base64
import binascii
import math
import re
from functools import cached_property
from itertools import repeat
from typing import Any, Literal

from pydantic import Field, ValidationError

from clients._click_ids import click_ids
from gateway.client import ClientConfig, ClientResult, RawRequest
from gateway import ga4_params
from gateway.consent import decode_gcd, decode_gcs
from gateway.cookies import read_cookies
from gateway.errors import BadRequest
from gateway.percent import unquote, unquote_plus
from gateway.event import Event

# Anyone on the internet can send these: events from here never change an order's value (gateway.ledger).
AUTHENTICATED = False
ROUTES = [("GET", "/g/collect"), ("POST", "/g/collect")]


def _param(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


# What gtag.js sends, as far as the gateway reads it; any other parameter is kept under its sGTM name,
# and any ``ep.<name>`` / ``epn.<name>`` / ``up.<name>`` is taken (only a few are listed here).
_QUERY = [
    _param("v", "Protocol version; gtag.js sends 2. A hit with neither v=2 nor a tid is not claimed: 400.",
           {"type": "string", "enum": ["2"]}),
    _param("tid", "GA4 measurement id; checked against the client's measurement_ids when set.",
           {"type": "string", "pattern": "^G-[A-Z0-9]{4,12}$"}),
    _param("cid", "Client id (the _ga cookie's two numbers), becomes client_id.", {"type": "string", "maxLength": 100}),
    _param("en", "Event name (required in the query or in each body line).",
           {"type": "string", "minLength": 1, "maxLength": 200}, required=True),
    _param("dl", "Page URL; gclid, gbraid, wbraid and fbclid are read from its query.", {"type": "string", "format": "uri"}),
    _param("dr", "Referrer URL.", {"type": "string"}),
    _param("dt", "Page title.", {"type": "string"}),
    _param("ul", "Browser language.", {"type": "string", "maxLength": 35}),
    _param("sr", "Screen resolution.", {"type": "string", "pattern": "^[0-9]{1,5}x[0-9]{1,5}$"}),
    _param("uid", "User id set by the site.", {"type": "string"}),
    _param("sid", "Session id.", {"type": "string", "pattern": "^[0-9]{1,20}$"}),
    _param("sct", "Session number.", {"type": "integer", "minimum": 0}),
    _param("npa", "Non-personalised ads flag.", {"type": "string", "enum": ["0", "1"]}),
    _param("gcs", "Consent Mode: G1 then ad_storage and analytics_storage as 1 (granted), 0 (denied) or -.",
           {"type": "string", "pattern": "^G1[01-]{2}$"}),
    _param("gcd", "Consent Mode v2 letter code, e.g. 13r3r3r2r5l1; wins over gcs for every signal it sets.",
           {"type": "string", "pattern": "^[0-9a-z]{2,64}$"}),
    _param("cu", "Currency, three letters.", {"type": "string", "pattern": "^[A-Za-z]{3}$"}),
    _param("em", "Hashed user data: tv.1~em.<sha256>~pn.<sha256>~fn0.<sha256>..., digests in base64url or hex.",
           {"type": "string"}),
    _param("ep.transaction_id", "Order id; with a purchase it opens the order in the ledger.", {"type": "string"}),
    _param("ep.event_id", "Event id shared with the browser's own tags, for deduplication.", {"type": "string"}),
    _param("epn.value", "Value, a number.", {"type": "number"}),
    _param("epn.tax", "Tax, a number.", {"type": "number"}),
    _param("epn.shipping", "Shipping, a number.", {"type": "number"}),
    _param("ep.currency", "Currency, when cu is absent.", {"type": "string", "pattern": "^[A-Za-z]{3}$"}),
    _param("pr1", "First item: ~-separated two-letter codes and values (idSKU-1~nmMug~pr12.5~qt2); pr2 ... likewise.",
           {"type": "string"}),
    _param("pr2", "Second item, as pr1.", {"type": "string"}),
    _param("up.user_type", "A user property (any up.<name>; upn.<name> for numbers).", {"type": "string"}),
]
_HIT_RESPONSES = {
    "204": {"description": "Accepted: the hit's deliveries are stored before this answer."},
    "400": {"description": "Not a GA4 hit (neither v=2 nor a tid), or a parameter is wrong: the body names it."},
}

# The OpenAPI operations of this client (served at /openapi.json by gateway.openapi).
OPENAPI: dict[str, dict[str, Any]] = {
    "GET /g/collect": {
        "operationId": "ga4_collect_get",
        "summary": "One GA4 event, as gtag.js sends it to a server container",
        "parameters": _QUERY,
        "responses": _HIT_RESPONSES,
    },
    "POST /g/collect": {
        "operationId": "ga4_collect_post",
        "summary": "A batch of GA4 events: shared parameters in the query, one event per body line",
        "parameters": [{**p, "required": False} for p in _QUERY],
        "requestBody": {
            "required": False,
            "description": "Each line holds one event's URL-encoded parameters, which override the query's. "
                           "An empty body is one event made of the query alone.",
            "content": {"text/plain": {"schema": {"type": "string", "example": "en=page_view&dt=Home\nen=scroll"}}},
        },
        "responses": _HIT_RESPONSES,
    },
}


class Config(ClientConfig):
    type: Literal["ga4"]
    measurement_ids: list[str] | None = Field(
        None, description="GA4 measurement ids (tid) accepted; a hit for any other id gets 400. Unset accepts all."
    )

    @cached_property
    def allowed_ids(self) -> frozenset[str] | None:
        """``measurement_ids`` as a set, built on first use (a plain attribute after that, read on every hit)."""
        return None if self.measurement_ids is None else frozenset(self.measurement_ids)


# Parameters copied to an event field as they are.
_TEXT_FIELDS = {
    "cid": "client_id",
    "uid": "user_id",
    "dl": "page_location",
    "dr": "page_referrer",
    "dt": "page_title",
    "ul": "language",
    "sr": "screen_resolution",
}
# Parameters the loop over all parameters in ``_event`` passes by because they are read by name
# (en, tid, cu, em, sid, sct, npa, gcs, gcd) or say nothing (v is always 2). Every other protocol
# parameter gtag.js adds is kept under its sGTM name by ``gateway.ga4_params``.
_READ_ELSEWHERE = frozenset({"en", "tid", "cu", "em", "sid", "sct", "npa", "gcs", "gcd", "v"})
_KEPT_BY_NAME = ("gcs", "gcd")  # read for consent, and kept as they came (x-ga-gcs, x-ga-gcd) for the ga4 tag
# Event parameters with their own event field, whichever prefix brings them.
_ID_PARAMS = frozenset({"transaction_id", "event_id"})
_NUMBER_PARAMS = frozenset({"value", "tax", "shipping"})

_ITEM_TEXT = {
    "id": "item_id",
    "nm": "item_name",
    "br": "item_brand",
    "ca": "item_category",
    "c2": "item_category2",
    "c3": "item_category3",
    "c4": "item_category4",
    "c5": "item_category5",
    "va": "item_variant",
    "cp": "coupon",
    "af": "affiliation",
    "li": "item_list_id",
    "ln": "item_list_name",
    "lo": "location_id",
    "cn": "creative_name",
    "cs": "creative_slot",
    "pi": "promotion_id",
    "pn": "promotion_name",
}
_ITEM_FLOAT = {"pr": "price", "ds": "discount"}
_ITEM_INT = {"qt": "quantity", "lp": "index"}
_TEXT, _FLOAT, _INTEGER = "text", "float", "integer"
# Item code -> (field, kind): one lookup per piece.
_ITEM_CODES: dict[str, tuple[str, str]] = {
    **{code: (field, _TEXT) for code, field in _ITEM_TEXT.items()},
    **{code: (field, _FLOAT) for code, field in _ITEM_FLOAT.items()},
    **{code: (field, _INTEGER) for code, field in _ITEM_INT.items()},
}
_DIGITS = "0123456789"
_MAX_ITEMS_INDEX_DIGITS = 3  # pr1 ... pr999; GA4 itself keeps 200

_EM_USER = {"em": "sha256_email_address", "pn": "sha256_phone_number"}
_EM_ADDRESS = {"fn0": "sha256_first_name", "ln0": "sha256_last_name", "sa0": "sha256_street"}

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INT = re.compile(r"[+-]?\d{1,15}", re.ASCII)
_MAX_NUMBER_TEXT = 64
_MAX_SAFE_INT = 2**53  # beyond this a JSON number loses precision in every vendor's parser
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_B64URL_DIGEST = re.compile(r"[A-Za-z0-9_-]{43}=?")
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

    __slots__ = ("allowed", "ip", "user_agent", "fbp", "fbc", "received_at", "consent_sources", "decoded")

    def __init__(self, raw: RawRequest, config: Config) -> None:
        self.allowed = config.allowed_ids
        self.ip = raw.client_ip
        self.user_agent = raw.headers.get("user-agent") or None
        cookies = read_cookies(raw.headers.get("cookie"), _FB_COOKIES)
        self.fbp = cookies.get("_fbp")
        self.fbc = cookies.get("_fbc")
        self.received_at = raw.received_at
        self.consent_sources: list[dict[str, str]] = []  # per event: signal -> "gcs" | "gcd", for the debugger
        # The last (gcs, gcd) decoded and what it gave: the body lines of a batch share the query's consent,
        # so it is decoded once per request, not once per event.
        self.decoded: tuple[tuple[str | None, str | None], dict[str, str], dict[str, str]] | None = None


def _body_lines(raw: RawRequest) -> list[tuple[int, str]]:
    try:
        text = raw.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "body is not valid UTF-8", field="body") from None
    # Lines end in \r\n or \n; gtag.js never sends a raw \r inside a line.
    return [(i, line.rstrip("\r")) for i, line in enumerate(text.split("\n"), 1) if line.strip()]


def _params(text: str, where: str) -> dict[str, str]:
    """URL-encoded ``a=1&b=2`` -> dict; the last of repeated names wins.

    Most pieces of a hit need no decoding: the dict is built from the raw
    pieces in one comprehension, and only the pieces holding ``%`` or ``+``
    are decoded after. A decoded value replaces the raw one only when that is
    still what the dict holds (a later repeat of the name may have won), and
    every such piece is decoded, so a bad one is refused wherever it stands.
    """
    if not text.isascii():
        text = _utf8_text(text, where)
    pieces = text.split("&")
    out = {key: value for key, _, value in map(str.partition, pieces, repeat("=")) if key}
    if "%" not in text and "+" not in text and "\x00" not in text:
        return out
    if "\x00" in text:
        return _params_each(pieces, where)
    for piece in [piece for piece in pieces if "%" in piece or "+" in piece]:
        key, _, raw = piece.partition("=")
        if "%" in key or "+" in key:
            return _params_each(pieces, where)  # a name to decode: rare, done in order by the general loop
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
        if key in _READ_ELSEWHERE:
            continue
        field = _TEXT_FIELDS.get(key)
        if field is not None:
            if value:
                data[field] = value
            continue
        prefix, dot, pname = key.partition(".")
        if dot:
            if not pname:
                continue
            if prefix == "ep" or prefix == "epn":
                if pname in _ID_PARAMS:
                    # text wins when a page sends both forms
                    if value and (prefix == "ep" or not params.get(f"ep.{pname}")):
                        data[pname] = value
                elif pname in _NUMBER_PARAMS:
                    if value and (prefix == "epn" or not params.get(f"epn.{pname}")):
                        data[pname] = _number(value, key)
                elif pname == "currency":
                    if currency_param is None and value:
                        currency_param = key
                elif prefix == "ep":
                    extra[pname] = value
                elif value:
                    extra[pname] = _json_number(value, key)
            elif prefix == "up" or (prefix == "upn" and value):
                if user_properties is None:
                    user_properties = {}
                user_properties[pname] = value if prefix == "up" else _json_number(value, key)
            elif prefix != "upn":
                protocol.append((key, value))  # sst.* and whatever else gtag.js adds with a dot
            continue
        if key.startswith("pr") and 2 < len(key) <= 2 + _MAX_ITEMS_INDEX_DIGITS:
            index = key[2:]
            if index.isascii() and index.isdigit():
                if items is None:
                    items = []
                items.append((int(index), key, value))
                continue
        protocol.append((key, value))

    if currency_param is not None:
        data["currency"] = _currency(params[currency_param], currency_param)
    if items is not None:
        items.sort(key=lambda entry: entry[0])
        built = [item for _, key, value in items if (item := _item(value, key))]
        if built:
            data["items"] = built
    if user_properties is not None:
        data["user_properties"] = user_properties
    em = params.get("em")
    if em:
        data["user_data"] = _user_data(em)
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
    if sct and _INT.fullmatch(sct):
        extra["ga_session_number"] = int(sct)
    npa = params.get("npa")
    if npa:
        extra["npa"] = npa  # non-personalised ads flag as the page set it
    protocol.extend((name, params[name]) for name in _KEPT_BY_NAME if params.get(name))
    if protocol:
        ga4_params.keep(protocol, extra)
    data["extra"] = extra
    data["consent"] = _consent(params.get("gcs"), params.get("gcd"), shared)

    try:
        return Event(**data)
    except ValidationError as exc:  # a safety net: every field is checked above
        raise BadRequest(400, "invalid event", detail=exc.errors(include_input=False, include_url=False)) from None


def _consent(gcs: str | None, gcd: str | None, shared: _Shared) -> dict[str, str]:
    """The consent signals the hit carries (a dict the Event validates into ``Consent``); notes their sources."""
    decoded = shared.decoded
    if decoded is None or decoded[0] != (gcs, gcd):
        states = decode_gcs(gcs) if gcs else {}
        note = dict.fromkeys(states, "gcs")
        if gcd:
            from_gcd = decode_gcd(gcd)
            states.update(from_gcd)
            note.update(dict.fromkeys(from_gcd, "gcd"))
        decoded = shared.decoded = ((gcs, gcd), states, note)
    shared.consent_sources.append(dict(decoded[2]))
    return dict(decoded[1])


def _number(text: str, field: str) -> float:
    if len(text) > _MAX_NUMBER_TEXT or not _NUMBER.fullmatch(text):
        raise BadRequest(400, "not a number", field=field)
    number = float(text)
    if not math.isfinite(number):
        raise BadRequest(400, "not a finite number", field=field)
    return number


def _json_number(text: str, field: str) -> int | float:
    """A number for ``extra``: integers stay integers, so ``epn.count=3`` reads as 3."""
    if _INT.fullmatch(text):
        return int(text)
    return _number(text, field)


def _integer(text: str, field: str) -> int:
    if len(text) <= 15 and text.isdigit() and text.isascii():
        return int(text)  # what float() and the checks below give for plain digits, without them
    number = _number(text, field)
    if not number.is_integer() or abs(number) > _MAX_SAFE_INT:
        raise BadRequest(400, "not an integer", field=field)
    return int(number)


def _currency(text: str, field: str) -> str:
    code = text.upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise BadRequest(400, "not a 3-letter currency code", field=field)
    return code


def _item(text: str, param: str) -> dict[str, Any] | None:
    """One ``pr<n>`` parameter: ``~``-separated pieces, each a two-letter code (or ``k<n>``/``v<n>``) and a value.

    Read with str.split and one dict lookup per piece; a piece is decoded
    only when it holds a ``%``.
    """
    item: dict[str, Any] = {}
    custom_keys: dict[str, str] | None = None
    custom_values: list[str] | None = None
    escaped = "%" in text
    for piece in text.split("~"):
        if len(piece) < 3:  # a code without a value says nothing
            continue
        code = piece[:2]
        known = _ITEM_CODES.get(code)
        if known is not None:
            field, kind = known
            value = piece[2:]
            if escaped and "%" in value:
                value = _decode_piece(value, param)
            if kind is _TEXT:
                item[field] = value
            elif kind is _FLOAT:
                item[field] = _number(value, f"{param}.{code}")
            else:
                item[field] = _integer(value, f"{param}.{code}")
            continue
        head = piece[0]
        if (head == "k" or head == "v") and piece[1] in _DIGITS:
            if head == "k":
                name = piece[1:].lstrip(_DIGITS)
                if custom_keys is None:
                    custom_keys = {}
                custom_keys[piece[1:len(piece) - len(name)]] = name
            else:
                if custom_values is None:
                    custom_values = []
                custom_values.append(piece[1:])
    if custom_keys and custom_values:
        for key, value in _pair_custom(custom_keys, custom_values):
            key = _decode_piece(key, param)
            if key:
                item.setdefault(key, _decode_piece(value, param))  # a standard field wins over a custom one
    return item or None


def _pair_custom(keys: dict[str, str], tails: list[str]) -> list[tuple[str, str]]:
    """Match ``v<n>`` pieces to ``k<n>`` pieces; the longest index with a key wins."""
    pairs = []
    taken: set[str] = set()
    for tail in tails:
        digits = len(tail) - len(tail.lstrip(_DIGITS))
        for n in range(digits, 0, -1):
            index = tail[:n]
            if index in keys and index not in taken:
                taken.add(index)
                pairs.append((keys[index], tail[n:]))
                break
    return pairs


def _decode_piece(text: str, param: str) -> str:
    if "%" not in text:
        return text
    try:
        decoded = unquote(text)
    except UnicodeDecodeError:
        raise BadRequest(400, "not valid UTF-8", field=param) from None
    if "\x00" in decoded:
        raise BadRequest(400, "parameter contains a NUL character", field=param)
    return decoded


def _user_data(text: str) -> dict[str, Any] | None:
    user: dict[str, str] = {}
    address: dict[str, str] = {}
    for piece in text.split("~"):
        key, dot, value = piece.partition(".")
        if not dot:
            continue
        field = _EM_USER.get(key)
        target = user
        if field is None:
            field = _EM_ADDRESS.get(key)
            target = address
            if field is None:
                continue
        digest = _digest(value)
        if digest is not None:
            target[field] = digest
    if not user and not address:
        return None
    return {**user, "address": address} if address else user  # validated with the Event, into UserData


def _digest(text: str) -> str | None:
    """A SHA-256 digest in hex or base64url -> lowercase hex; anything else -> None."""
    if len(text) == 64 and _HEX_DIGEST.fullmatch(text):
        return text.lower()
    if _B64URL_DIGEST.fullmatch(text):
        try:
            raw = base64.urlsafe_b64decode(text[:43] + "=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) == 32:
            return raw.hex()
    return None
