"""gtag.js's protocol parameters and the event keys sGTM gives them, both ways.

A ``/g/collect`` hit carries more than its event: engagement time (``_et``),
session start and first visit (``_ss``, ``_fv``, ``_nsi``), whether the
session is engaged (``seg``), preview traffic (``_dbg``), server-side
container hints (``sst.*``), client hints (``uaa``, ``uafvl`` ...) and more
that Google adds from time to time. GA4's reports depend on them, so the GA4
client keeps every one in ``extra`` and the ``ga4`` tag writes them back.

The keys are sGTM's GA4 client's, so triggers read as they would in sGTM:

- Google lists ``x-ga-*`` and ``x-sst-*`` as the event data its GA4 client
  makes (https://developers.google.com/tag-platform/tag-manager/server-side/internal-parameters):
  ``x-ga-page_id`` (``_p``), ``x-ga-request_count`` (``_s``), ``x-ga-gcs``,
  ``x-ga-gcd``, ``x-ga-tfd`` ... and the objects ``x-ga-system_properties``
  and ``x-sst-system_properties``;
- what sGTM's GA4 client puts in them is seen in its event data (preview
  exports and the templates built on them): ``_ss`` -> ``x-ga-system_properties.ss``,
  ``_fv`` -> ``.fv``, ``_dbg`` -> ``.dbg``, ``_c`` -> ``.c`` (every other
  underscore parameter likewise), ``sst.tft`` -> ``x-sst-system_properties.tft``,
  ``seg`` -> ``x-ga-mp2-seg``, ``_et`` -> ``engagement_time_msec``, client
  hints -> ``client_hints``; a parameter it has no name for becomes
  ``x-ga-mp2-<name>`` (``x-ga-mp2-richsstsse``, ``x-ga-mp2-frm``).

Numbers are numbers where sGTM's are (page id, request count, ``tfd``,
engagement time) when they read back as written (a page id padded with a
zero stays text); everything else stays the text the page sent, so writing a
hit back gives the same parameters. ``_et=NaN`` (sent by real pages) or any
other engagement time that is not a whole number is absent, not an error.

Both the client (``keep``) and the tag (``protocol_params``) use this module,
which is why it lives in ``gateway``: a tag never imports a client.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from gateway.percent import encode_component

SYSTEM_PROPERTIES = "x-ga-system_properties"
SST_PROPERTIES = "x-sst-system_properties"
CLIENT_HINTS = "client_hints"
ENGAGEMENT_TIME = "engagement_time_msec"
MP2_PREFIX = "x-ga-mp2-"
_MP2_LENGTH = len(MP2_PREFIX)

# Parameter -> its documented x-ga-* key (Google's internal-parameters list, plus seg's mp2 name).
NAMED: dict[str, str] = {
    "gtm": "x-ga-gtm_version",
    "_p": "x-ga-page_id",
    "_s": "x-ga-request_count",
    "gcs": "x-ga-gcs",
    "gcd": "x-ga-gcd",
    "gcu": "x-ga-gcu",
    "dma": "x-ga-dma",
    "dma_cps": "x-ga-dma_cps",
    "did": "x-ga-did",
    "gdid": "x-ga-gdid",
    "edid": "x-ga-edid",
    "ecid": "x-ga-ecid",
    "tfd": "x-ga-tfd",
    "lps": "x-ga-lps",
    "are": "x-ga-are",
    "pscdl": "x-ga-pscdl",
    "ur": "x-ga-ur",
    "seg": "x-ga-mp2-seg",
}
PARAM_OF: dict[str, str] = {key: param for param, key in NAMED.items()}
REQUEST_COUNT = NAMED["_s"]  # event-level, unlike the other named parameters
_OWN_KEYS = frozenset({SYSTEM_PROPERTIES, SST_PROPERTIES, CLIENT_HINTS, ENGAGEMENT_TIME})
_WHOLE_NUMBERS = frozenset({"_p", "_s", "tfd"})

# Client hint parameters -> client_hints keys; the booleans are "1" / "0" on the wire.
_HINT_TEXT = {"uaa": "architecture", "uab": "bitness", "uam": "model", "uap": "platform", "uapv": "platform_version"}
_HINT_FLAGS = {"uamb": "mobile", "uaw": "wow64"}
_HINT_LIST = "uafvl"  # full version list: brand;version|brand;version, each brand percent-encoded once more
_HINTS = {**_HINT_TEXT, **_HINT_FLAGS, _HINT_LIST: "full_version_list"}

# Parameters the gateway never keeps: _uip is an IP override that only the gateway may set.
IGNORED = frozenset({"_uip"})

_INT = re.compile(r"[+-]?\d{1,18}", re.ASCII)
# A number only when it reads back the same: a page id padded with zeros (0710668103329946) stays text.
_CANONICAL_INT = re.compile(r"0|-?[1-9]\d{0,17}", re.ASCII)


def keep(params: list[tuple[str, str]], extra: dict[str, Any]) -> None:
    """Store protocol parameters (name, decoded value) in ``extra`` under their sGTM keys.

    Called with whatever a hit carries beyond the event fields the GA4 client
    reads itself, after the custom ``ep.*`` parameters, so that a custom
    parameter cannot take a protocol parameter's place.
    """
    system: dict[str, str] | None = None
    sst: dict[str, str] | None = None
    hints: dict[str, Any] | None = None
    for name, value in params:
        key = NAMED.get(name)
        if key is not None:
            extra[key] = int(value) if name in _WHOLE_NUMBERS and _CANONICAL_INT.fullmatch(value) else value
        elif name[0] == "_":
            if name == "_et":
                if _INT.fullmatch(value):
                    extra[ENGAGEMENT_TIME] = int(value)
            elif name not in IGNORED and len(name) > 1:
                if system is None:
                    system = {}
                system[name[1:]] = value
        elif name in _HINTS:
            if hints is None:
                hints = {}
            hint = _HINTS[name]
            if name in _HINT_FLAGS:
                hints[hint] = value == "1"
            elif name == _HINT_LIST:
                hints[hint] = _brands(value)
            else:
                hints[hint] = value
        elif name.startswith("sst."):
            if len(name) > 4:
                if sst is None:
                    sst = {}
                sst[name[4:]] = value
        else:
            extra[MP2_PREFIX + name] = value
    if system is not None:
        extra[SYSTEM_PROPERTIES] = system
    if sst is not None:
        extra[SST_PROPERTIES] = sst
    if hints is not None:
        extra[CLIENT_HINTS] = dict(sorted(hints.items()))


def _brands(value: str) -> list[dict[str, str]]:
    """``Google%20Chrome;131.0|Chromium;131.0`` -> the brands and their full versions."""
    brands = []
    for piece in value.split("|"):
        brand, sep, version = piece.rpartition(";")
        if sep:
            brands.append({"brand": unquote(brand) if "%" in brand else brand, "version": version})
    return brands


def is_protocol_key(key: str) -> bool:
    """True for the ``extra`` keys ``keep`` writes: they go back as protocol parameters, never as ``ep.*``."""
    return key in PARAM_OF or key in _OWN_KEYS or key.startswith(MP2_PREFIX)


encode = encode_component  # a parameter name or value percent-encoded as gtag.js does (encodeURIComponent)


def page_params(extra: dict[str, Any], skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The page-level protocol parameters kept in ``extra`` (x-ga-*, mp2, sst.*, client hints), in a stable order.

    ``skip`` names parameters the caller writes itself (the tag writes its own
    ``gcs``/``gcd``, and leaves out what consent forbids).
    """
    return split_extra(extra, skip)[0]


