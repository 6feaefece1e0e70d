"""Consent Mode v2: reading the signals, and enforcing them on an event.

Reading. gtag.js carries consent in two query parameters:

- ``gcs=G1xy``: ``x`` is ad_storage, ``y`` analytics_storage; ``1`` granted,
  ``0`` denied, ``-`` not set. It says nothing about ad_user_data or
  ad_personalization, which is why ``gcd`` exists.
- ``gcd``, e.g. ``13r3r3r2r5l1`` (the 2024 form is ``11p1p1p1p5``): the
  letters at index 2, 4, 6 and 8 are ad_storage, analytics_storage,
  ad_user_data and ad_personalization, whatever stands between them (a live
  container sends ``13p3pPp2p5l1``). Each letter packs the default and the
  update into one symbol (see ``_GCD_LETTERS``); the effective state is the
  update when there is one, else the default. ``l`` means the page never set
  that signal. A ``gcd`` whose letters cannot be read denies all four.

Google publishes no reference for ``gcd``: the letter table comes from hits
gtag.js sends. Its consent mode reference
(https://support.google.com/analytics/answer/13802165) defines the four
signals but says nothing of a hit with ``gcs`` and no ``gcd``; we found no
page of Google's saying such a hit takes ad_user_data from ad_storage, so we
do not infer it: the signal stays unset and the default decides.

JSON bodies (the beacon, webhooks) carry ``{"ad_user_data": "granted", ...}``.

Decoders never raise: a garbled ``gcs`` is the page's problem, and the
request still counts, with the default for what it did not say. A JSON
``consent`` object that is not one of ours is refused with a 400 instead,
because its sender is our integration, and a typo there would otherwise
silently turn into the default for every order.

Enforcing (``ConsentPolicy.apply``, which calls ``apply_consent``), once,
before any rule or tag sees the event:

- a signal the request did not carry takes the client's ``consent.default``
  when its config sets one, else the container's ``consent.default``;
- ``ad_user_data`` denied: the redaction pass of ``gateway.redact``
  (``user_data`` goes; ids holding an address become keyed pseudonyms;
  URLs, free text, ``extra``, ``user_properties`` and items lose addresses,
  phone numbers and digests);
- ``ad_storage`` denied: ``fbp`` and ``fbc``, which are read from cookies, go.

Click ids from the URL (gclid, gbraid, wbraid, fbclid) and the IP address
stay here: each tag decides what it sends of them under ``ad_storage``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import BadRequest
from gateway.event import CONSENT_SIGNALS, Consent, ConsentState, Event
from gateway.redact import IDENTIFIERS, NUMERIC_IDS, PSEUDONYM_PREFIX, Pseudonym, identifier_is_personal, redact_event

if TYPE_CHECKING:
    from gateway.config import ConsentDefaults, Container

PSEUDONYM_SECRET = "pseudonym"  # the install_secrets row that keys the pseudonyms
# GA4's data redaction removes query parameters by name; these are the names it is commonly set up with,
# and the container's consent.redact_query_parameters replaces the list.
DEFAULT_REDACT_QUERY_PARAMETERS = frozenset({
    "email", "e-mail", "mail", "phone", "tel", "name", "first_name", "last_name", "address", "zip", "postcode",
})

_GCS_STATES: dict[str, ConsentState] = {"1": "granted", "0": "denied"}

# One letter = (default, update). Only the effective state matters here:
# the update when there is one, else the default. 'l' (not set) and unknown
# letters are absent on purpose.
_GCD_LETTERS: dict[str, ConsentState] = {
    "p": "denied",   # denied by default, no update
    "q": "denied",   # denied by default, denied on update
    "t": "granted",  # granted by default, no update
    "r": "granted",  # denied by default, granted on update
    "m": "denied",   # no default, denied on update
    "n": "granted",  # no default, granted on update
    "u": "denied",   # granted by default, denied on update
    "v": "granted",  # granted by default, granted on update
}
_GCD_NOT_SET = "l"
_GCD_POSITIONS = tuple(zip((2, 4, 6, 8), CONSENT_SIGNALS))
_GCD_MAX_LENGTH = 64  # today's strings have 10 to 12 characters
_ALL_DENIED: dict[str, ConsentState] = dict.fromkeys(CONSENT_SIGNALS, "denied")

_MAPPING_STATES: dict[Any, ConsentState] = {"granted": "granted", "denied": "denied"}
_SIGNAL_SET = frozenset(CONSENT_SIGNALS)


def decode_gcs(value: str) -> dict[str, ConsentState]:
    """``G1xy`` -> ad_storage from x, analytics_storage from y; anything else -> {}."""
    if not isinstance(value, str) or len(value) != 4 or not value.startswith("G1"):
        return {}
    out: dict[str, ConsentState] = {}
    ad = _GCS_STATES.get(value[2])
    if ad is not None:
        out["ad_storage"] = ad
    analytics = _GCS_STATES.get(value[3])
    if analytics is not None:
        out["analytics_storage"] = analytics
    return out


def decode_gcd(value: str) -> dict[str, ConsentState]:
    """The effective state of each signal a ``gcd`` string sets, read by position.

    The four signal letters sit at indexes 2, 4, 6 and 8 whatever stands
    between them: a live container was seen sending ``13p3pPp2p5l1``, a
    capital letter where a digit usually sits, and the visitor's denial must
    still count. A string whose letters cannot be read (too short, too long,
    a letter we do not know in a signal's place) says every signal is
    denied, never "not set": "not set" would hand the decision to the
    container's default, which may be "granted", on the strength of a string
    we could not read. ``l`` is read, and means the page did not set it.
    """
    if not isinstance(value, str):
        return {}
    if not 9 <= len(value) <= _GCD_MAX_LENGTH:
        return dict(_ALL_DENIED)
    out: dict[str, ConsentState] = {}
    for i, signal in _GCD_POSITIONS:
        letter = value[i]
        state = _GCD_LETTERS.get(letter)
        if state is not None:
            out[signal] = state
        elif letter != _GCD_NOT_SET:
            return dict(_ALL_DENIED)
    return out


def gcd_is_readable(value: str) -> bool:
    """Whether ``decode_gcd`` reads this string's letters (rather than falling back to every signal denied)."""
    return (9 <= len(value) <= _GCD_MAX_LENGTH
            and all(value[i] in _GCD_LETTERS or value[i] == _GCD_NOT_SET for i, _ in _GCD_POSITIONS))


def consent_from_mapping(obj: object, field: str) -> Consent:
    """A JSON ``consent`` object: the four signals, "granted"/"denied" or true/false.

    ``null`` for a signal means the sender did not say (the default applies).
    Anything else is refused, naming ``field.<key>`` and never the value.
    """
    if not isinstance(obj, Mapping):
        raise BadRequest(400, "invalid consent", field=field)
    states: dict[str, ConsentState] = {}
    for key, value in obj.items():
        if key not in _SIGNAL_SET:
            raise BadRequest(400, "invalid consent", field=f"{field}.{_key_label(key)}")
        if value is None:
            continue
        if value is True:
            states[key] = "granted"
        elif value is False:
            states[key] = "denied"
        else:
            state = _MAPPING_STATES.get(value) if isinstance(value, str) else None
            if state is None:
                raise BadRequest(400, "invalid consent", field=f"{field}.{key}")
            states[key] = state
    return Consent(**states)


def _key_label(key: object) -> str:
    text = key if isinstance(key, str) else type(key).__name__
    return text if len(text) <= 64 else text[:64] + "..."


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """What ``apply_consent`` did: signals taken from the default, and field paths removed.

    Paths only, never values, so the decision can be logged and counted.
    """

    defaulted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


# The heuristics below predate gateway.personal and gateway.redact, which enforcement now uses; they
# stay, unchanged, because the debugger's masks (gateway.debug.masking) import them by name.

# Key names that suggest personal data, matched against the lower-cased key
# with separators kept ("customerEmail" -> "customeremail" still matches).
_PII_KEY = re.compile(
    r"e[-_ ]?mail"
    r"|(?<!i)(?<!smart)(?<!micro)(?<!head)(?<!ear)phone|mobile[-_ ]?(?:number|no)|(?:^|[-_ .])(?:tel|fax|cell)(?:$|[-_ .]|number|no)"
    r"|(?:first|last|sur|given|family|full|middle|maiden|customer|user|billing|shipping|contact|buyer)[-_ ]?name"
    r"|(?:^|[-_ .])[fl]name(?:$|[-_ .])"
    r"|street|address|postal|post[-_ ]?code|zip|(?:^|[-_ .])city(?:$|[-_ .])"
    r"|birth|(?:^|[-_ .])dob(?:$|[-_ .])|gender"
    r"|(?:^|[-_ .])ssn(?:$|[-_ .])|passport|national[-_ ]?id|tax[-_ ]?id"
)
_EMAIL_VALUE = re.compile(r"[^@\s<>(),;:\"]+@[^@\s<>(),;:\"]+\.[A-Za-z]{2,}")
# Only the characters phone numbers are written with, and enough of them.
_PHONE_CHARS = re.compile(r"[0-9 ().+/-]{7,32}")
_PHONE_SEPARATED = re.compile(r"[ ()-]")


def _looks_like_phone(value: str) -> bool:
    if not _PHONE_CHARS.fullmatch(value):
        return False
    text = value.strip()
    digits = sum(c.isdigit() for c in text)
    if text.startswith("+"):
        return 7 <= digits <= 15 and text.count("+") == 1      # international form
    if text.startswith("0") and not text.startswith("00"):
        return 9 <= digits <= 11 and "+" not in text          # national form with trunk 0
    if "+" in text:
        return False
    # Formatted national numbers without a trunk prefix, e.g. (555) 123-4567.
    # Bare digit strings are left alone: they are mostly ids and timestamps.
    return 10 <= digits <= 11 and _PHONE_SEPARATED.search(text) is not None


def _looks_personal(value: str) -> bool:
    return ("@" in value and _EMAIL_VALUE.search(value) is not None) or _looks_like_phone(value)


def _is_personal_key(key: object) -> bool:
    return isinstance(key, str) and _PII_KEY.search(key.lower()) is not None


def apply_consent(
    event: Event,
    defaults: ConsentDefaults,
    *,
    query_names: frozenset[str] = DEFAULT_REDACT_QUERY_PARAMETERS,
    pseudonym: Pseudonym | None = None,
) -> ConsentDecision:
    """Fill missing signals from ``defaults`` and remove what the consent state forbids.

    Mutates ``event`` in place and says what it did. ``pseudonym`` keys the
    identifiers' pseudonyms; the gateway passes its install secret's
    (``ConsentPolicy``), and without one a key made for this process is used,
    never a plain hash.
    """
    consent = event.consent
    defaulted: list[str] = []
    for signal in CONSENT_SIGNALS:
        if getattr(consent, signal) is None:
            setattr(consent, signal, getattr(defaults, signal))
            defaulted.append(signal)

    removed: list[str] = []
    if consent.ad_user_data == "denied":
        # Only here: with ad_user_data granted the visitor allowed their data to travel, and a request
        # path that walked every string of every granted event would pay for nothing.
        removed = redact_event(event, query_names, pseudonym or _PROCESS_KEY.pseudonym)

    if consent.ad_storage == "denied":
        if event.fbp is not None:
            event.fbp = None
            removed.append("fbp")
        if event.fbc is not None:
            event.fbc = None
            removed.append("fbc")

    return ConsentDecision(tuple(defaulted), tuple(removed))


class Pseudonyms:
    """Keyed pseudonyms: ``pid-`` and 32 hex digits of HMAC-SHA256(key, value).

    Keyed so that the pseudonym of an address cannot be computed by anyone
    without the key, and so cannot be joined with any vendor's or any other
    install's hash of the same address.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonym key needs at least 16 bytes")
        self._key = key

    def pseudonym(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:32]


# Used only where no install secret was given (a unit test, the debugger's dry run): a fresh key per
# process, so even then a pseudonym is never a plain, joinable hash.
_PROCESS_KEY = Pseudonyms(secrets.token_bytes(32))


class ConsentPolicy:
    """Consent as one container applies it: its default, each client's own default, the redaction settings, the key.

    Built once per container (``for_container``); the gateway hands it the
    install's secret at start (``use_key``), so no request reads it.

    Each client may set ``consent.default`` (an order system or a call
    tracker carries no Consent Mode signals, but the shop may have recorded
    consent at checkout): a signal it names overrides the container's
    default for that client's events, a signal it leaves out keeps the
    container's.
    """

    __slots__ = ("defaults", "by_client", "query_names", "_pseudonyms")

    def __init__(
        self,
        defaults: ConsentDefaults,
        by_client: Mapping[str, ConsentDefaults] | None = None,
        query_names: frozenset[str] = DEFAULT_REDACT_QUERY_PARAMETERS,
    ) -> None:
        self.defaults = defaults
        self.by_client = dict(by_client or {})
        self.query_names = query_names
        self._pseudonyms = Pseudonyms(secrets.token_bytes(32))

    @classmethod
    def for_container(cls, container: Container) -> ConsentPolicy:
        section = container.file.consent
        base = section.default
        by_client: dict[str, ConsentDefaults] = {}
        for entry in container.clients:
            own = entry.config.consent
            if own is not None:
                given = own.default.model_dump(exclude_none=True)
                if given:
                    by_client[entry.source.client] = base.model_copy(update=given)
        names = frozenset(name.lower() for name in section.redact_query_parameters)
        return cls(base, by_client, names)

    def use_key(self, key: bytes) -> None:
        """The install's secret (``Storage.install_secret``): pseudonyms stay the same across restarts and instances."""
        self._pseudonyms = Pseudonyms(key)

    def pseudonym(self, value: str) -> str:
        return self._pseudonyms.pseudonym(value)

    def log_ref(self, value: str) -> str:
        """An id as a log line may show it: itself, or its pseudonym when it is or holds an address or a digest.

        Logs outlive consent decisions and are read by people, so this holds
        whatever the event's consent said. An order number of digits alone
        is shown as it is, so an operator can still find the order.
        """
        return self.pseudonym(value) if identifier_is_personal(value, numeric_id=True) else value

    def stored_key(self, value: str) -> str:
        """A webhook's request key as stored for dedupe: its pseudonym when it is or holds an address, a phone
        number (digits alone included) or a digest. Nobody reads it, so nothing is lost; it is stable, so a
        redelivery still finds it."""
        return self.pseudonym(value) if identifier_is_personal(value) else value

    def defaults_for(self, event: Event) -> ConsentDefaults:
        """The default for this event's client: its own when it set one, else the container's."""
        source = event.source
        if source is None or not self.by_client:
            return self.defaults
        return self.by_client.get(source.client, self.defaults)

    def apply(self, event: Event) -> ConsentDecision:
        """``apply_consent`` with this container's defaults, redaction settings and key."""
        return apply_consent(event, self.defaults_for(event), query_names=self.query_names,
                             pseudonym=self._pseudonyms.pseudonym)

    def pseudonymise_ids(self, events: list[Event]) -> None:
        """Replace personal identifiers before the order ledger reads a transaction id (see ``gateway.app``).

        The full pass runs later, in the pipeline; this early step only makes
        sure an address used as an order id never becomes a ledger key, a
        held change or a log line. It leaves the consent signals as they are,
        so the pipeline still knows which came from the default.
        """
        for event in events:
            state = event.consent.ad_user_data or self.defaults_for(event).ad_user_data
            if state != "denied":
                continue
            for name in IDENTIFIERS:
                value = getattr(event, name)
                if value is not None and identifier_is_personal(value, numeric_id=name in NUMERIC_IDS):
                    setattr(event, name, self._pseudonyms.pseudonym(value))
            order = event.order
            if order is not None and order.refund_id is not None and identifier_is_personal(order.refund_id, True):
                order.refund_id = self._pseudonyms.pseudonym(order.refund_id)
