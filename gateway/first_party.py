"""Server-managed first-party cookies: ``FPID`` for GA4, ``_fbp`` and ``_fbc`` for Meta, set on collection answers.

Browsers cap cookies that scripts write (Safari: seven days), not cookies an
HTTP answer sets, so identifiers that gtag.js or Meta's pixel would keep in
JavaScript cookies are kept here instead, as sGTM's GA4 client does with its
"server managed" client id. Each is set only with the consent that covers
it, on every answer that may (so its lifetime starts again with each visit),
and expired by the first answer whose consent denies it.

- ``FPID`` (``analytics_storage``): ``FPID2.<n>.<id>``, ``n`` the number of
  labels of the cookie's domain as in ``_ga``'s ``GA1.<n>``, ``id`` 32 random
  bytes in base64 and the first visit's unix time, percent-encoded, as sGTM
  writes it; ``HttpOnly``, so no script can read or shorten it. The GA4
  events of the request take ``<id>`` as their ``client_id``; the id the page
  sent stays in ``extra["x-ga-js_client_id"]``, sGTM's key. An FPID sGTM set
  before the move is read the same way, so visitors keep their id. With
  ``migrate_from_ga`` (sGTM's "Migrate from JavaScript Managed Client ID") a
  visitor without FPID keeps the JavaScript id: the ``_ga`` cookie's, else
  the hit's ``cid``.
- ``_fbp`` and ``_fbc`` (``ad_storage``): Meta's format,
  ``fb.<subdomain index>.<creation ms>.<random number>`` and
  ``fb.<subdomain index>.<creation ms>.<fbclid>``
  (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc).
  A cookie already there is kept (and renewed); ``_fbc`` is replaced when the
  page URL brings another ``fbclid``. The rules, the subdomain index and the
  cookie values agree with Meta's own Conversions API Parameter Builder
  (``capi-param-builder-python``; ``tests/gateway/test_first_party.py``
  compares them), which is not used at run time: it costs a URL parse and
  regex compilations per request, reads the clock and the random source
  itself, and caches the first request's host for good. These two are not
  ``HttpOnly``: Meta's pixel reads them.

Every cookie is ``Secure``, ``SameSite=Lax``, ``Path=/``, with ``Max-Age`` the
configured lifetime (400 days, the most Chromium keeps) and ``Domain`` the
configured one, or none (the host the hit went to). The consent is the
request's last event's, with the client's own ``consent.default`` (else the
container's) for what it does not say, as the pipeline will apply it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.client import RawRequest
from gateway.cookies import read_cookies
from gateway.durations import Duration
from gateway.event import Event

if TYPE_CHECKING:
    from gateway.consent import ConsentPolicy

GA_COOKIE = "_ga"
FBP_COOKIE = "_fbp"
FBC_COOKIE = "_fbc"
JS_CLIENT_ID = "x-ga-js_client_id"  # sGTM's event key for the id the page's script sent

_FPID = re.compile(r"^FPID\d+\.\d+\.([A-Za-z0-9+/=._-]{1,200})$")
_GA = re.compile(r"^GA\d\.\d+\.(\d{1,20}\.\d{1,20})$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9+/=._-]{1,200}$")
# What a cookie value may hold (RFC 6265 cookie-octet); an fbclid outside it cannot be a cookie.
_COOKIE_OCTETS = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,500}$")
_FBCLID_IN_URL = re.compile(r"[?&#]fbclid=([^&#]*)")
# Meta's Parameter Builder accepts 4 parts, or 5 with an appendix of 2 (a language token) or 8 characters.
_APPENDIX_TOKENS = frozenset({"AQ", "Ag", "Aw", "BA", "BQ", "Bg"})
_DOMAIN = re.compile(r"^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FpidSection(_Section):
    enabled: bool = Field(False, description="Set FPID (with analytics_storage) and use it as the client id of GA4 hits.")
    name: str = Field("FPID", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Name of the FPID cookie.")
    migrate_from_ga: bool = Field(
        True, description="A visitor without FPID keeps the JavaScript client id (the _ga cookie's, else the hit's cid).",
    )


class MetaCookiesSection(_Section):
    enabled: bool = Field(False, description="Set _fbp and _fbc (with ad_storage); _fbc from fbclid in the page URL.")


class CookiesSection(_Section):
    """Server-managed first-party cookies on the answers of browser clients (off unless enabled)."""

    clients: list[Literal["ga4", "json_beacon"]] = Field(
        default_factory=lambda: ["ga4"], description="Clients whose answers set the cookies.",
    )
    domain: str | None = Field(
        None, description="Domain attribute, e.g. shop.example for a gateway on a subdomain of it; unset: the host the "
                          "hit was sent to.",
    )
    max_age: Duration = Field(timedelta(days=400), description="Lifetime of every cookie, renewed on each hit.")
    fpid: FpidSection = Field(default_factory=FpidSection)
    meta: MetaCookiesSection = Field(default_factory=MetaCookiesSection)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not _DOMAIN.match(value):
            raise ValueError("must be a domain name such as shop.example")
        return value.lstrip(".") if value else None


class FirstPartyCookies:
    """Built once from the container; ``apply`` runs on every answer of the configured clients."""

    def __init__(
        self, section: CookiesSection, consent: ConsentPolicy,
    ) -> None:
        self.fpid = section.fpid.enabled
        self.meta = section.meta.enabled
        self.clients = frozenset(section.clients) if (self.fpid or self.meta) else frozenset()
        self.fpid_name = section.fpid.name
        self.migrate = section.fpid.migrate_from_ga
        self.domain = section.domain
        # The pipeline's own policy: an event's default is its client's consent.default, else the container's
        # (ConsentPolicy.defaults_for), and the cookies must read the same one.
        self.consent = consent
        self._wanted = frozenset({self.fpid_name, GA_COOKIE, FBP_COOKIE, FBC_COOKIE})
        tail = f"; Max-Age={int(section.max_age.total_seconds())}; Path=/"
        gone = "; Max-Age=0; Path=/"
        if self.domain:
            tail += f"; Domain={self.domain}"
            gone += f"; Domain={self.domain}"
        tail += "; Secure; SameSite=Lax"
        gone += "; Secure; SameSite=Lax"
        self._keep, self._keep_http_only = tail, tail + "; HttpOnly"
        self._expire, self._expire_http_only = gone, gone + "; HttpOnly"

    def apply(self, raw: RawRequest, events: list[Event]) -> tuple[str, ...]:
        """Give the events the identifiers the consent allows; the ``Set-Cookie`` values of the answer.

        The events are stamped with their client already (``gateway.client.stamp``), whose default applies.
        """
        if not events:
            return ()
        defaults = self.consent.defaults_for(events[-1])
        cookies = read_cookies(raw.headers.get("cookie"), self._wanted)
        last = events[-1].consent
        out: list[str] = []
        host = self.domain or _host(raw.headers.get("host"))
        if self.fpid:
            if (last.analytics_storage or defaults.analytics_storage) == "granted":
                value = self._fpid_value(cookies, events, host, raw)
                client_id = _fpid_client_id(value) or ""
                for event in events:
                    if event.client_id and event.client_id != client_id:
                        event.extra[JS_CLIENT_ID] = event.client_id
                    event.client_id = client_id
                out.append(f"{self.fpid_name}={_cookie_text(value)}{self._keep_http_only}")
            elif self.fpid_name in cookies:
                out.append(f"{self.fpid_name}={self._expire_http_only}")
        if self.meta:
            if (last.ad_storage or defaults.ad_storage) == "granted":
                out.extend(self._meta(cookies, events, host, raw))
            else:
                out.extend(f"{name}={self._expire}" for name in (FBP_COOKIE, FBC_COOKIE) if name in cookies)
        return tuple(out)

    def _fpid_value(self, cookies: dict[str, str], events: list[Event], host: str, raw: RawRequest) -> str:
        existing = unquote(cookies.get(self.fpid_name, ""))
        if _fpid_client_id(existing):
            return existing
        prefix = f"FPID2.{_host_numbers(host)[0]}."
        if self.migrate:
            ga = _GA.match(cookies.get(GA_COOKIE, ""))
            js_id = ga.group(1) if ga else events[0].client_id
            if js_id and _CLIENT_ID.match(js_id):
                return prefix + js_id
        random_id = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        return f"{prefix}{random_id}.{int(raw.received_at.timestamp())}"

    def _meta(self, cookies: dict[str, str], events: list[Event], host: str, raw: RawRequest) -> list[str]:
        index = _host_numbers(host)[1]
        millis = int(raw.received_at.timestamp() * 1000)
        fbp = cookies.get(FBP_COOKIE)
        if fbp is None or not valid_fb_cookie(fbp):
            fbp = f"fb.{index}.{millis}.{secrets.randbelow(2**31)}"
        fbc = cookies.get(FBC_COOKIE)
        if fbc is not None and not valid_fb_cookie(fbc):
            fbc = None
        clicked = next((c for c in map(_fbclid, events) if c), None)
        if clicked and (fbc is None or fbc.split(".")[3] != clicked):
            fbc = f"fb.{index}.{millis}.{clicked}"
        for event in events:
            event.fbp = fbp
            if fbc is not None:
                event.fbc = fbc
        out = [f"{FBP_COOKIE}={fbp}{self._keep}"]
        if fbc is not None:
            out.append(f"{FBC_COOKIE}={fbc}{self._keep}")
        return out


def valid_fb_cookie(value: str) -> bool:
    """An ``_fbp``/``_fbc`` value Meta's Parameter Builder keeps: 4 parts, or 5 with a known appendix."""
    parts = value.split(".")
    if len(parts) == 5:
        appendix = parts[4]
        return appendix in _APPENDIX_TOKENS if len(appendix) == 2 else len(appendix) == 8
    return len(parts) == 4 and _COOKIE_OCTETS.match(value) is not None