def split_extra(extra: dict[str, Any], skip: frozenset[str] = frozenset()
                ) -> tuple[list[tuple[str, str]], list[tuple[str, Any]]]:
    """``page_params`` and, from the same single pass over ``extra``, the keys that are not protocol keys.

    The second list is what a tag may send as custom parameters (``ep.*``),
    in ``extra``'s order, values as they are: the ``ga4`` tag reads every key
    of ``extra`` once per hit instead of once for each kind.
    """
    out: list[tuple[str, str]] = []
    custom: list[tuple[str, Any]] = []
    for key, value in extra.items():
        param = _PARAM_FOR.get(key) or _param_for(key)
        if param is _CUSTOM:
            custom.append((key, value))
        elif param is _OWN or param in skip or param == "_s":
            continue
        elif type(value) is str:
            out.append((param, value))
        else:
            text = scalar_text(value)
            if text is not None:
                out.append((param, text))
    sst = extra.get(SST_PROPERTIES)
    if isinstance(sst, dict):
        out.extend((f"sst.{name}", _text(v)) for name, v in sst.items() if _scalar(v))
    hints = extra.get(CLIENT_HINTS)
    if isinstance(hints, dict):
        out.extend(_hint_params(hints))
    return out, custom


# What ``split_extra`` does with each key of ``extra``: the protocol parameter it goes back as, or one of these.
# Keys repeat from hit to hit, so each is read once (``_param_for``) and then found here; bounded, because a
# beacon's custom keys are anyone's to make up (past the bounds a key is read each time).
_CUSTOM, _OWN = object(), object()  # a custom parameter (ep.*); one this module writes itself (system, sst, hints)
_PARAM_FOR: dict[str, Any] = {}
_MAX_REMEMBERED = 4096
_MAX_REMEMBERED_KEY = 64


def _param_for(key: str) -> Any:
    param: Any = PARAM_OF.get(key)
    if param is None:
        if key.startswith(MP2_PREFIX):
            param = key[_MP2_LENGTH:]
        else:
            param = _OWN if key in _OWN_KEYS else _CUSTOM
    if len(_PARAM_FOR) < _MAX_REMEMBERED and len(key) <= _MAX_REMEMBERED_KEY:
        _PARAM_FOR[key] = param
    return param


def scalar_text(value: object) -> str | None:
    """A text, number (not a bool) as the text gtag.js would send; None for anything else."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else str(value)  # type: ignore[attr-defined]
    return _text(value) if _scalar(value) else None  # subclasses: read as the general rule says


def event_params(extra: dict[str, Any], skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The event-level protocol parameters kept in ``extra``: ``_s``, the system properties, ``_et``."""
    out: list[tuple[str, str]] = []
    count = extra.get(REQUEST_COUNT)
    if _scalar(count):
        out.append(("_s", _text(count)))
    system = extra.get(SYSTEM_PROPERTIES)
    if isinstance(system, dict):
        out.extend((f"_{name}", _text(v)) for name, v in system.items() if _scalar(v) and f"_{name}" not in skip)
    engagement = extra.get(ENGAGEMENT_TIME)
    if isinstance(engagement, int) and not isinstance(engagement, bool):
        out.append(("_et", str(engagement)))
    return out



def _hint_params(hints: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for param, key in _HINT_TEXT.items():
        value = hints.get(key)
        if isinstance(value, str):
            out.append((param, value))
    brands = hints.get("full_version_list")
    if isinstance(brands, list):
        pieces = [f"{encode(str(b.get('brand', '')))};{b.get('version', '')}" for b in brands if isinstance(b, dict)]
        out.append((_HINT_LIST, "|".join(pieces)))
    for param, key in _HINT_FLAGS.items():
        value = hints.get(key)
        if isinstance(value, bool):
            out.append((param, "1" if value else "0"))
    return out


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
