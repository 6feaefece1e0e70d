"""Credentials masked wherever a request, a stored record, an error or a log line is shown.

One module, so that the dry-run table, ``gateway deliveries list``,
``gateway dead-letters list``, ``/debug``, the log lines and the senders'
error messages all agree on what a secret is:

- a request header whose name is a known credential (``Authorization``,
  ``X-Api-Key``, ``Cookie`` ...), or sounds like one (``X-Shop-Token``,
  ``X-Client-Secret``, ``X-Partner-Key``: any name with auth, token, secret,
  password, api-key, signature, session or credential in it, or ending in
  ``-key``), or that the tag's config names as secret;
- the userinfo of a URL (``https://user:password@host/``): all of it, since
  an API key is often sent as the user name;
- query parameters and body fields with a credential's name: ``api_key``,
  ``key``, ``token``, ``secret``, ``access_token``, ``signature``,
  ``api_secret`` (the GA4 Measurement Protocol's), ``client_secret``,
  ``refresh_token``, ``password`` and names ending in ``_token``,
  ``_secret``, ``_password``, ``api_key``, ``access_key``, ``private_key``;
- ``Bearer``/``Basic``/``Token`` credentials written in free text, and any
  value the caller knows to be secret (what it sent), replaced wherever it
  shows up in a vendor's answer.

Masking is by name, not by value: a secret looks like any other string, so
the only safe rule is to hide what sits where a secret goes. It errs on the
side of hiding: a masked harmless value costs a debugging minute, a shown
token costs a rotation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"

# Header names that are credentials or signatures, lower-cased.
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "apikey",
    "developer-token", "x-goog-api-key", "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token",
    "x-signature", "x-hub-signature", "x-hub-signature-256", "x-shopify-hmac-sha256", "x-wc-webhook-signature",
    "x-amz-security-token", "x-amz-content-sha256", "private-token", "x-private-token",
})
_SECRET_HEADER_WORDS = re.compile(
    r"auth|token|secret|passw|api[-_]?key|(?:^|[-_])key$|signature|hmac|session|credential|cookie|private",
    re.IGNORECASE
)

# Query-parameter and body-field names that carry credentials, compared lower-cased.
SECRET_KEYS = frozenset({
    "api_key", "apikey", "api-key", "key", "token", "secret", "access_token", "accesstoken", "signature", "sig",
    "password", "passwd", "pwd", "pass", "api_secret", "client_secret", "refresh_token", "id_token", "auth",
    "authorization", "private_token", "x-api-key", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "code_verifier", "session", "jwt",
})
# Not every "_key": idempotency_key and batch_key are ids that logs and listings need.
_SECRET_KEY_ENDINGS = ("_token", "-token", "_secret", "-secret", "_password", "_signature", "api_key", "api-key",
                       "access_key", "private_key", "secret_key", "signing_key")

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s@]*)@")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=:-]{4,}", re.IGNORECASE)
# key=value or "key": "value" in free text (a vendor's message, a log line, a form body).
_KEY_VALUE = re.compile(
    r"(?P<key>[A-Za-z][A-Za-z0-9_.-]{1,40})(?P<sep>\"?\s*[:=]\s*\"?)(?P<value>[^\s\"&,;}?=]+)"
)
_MIN_SECRET = 6  # a shorter "secret" replaced everywhere would blot out ordinary text


@functools.lru_cache(maxsize=1024)  # names come from configs and vendors: a small vocabulary
def is_secret_key(name: str) -> bool:
    """A query parameter or body field whose value is a credential, by its name."""
    lower = unquote_plus(name, errors="replace").strip().lower()
    return lower in SECRET_KEYS or lower.endswith(_SECRET_KEY_ENDINGS) or "password" in lower


@functools.lru_cache(maxsize=1024)
def _secret_header(lower: str) -> bool:
    return lower in SECRET_HEADERS or _SECRET_HEADER_WORDS.search(lower) is not None


def is_secret_header(name: str, configured: Iterable[str] = ()) -> bool:
    """A header whose value is a credential: known, credential-sounding, or named secret in the config."""
    lower = name.strip().lower()
    return _secret_header(lower) or any(lower == c.strip().lower() for c in configured)


def mask_headers(headers: Mapping[str, str], configured: Iterable[str] = ()) -> dict[str, str]:
    """Headers with every secret value replaced by ``***``; the others as they were."""
    names = tuple(configured)
    return {name: (MASK if is_secret_header(name, names) else value) for name, value in headers.items()}


def mask_url(url: str) -> str:
    """A URL without its userinfo and with its credential parameters masked; every other byte kept."""
    if "@" in url:
        url = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", url, count=1)
    head, hash_mark, fragment = url.partition("#")
    base, question, query = head.partition("?")
    if question and query:
        head = base + "?" + _mask_query(query)
    if fragment and "=" in fragment:  # OAuth implicit flows put access_token in the fragment
        fragment = _mask_query(fragment)
    return head + hash_mark + fragment


def _mask_query(query: str) -> str:
    pieces = []
    for piece in query.split("&"):
        key, equals, _ = piece.partition("=")
        pieces.append(f"{key}={MASK}" if equals and is_secret_key(key) else piece)
    return "&".join(pieces)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (an error message, a vendor's answer, a log line) with credentials in it masked.

    ``secrets`` are values the caller knows to be secret, such as the headers
    it sent: a vendor that echoes the request must not make them readable.
    """
    if not text:
        return text
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    if " " in text:
        text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "=" in text or ":" in text:
        text = _KEY_VALUE.sub(_mask_key_value, text)
    return text


