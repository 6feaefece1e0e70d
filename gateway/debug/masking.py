"""Masking personal data before the debugger keeps or shows anything.

The debugger's promise is that personal data never reaches its page, even
when consent was granted and the data legitimately travels on to a vendor.
So everything is masked here, on the server, before a trace enters the ring
buffer: the page and its API only ever see what these functions return.

Masks keep just enough to recognise a value while debugging:

- an email address keeps its first letter, the first letter of its domain and
  the top-level domain: ``jane.doe@gmail.com`` -> ``j***@g***.com``;
- a phone number keeps its country code and its last two digits:
  ``+49 151 2345 6767`` -> ``+49 *** ** 67``;
- a SHA-256 digest keeps its first six characters: ``5f3a9c…``;
- an IP address keeps its network: ``198.51.100.***``, ``2001:db8:85a3:***``;
- any other personal value (a name, a street, a user id) keeps its first
  character: ``J***``.

What counts as personal is decided twice, by a key's name and by a value's
shape (an email address, a phone number, a digest, an IP address), both
from ``gateway.personal``, the one definition consent enforcement uses too,
because data hides under neutral names (``extra.note``) and neutral data
under personal-sounding ones. Keys are values too: an email address used as
a JSON key (or a GA4 parameter's name) is masked like any other. A phone
number counts however it is written: ``+1 415 555 0107``, ``415.555.0107``,
digits alone or a JSON number; an order number shaped like a phone number
is masked too (keeping its last two digits), since nothing tells the two
apart. A digest keeps its prefix (``sha256:5f3a9c…``), and one glued to
other text (GA4's ``v0<digest>``) is found too. Both tests err on the side of masking: a masked order
id costs a debugging minute, a leaked email address costs a legal basis.

Credentials (``Authorization``, ``?api_key=``, ``user:password@``) are
masked by ``gateway.secrets_mask``, the rule every other display follows.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit

import orjson
import phonenumbers

from gateway import personal as gateway_personal
from gateway import secrets_mask

MASK = "***"
MAX_TEXT = 16_384  # characters of a request body or vendor answer kept in a trace

# Keys whose whole subtree is personal, whatever the leaves are called.
# Matched against the lower-cased key with separators removed.
_PERSONAL_CONTAINERS = frozenset({
    "userdata", "useridentifiers", "addressinfo", "customer", "billingaddress", "shippingaddress",
    "customerdetails", "contact",
})
# Keys that are personal identifiers without a personal-sounding name.
_PERSONAL_KEYS = frozenset({
    "userid", "uid", "externalid", "ipoverride", "ip", "uip", "clientipaddress", "ipaddress", "remoteaddr",
    "sessionattributes",  # Google's encoded browser session (the Data Manager API's adIdentifiers)
})
# Request headers that carry client IP addresses.
_IP_HEADERS = frozenset({"x-forwarded-for", "x-real-ip", "forwarded", "cf-connecting-ip", "true-client-ip"})
# GA4 query parameters that are personal by definition.
_GA4_PERSONAL = frozenset({"uid", "_uip", "uip"})
_GA4_ITEM = re.compile(r"pr\d{1,3}")  # an item, pieces joined by "~"
_ITEM_PIECE = re.compile(r"([kv]\d|[a-z]{2})(.*)", re.DOTALL)  # k0-k9, v0-v9 (a later index stays in the value)

_EMAIL = re.compile(r"([^@\s<>(),;:\"'&=?/%]+)(?:@|%40)([^@\s<>(),;:\"'&=?/]+)\.([A-Za-z]{2,24})\b")
_HEX64 = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_DIGEST_PREFIX = re.compile(r"(?:sha-?256|sha2)[:=$_-]?", re.IGNORECASE)
_B64_DIGEST = re.compile(r"[A-Za-z0-9_-]{43}=?")
_INTL_PHONE = re.compile(r"\+\d[\d ().-]{6,20}\d")
_ENUM = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_IPV4 = re.compile(r"(?<![\w/.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.])")
# Kept out of the phone pass over free text: dates with times, and IPv4 addresses (masked or not).
_NOT_A_PHONE = re.compile(
    r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?|(?<![\w.])\d{1,3}(?:\.\d{1,3}){2}\.(?:\d{1,3}|\*\*\*)(?![\w.]))"
)
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{64,}")
_GLUED_DIGITS = re.compile(r"(?<=[A-Za-z]-)\d{7,15}(?!\d)")
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{43}(?:=|(?<=[A-Za-z0-9+/_-]{43})[A-Za-z0-9+/_-]?=?)?(?![A-Za-z0-9+/_-])")
_DIGITS = re.compile(r"\d{3}")  # free text that may hold a phone number written as digits
_SHOWN = "*~:/@.,-_…()"  # left unescaped in a masked query string, for reading
_AT = "\ue000"  # stands in for a masked address's "@" during that pass; a private-use character


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").replace(" ", "").replace(".", "")


# -- single values -----------------------------------------------------------------------------------


def mask_email(value: str) -> str:
    """``jane.doe@gmail.com`` -> ``j***@g***.com``."""
    local, _, domain = value.strip().rpartition("@")
    head, _, tld = domain.rpartition(".")
    if not local or not head or not tld:
        return MASK
    return f"{local[0]}***@{head[0]}***.{tld}"


def mask_phone(value: str) -> str:
    """``+49 151 23456767`` -> ``+49 *** ** 67``: the country code and the last two digits."""
    text = value.strip()
    digits = "".join(c for c in text if c.isdigit())
    last = digits[-2:] if len(digits) >= 7 else "**"
    if text.startswith("+"):
        try:
            code = str(phonenumbers.parse(text, None).country_code)
        except phonenumbers.NumberParseException:
            code = digits[:2]
        return f"+{code} *** ** {last}"
    return f"*** ** {last}"


def mask_hash(value: str) -> str:
    """The first six characters of a digest (after a ``sha256:`` prefix, which stays): enough to compare two,
    too few to look one up."""
    prefix = _DIGEST_PREFIX.match(value)
    head = prefix.group(0) if prefix is not None and len(value) - prefix.end() in (43, 44, 64) else ""
    return head + value[len(head):len(head) + 6] + "…"


def _phone(value: object) -> bool:
    """A phone number, written as one or as digits alone, or sent as a JSON number."""
    return isinstance(value, (str, int)) and gateway_personal.is_phone(value)


def mask_ip(value: str) -> str:
    """Keep the network, drop the host: ``198.51.100.23`` -> ``198.51.100.***``."""
    text = value.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return MASK
    if address.version == 4:
        return text.rsplit(".", 1)[0] + ".***"
    groups = address.exploded.split(":")
    return ":".join(g.lstrip("0") or "0" for g in groups[:3]) + ":***"


def mask_personal(value: Any) -> Any:
    """A value known to be personal, masked by its shape."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and gateway_personal.is_phone(value):
        return mask_phone(str(value))
    if isinstance(value, (int, float)):
        return MASK
    if isinstance(value, list):
        return [mask_personal(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_personal(v) for k, v in value.items()}
    text = str(value)
    if not text or _ENUM.fullmatch(text):  # a vendor's constant such as FIRST_PARTY says nothing about anyone
        return text
    if _HEX64.fullmatch(text.strip()) or _B64_DIGEST.fullmatch(text.strip()) or gateway_personal.is_digest(text):
        return mask_hash(text.strip())
    if "@" in text and _EMAIL.fullmatch(text.strip()):
        return mask_email(text)
    if _is_ip(text):
        return mask_ip(text)
    if gateway_personal.is_phone(text) or _INTL_PHONE.fullmatch(text.strip()):
        return mask_phone(text)
    return text.strip()[0] + MASK if len(text.strip()) > 2 else MASK


def mask_text(text: str) -> str:
    """Free text (a URL, a vendor's message, a body we cannot parse): mask what looks personal inside it."""
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"… ({len(text) - MAX_TEXT} more characters not kept)"
    text = secrets_mask.mask_text(text)
    if "@" in text or "%40" in text:
        # The masked address keeps an "@" stand-in until the phone pass below is done, so that
        # gateway.personal does not take the mask itself for an address to redact.
        text = _EMAIL.sub(lambda m: mask_email(f"{m.group(1)}@{m.group(2)}.{m.group(3)}").replace("@", _AT), text)
    text = _HEX64.sub(lambda m: mask_hash(m.group(0)), text)
    if len(text) >= 43:
        text = _HEX_RUN.sub(lambda m: mask_hash(m.group(0)), text)  # a digest glued to a prefix (GA4's "v0<hex>")
        text = _B64_RUN.sub(lambda m: mask_hash(m.group(0)) if gateway_personal.is_digest(m.group(0)) else m.group(0),
                            text)
        text = gateway_personal.scrub_digests(text)  # what the run above cannot see: a digest holding a "/" in a path
    if "+" in text:
        text = _INTL_PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    if "." in text:
        text = _IPV4.sub(lambda m: mask_ip(m.group(0)) if _is_ip(m.group(0)) else m.group(0), text)
    if "-" in text:  # a phone number or a digest glued to an id's prefix ("RF-14155550107"), which the text pass leaves
        text = gateway_personal.GLUED_DIGEST.sub(
            lambda m: m.group(1) + mask_hash(m.group(2)) if gateway_personal.is_digest(m.group(2)) else m.group(0), text)
        text = _GLUED_DIGITS.sub(
            lambda m: mask_phone(m.group(0)) if gateway_personal.digits_read_as_phone(m.group(0)) else m.group(0), text)
    if gateway_personal.contains_personal(text):  # what is left: national phones, numbers alone, odd addresses
        # Dates with times and (masked) IP addresses are digit runs too; they are kept out of that pass.
        pieces = _NOT_A_PHONE.split(text)
        text = "".join(p if i % 2 else gateway_personal.scrub_text(p) for i, p in enumerate(pieces))
    return text.replace(_AT, "@")



def _is_ip(text: str) -> bool:
    text = text.strip()
    if not 2 < len(text) <= 45 or not (":" in text or (text[0].isdigit() and _IPV4.fullmatch(text))):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_personal_key(key: object) -> bool:
    """A key whose value is personal data, by its name alone."""
    return isinstance(key, str) and _personal_key(key)


@functools.lru_cache(maxsize=4096)  # keys come from a small vocabulary; the cache bounds a hostile one
def _personal_key(key: str) -> bool:
    norm = _norm(key)
    return norm in _PERSONAL_KEYS or norm in _PERSONAL_CONTAINERS or gateway_personal.is_personal_key(key)


# -- trees -------------------------------------------------------------------------------------------


def mask_tree(value: Any, personal: bool = False) -> Any:
    """JSON-like data with personal values masked; ``personal`` says the whole subtree is personal."""
    if isinstance(value, dict):
        pair = _named_pair(value)
        if pair is not None and not personal:  # {"name": "customer_phone", "value": "..."}: Shopify's note attributes
            # The label is a name, not a person's: shown (unless it is itself personal); the value follows it.
            label = value[pair]
            return {**mask_tree({k: v for k, v in value.items() if k != pair}, is_personal_key(label)),
                    pair: _mask_key(label)}
        return {_mask_key(k): (secrets_mask.MASK if isinstance(k, str) and secrets_mask.is_secret_key(k) and v
                               else mask_tree(v, personal or is_personal_key(k)))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_tree(v, personal) for v in value]
    if personal:
        return mask_personal(value)
    if isinstance(value, int) and not isinstance(value, bool) and _phone(value):
        return mask_phone(str(value))
    if isinstance(value, str):
        stripped = value.strip()
        if len(stripped) == 64 and _HEX64.fullmatch(stripped) or gateway_personal.is_digest(stripped):
            return mask_hash(stripped)
        if gateway_personal.is_email(value) or _is_ip(value):
            return mask_personal(value)
        if gateway_personal.is_phone(value):
            return mask_personal(value)
        if "://" in value or value.startswith("/"):  # a URL, or a path of one (Shopify's landing_site)
            return _mask_url(value)
        if "&" in value and "=" in value and " " not in value:  # a query string: GA4's forwarded hits
            return "&".join(f"{k}={quote(v, safe=_SHOWN)}" for k, v in mask_params(value))
        if len(value) >= 43 or (len(value) > 5 and ("@" in value or "%40" in value or "+" in value or "." in value
                                                    or _DIGITS.search(value) is not None)):
            return mask_text(value)
    return value


def _named_pair(value: dict[Any, Any]) -> str | None:
    """The naming key of a ``{"name": ..., "value": ...}`` (or ``key``) entry, whose value is personal by that name."""
    if len(value) <= 3 and "value" in value:
        for name in ("name", "key"):
            if isinstance(value.get(name), str):
                return name
    return None


def _mask_key(key: Any) -> Any:
    """A key that is itself personal (an email address used as a JSON key) masked like a value."""
    if not isinstance(key, str) or len(key) < 6:
        return key
    if gateway_personal.is_email(key):
        return mask_email(key)
    if gateway_personal.is_digest(key):
        return mask_hash(key.strip())
    if len(key) >= 43:
        key = mask_text(key)
    if gateway_personal.contains_personal(key):
        return mask_text(key)
    return key


def _mask_path(path: str) -> str:
    """A URL path with each segment that is wholly a phone number, an address or a digest masked."""
    out = []
    for segment in path.split("/"):
        decoded = unquote_plus(segment, errors="replace")
        if len(decoded) > 5 and (gateway_personal.is_phone(decoded) or gateway_personal.is_email(decoded)
                                 or gateway_personal.is_digest(decoded)):
            out.append(quote(str(mask_personal(decoded)), safe=_SHOWN + " +"))
        else:
            out.append(segment)
    return "/".join(out)


def _mask_url(url: str) -> str:
    """A URL whose query may hold personal parameters (``?email=...``) or credentials (``?api_key=``)."""
    url = secrets_mask.mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    if any(c.isdigit() or c == "@" or c == "%" for c in parts.path):
        url = url.replace(parts.path, _mask_path(parts.path), 1)
        parts = urlsplit(url)
    if not parts.query:
        return mask_text(url)
    pairs = [f"{k}={mask_tree(v, is_personal_key(k))}" for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    head = url.split("?", 1)[0]
    tail = f"#{parts.fragment}" if parts.fragment else ""
    return mask_text(f"{head}?{'&'.join(pairs)}{tail}")


# -- requests ----------------------------------------------------------------------------------------


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    """Credentials and signatures hidden, client addresses cut to their network, the rest scanned."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower == "cookie":
            names = [c.split("=", 1)[0].strip() for c in value.split(";") if c.strip()]
            out[name] = "; ".join(f"{n}={MASK}" for n in names)
        elif secrets_mask.is_secret_header(name):
            out[name] = MASK
        elif lower in _IP_HEADERS:
            out[name] = mask_text(value)
        elif lower == "host":  # the gateway's own address, as the client wrote it
            out[name] = value
        else:  # a URL (Referer, Origin) has its parameters decoded and masked one by one
            out[name] = _mask_url(value) if "://" in value else mask_text(value)
    return out


def mask_params(text: str) -> list[list[str]]:
    """URL-encoded parameters (a query string, a GA4 body line), decoded, as ``[key, masked value]`` pairs."""
    pairs: list[list[str]] = []
    for piece in text.split("&"):
        if not piece:
            continue
        raw_key, _, raw_value = piece.partition("=")
        key = unquote_plus(raw_key, errors="replace")
        value = unquote_plus(raw_value, errors="replace")
        pairs.append([_mask_param_key(key), _mask_param(key, value)])
    return pairs


def _mask_param_key(key: str) -> str:
    """A parameter's name: ``ep.<name>``/``up.<name>`` keep their prefix, a personal name is masked."""
    prefix, dot, name = key.partition(".")
    if dot and prefix in ("ep", "epn", "up", "upn"):
        return f"{prefix}.{_mask_key(name)}"
    return str(_mask_key(key))


def _mask_param(key: str, value: str) -> str:
    if secrets_mask.is_secret_key(key) and value:
        return MASK
    if key == "em":  # GA4 user data: tv.1~em.<digest>~pn.<digest>
        return "~".join(_mask_em_piece(p) for p in value.split("~"))
    _, dot, name = key.partition(".")
    if key in _GA4_PERSONAL or is_personal_key(name if dot else key):
        return str(mask_personal(value))
    if key in ("dl", "dr", "dh") or "://" in value:
        return _mask_url(value)
    if _GA4_ITEM.fullmatch(key):
        return _mask_item(value)
    masked = mask_tree(value)
    return masked if isinstance(masked, str) else str(masked)


def _mask_item(value: str) -> str:
    """GA4's ``pr1=idSKU~nmMug~k0note~v0text``: each piece's value masked after its prefix, a custom
    parameter's value by its name (``k0``) too."""
    pieces = value.split("~")
    names: dict[str, str] = {}
    for piece in pieces:
        match = _ITEM_PIECE.match(piece)
        if match is not None and match.group(1).startswith("k"):
            names[match.group(1)[1:]] = match.group(2)
    out = []
    for piece in pieces:
        match = _ITEM_PIECE.match(piece)
        if match is None:
            out.append(str(mask_tree(piece)))
            continue
        prefix, rest = match.groups()
        personal = prefix.startswith("v") and is_personal_key(names.get(prefix[1:], ""))
        masked = mask_personal(rest) if personal else mask_tree(rest)
        out.append(prefix + (str(_mask_key(mask_tree(rest))) if prefix.startswith("k") else str(masked)))
    return "~".join(out)


def _mask_em_piece(piece: str) -> str:
    name, dot, value = piece.partition(".")
    if not dot or name == "tv":
        return piece
    return f"{name}.{mask_hash(value)}"


def mask_body(body: bytes, content_type: str | None) -> Any:
    """A request body as the debugger keeps it: parsed JSON masked, parameter lines masked, or masked text."""
    if not body:
        return None
    text = body[: MAX_TEXT * 4].decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return mask_tree(orjson.loads(body))
        except orjson.JSONDecodeError:
            pass
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if "=" in text and "{" not in stripped[:1] and kind in ("", "text/plain", "application/x-www-form-urlencoded"):
        return [mask_params(line.rstrip("\r")) for line in text.split("\n") if line.strip()]
    return mask_text(text)


def mask_outgoing(record: dict[str, Any]) -> dict[str, Any]:
    """An ``OutgoingRequest.for_record()`` (credentials already masked) with personal data masked too."""
    record = secrets_mask.mask_record(record)  # again: a record stored before secrets were masked on the way in
    body = record.get("body")
    return {
        "method": record.get("method"),
        "url": mask_text(str(record.get("url", ""))),
        "headers": mask_headers(dict(record.get("headers") or {})),
        "body": mask_tree(body) if not isinstance(body, str) else mask_text(body),
    }
