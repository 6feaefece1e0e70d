"""What the GA4 tags and the GA4 sender share: endpoints, limits, consent on the wire, and who may send refunds.

Each constant names the Google page it comes from.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from gateway.consent import decode_gcd, gcd_is_readable
from gateway.event import CONSENT_SIGNALS, Consent, Event

DESTINATION = "ga4"

# Ref - https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference
# "If you want your data to be collected in the EU, use https://region1.google-analytics.com/mp/collect";
# gtag.js sends its own hits to the same host's /g/collect, and so does sGTM's GA4 tag.
DEFAULT_COLLECT_BASE = "https://region1.google-analytics.com"
COLLECT_PATH = "/g/collect"
MP_PATH = "/mp/collect"
# Ref - https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events
# The validation server takes the same request at /debug/mp/collect and records nothing.
MP_DEBUG_PATH = "/debug/mp/collect"

MEASUREMENT_ID_PATTERN = r"^G-[A-Z0-9]{4,12}$"

# Google documents no limit on the lines of one batched /g/collect POST; we keep the Measurement
# Protocol's "up to 25 events per request" (reference above) so that no request is larger than
# what Google documents for any of its collection endpoints.
MAX_LINES_PER_REQUEST = 25
# Ref - https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference
# timestamp_micros "can be backdated up to 72 hours"; an older one would have the event dropped.
MP_MAX_BACKDATE = timedelta(hours=72)

# Events the order systems send for money going back (gateway.ledger's names).
REFUND_EVENT_NAMES = frozenset({"refund", "order_cancelled"})

def authenticated(event: Event) -> bool:
    """True for an order change that came from a signed order webhook and went through the ledger.

    Only such events may become GA4 refunds: the gateway's stamp says the
    client verified a signature, and ``adjustment`` is set by the ledger only.
    """
    return event.adjustment is not None and event.source is not None and event.source.authenticated


def from_order_system(event: Event) -> bool:
    """True for anything a signed order client made (a purchase too): not a browser hit.

    Read from the gateway's stamp, which no request can set.
    """
    return event.source is not None and event.source.authenticated


# -- consent on the wire -------------------------------------------------------------------
# gcs=G1<ad_storage><analytics_storage>, 1 granted, 0 denied (decoded in gateway.consent).
# gcd letters: 't' granted by default and never updated, 'p' denied by default and never updated:
# the gateway's consent.default is exactly such a default. A gcd the page did not send is written in
# the shape today's gtag.js sends (13<a>3<b>3<c>2<d>5l1, see tests/fixtures/ga4/, captured hits).
_GCD_LETTER = {"granted": "t", "denied": "p"}
_GCD_POSITIONS = (2, 4, 6, 8)
_GCD_SHAPE = "13{}3{}3{}2{}5l1"


def gcs(consent: Consent) -> str:
    return "G1" + ("1" if consent.ad_storage == "granted" else "0") + ("1" if consent.analytics_storage == "granted" else "0")


def gcd(consent: Consent, sent: str | None) -> str:
    """The page's own gcd when it says what the gateway decided; else one that does.

    A signal the page left unset ('l') took the container's default in the
    gateway, and GA4 must see that default, not "not set" (which it would
    read as granted). Positions whose state already agrees keep the page's
    letter, so the default-versus-update detail survives.

    Pages send a handful of distinct gcd strings, and every hit needs this:
    the answer is kept per (states, page's gcd), up to ``_GCD_MEMO_SIZE``.
    """
    states = (consent.ad_storage or "denied", consent.analytics_storage or "denied",
              consent.ad_user_data or "denied", consent.ad_personalization or "denied")
    key = (states, sent)
    written = _GCD_MEMO.get(key)
    if written is None:
        written = _gcd(states, sent)
        if len(_GCD_MEMO) < _GCD_MEMO_SIZE:
            _GCD_MEMO[key] = written
    return written


_GCD_MEMO: dict[tuple[tuple[str, ...], str | None], str] = {}
_GCD_MEMO_SIZE = 4096  # past this, new pairs are computed each time: a flood of made-up gcds cannot grow memory


def _gcd(states: tuple[str, ...], sent: str | None) -> str:
    # A gcd the gateway could not read counted as every signal denied; it is not forwarded as it came.
    page = decode_gcd(sent) if sent and gcd_is_readable(sent) else {}
    if page and all(page.get(signal) == state for signal, state in zip(CONSENT_SIGNALS, states)):
        return sent or ""
    if not page or sent is None:
        return _GCD_SHAPE.format(*(_GCD_LETTER[state] for state in states))
    letters = list(sent)
    for position, signal, state in zip(_GCD_POSITIONS, CONSENT_SIGNALS, states):
        if page.get(signal) != state:
            letters[position] = _GCD_LETTER[state]
    return "".join(letters)


def digest_number(*parts: str) -> int:
    """A stable 31-bit number from the parts, for ids GA4 wants in its ``<number>.<seconds>`` client id form."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