def subdomain_index(host: str) -> int:
    """Meta's subdomain index: which domain the cookie is set on ('com' = 0, 'example.com' = 1, 'www.example.com' = 2)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return _labels(host) - 1
    return 0


def _host_numbers(host: str) -> tuple[int, int]:
    """(labels, Meta's subdomain index) of a host, remembered: a gateway answers for a handful of hosts.

    Every answer with a cookie needs both, and ``subdomain_index`` asks
    ``ipaddress`` first, which raises for every name that is not an address.
    The memo stops growing at ``_HOST_MEMO_SIZE`` and keeps no host longer
    than a DNS name (a flood of made-up Host headers then costs the
    computation each time, not memory).
    """
    numbers = _HOST_MEMO.get(host)
    if numbers is None:
        numbers = (_labels(host), subdomain_index(host))
        if len(_HOST_MEMO) < _HOST_MEMO_SIZE and len(host) <= _MAX_HOST_NAME:
            _HOST_MEMO[host] = numbers
    return numbers


_HOST_MEMO: dict[str, tuple[int, int]] = {}
_HOST_MEMO_SIZE = 1024
_MAX_HOST_NAME = 253  # a DNS name's longest text: a longer Host header is computed each time, never kept


def _cookie_text(value: str) -> str:
    """The FPID value percent-encoded as sGTM writes it (``quote`` with ``.`` safe); most need nothing."""
    return value if _QUOTE_SAFE.match(value) else quote(value, safe=".")


_QUOTE_SAFE = re.compile(r"[A-Za-z0-9_.~-]*\Z")  # what quote(value, safe=".") leaves as it is


def _labels(host: str) -> int:
    return len([label for label in host.split(".") if label]) or 1


def _host(header: str | None) -> str:
    """The Host header without its port (an IPv6 literal keeps its brackets)."""
    if not header:
        return ""
    if header.startswith("["):
        return header.partition("]")[0] + "]"
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _fpid_client_id(value: str) -> str | None:
    match = _FPID.match(value)
    return match.group(1) if match else None


def _fbclid(event: Event) -> str | None:
    """The click id the page URL brought (the GA4 client reads it from dl), else the referrer's."""
    clicked = event.fbclid
    if not clicked and event.page_referrer and "fbclid=" in event.page_referrer:
        match = _FBCLID_IN_URL.search(event.page_referrer)
        clicked = unquote(match.group(1)) if match else None
    return clicked if clicked and _COOKIE_OCTETS.match(clicked) else None