def _mask_key_value(match: re.Match[str]) -> str:
    if not is_secret_key(match.group("key")) or match.group("value") == MASK:
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{MASK}"


def mask_tree(value: Any) -> Any:
    """JSON-like data with the values of credential-named keys masked and URLs and strings scanned."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else mask_tree(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_tree(v) for v in value]
    if isinstance(value, str) and ("://" in value or "=" in value or " " in value):
        return mask_text(value)
    return value


def secret_values(headers: Mapping[str, str], url: str = "", configured: Iterable[str] = ()) -> list[str]:
    """The secret values a request carried (header values, userinfo, credential parameters), to mask in echoes."""
    names = tuple(configured)
    values = [v for k, v in headers.items() if is_secret_header(k, names)]
    for value in list(values):  # "Bearer abc": the token alone may come back too
        _, _, credential = value.partition(" ")
        if credential:
            values.append(credential)
    match = _USERINFO.search(url)
    if match and match.group("userinfo"):
        values.append(match.group("userinfo"))
        values.extend(p for p in match.group("userinfo").split(":") if p)
    query = url.partition("#")[0].partition("?")[2]
    for piece in query.split("&") if query else ():
        key, equals, raw = piece.partition("=")
        if equals and raw and is_secret_key(key):
            values.extend({raw, unquote_plus(raw, errors="replace")})
    return values


def mask_record(record: Mapping[str, Any], configured: Iterable[str] = ()) -> dict[str, Any]:
    """A stored request (``OutgoingRequest.for_record()``: method, url, headers, body) with its secrets masked.

    Used on the way in (dry-run records are stored masked) and again on the
    way out (records stored before this masking existed are shown masked too).
    """
    headers = dict(record.get("headers") or {})
    url = str(record.get("url") or "")
    known = secret_values(headers, url, configured)
    body = record.get("body")
    masked_body = mask_text(body, known) if isinstance(body, str) else _mask_values(mask_tree(body), known)
    return {**record, "url": mask_url(url), "headers": mask_headers(headers, configured), "body": masked_body}


def _mask_values(value: Any, known: list[str]) -> Any:
    """Known secret values replaced inside every string of a tree (a body that repeats a header's token)."""
    if not known:
        return value
    if isinstance(value, dict):
        return {k: _mask_values(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_values(v, known) for v in value]
    if isinstance(value, str):
        return mask_text(value, known)
    return value
