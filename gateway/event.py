"""The common event model: what every client builds and every tag reads.

Key names follow server-side Google Tag Manager's common event data, so that
people moving from sGTM find the same names in triggers and tags
(``event_name``, ``client_id``, ``user_data.email_address``, ``ip_override``,
...). Values that arrive already hashed keep sGTM's ``sha256_*`` names; the
identity module decides per vendor how raw values are normalised and hashed.

Anything a client receives that has no field here goes to ``extra``, so a
trigger can still test it (``extra.page_type``) without the model growing a
field per vendor.

Three fields are internal (``INTERNAL_FIELDS``): no request sets them, and
a request that tries gets a 400 naming the field. ``source`` is stamped by
the gateway after the client parsed the request: which client, and whether
that client verified a signature. ``order`` is filled by the order clients
(the signed webhooks) from what the order system reported. ``adjustment``
is filled by the order ledger. Only events whose ``source`` is authenticated
can change an order in the ledger; see ``gateway.ledger``.

The models are ``msgspec.Struct``s rather than pydantic models because an
event is built and encoded on every hit: with pydantic, its validation and
``model_dump`` cost a GA4 page view about 115k instructions; as Structs the
whole request costs 179k fewer (BENCHMARKS.md, "A fifth pass").
The price is that constructing a Struct checks field names but not values:
the GA4 client, which builds its events from values it has checked itself,
constructs them directly; everything else that turns outside data into an
event (a beacon's JSON, the order clients' webhooks, a stored event, the
debugger's recording) goes through ``from_data``, which validates every
field, its type and its constraints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar

import msgspec

ConsentState = Literal["granted", "denied"]
CONSENT_SIGNALS: tuple[str, ...] = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")

_M = TypeVar("_M", bound="_Model")


class _Model(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Keyword-only, unknown keys refused; encoded without the fields that hold their default.

    Every default is ``None`` except those given by a factory other than
    ``dict``/``list`` (msgspec never omits those), so the JSON leaves out
    exactly the empty fields, as pydantic's ``exclude_none`` did: an empty
    ``extra`` and ``consent`` stay, ``Adjustment.uploaded_with_order_id`` stays.
    """

    @classmethod
    def from_data(cls: type[_M], data: Mapping[str, Any]) -> _M:
        """Validate ``data`` into the model; raises ``msgspec.ValidationError`` (``invalid_field`` reads it).

        ``data`` holds JSON-like values, models or datetimes. Lax, as pydantic
        was: numeric text reads as a number, ISO 8601 text as a datetime, an
        integer as a float.
        """
        return msgspec.convert(data, cls, strict=False)


class Address(_Model):
    first_name: str | None = None
    last_name: str | None = None
    street: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None
    sha256_first_name: str | None = None
    sha256_last_name: str | None = None
    sha256_street: str | None = None


class UserData(_Model):
    """Everything here is personal data: consent removes all of it at once."""

    email_address: str | None = None
    phone_number: str | None = None
    sha256_email_address: str | None = None
    sha256_phone_number: str | None = None
    address: Address | None = None
    gender: str | None = None
    date_of_birth: str | None = None
    external_id: str | None = None


class Consent(_Model):
    """Consent Mode v2 state; ``None`` means the request carried no signal."""

    ad_storage: ConsentState | None = None
    analytics_storage: ConsentState | None = None
    ad_user_data: ConsentState | None = None
    ad_personalization: ConsentState | None = None


class Source(_Model, frozen=True):
    """Where an event came from: stamped by the gateway, never read from a request.

    ``client`` is the client type that parsed the request (``ga4``,
    ``json_beacon``, ``order_webhook``, ``shopify``, ``woocommerce``);
    ``authenticated`` says whether that client verified a signature over the
    request (the order webhooks) or takes anyone's requests (GA4 hits and
    beacons). Triggers test it as ``source.client`` and ``source.authenticated``.
    """

    client: str
    authenticated: bool


def _true() -> bool:
    return True


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _empty() -> dict[str, Any]:
    return {}


class OrderData(_Model):
    """What an order system reported about an order beyond the public fields; set by the order clients only.

    The ledger reads it (with ``transaction_id``, ``value`` and ``currency``)
    from authenticated events; the Meta tag reads ``refund_id`` and
    ``placed_on_web``.

    - ``refund_id``: the refund's identity across redeliveries: the order
      system's own id, else a digest of the signed body (never an unsigned
      header).
    - ``full_refund``: the order system calls it a full refund (it retracts).
    - ``retained_value``: what the order system says remains; compared with
      the ledger's arithmetic, never believed.
    - ``refund_pending``: the money has not moved yet (a Shopify refund
      transaction still ``pending``): the ledger holds the refund until a
      later webhook shows it succeeded.
    - ``total``: the order's total as the order system reports it: the base
      of every refund's share.
    - ``exchange_rate``: order-currency units per unit of the refund's
      currency, when the order system refunded in another currency and said
      at which rate.
    - ``backstop``: the change comes from a cumulative view of the order
      (Shopify ``orders/updated``): applied to an order the ledger knows,
      never held for one it does not.
    - ``placed_on_web``: the buyer placed the order in a browser on the
      shop's web storefront (Shopify ``source_name: web``).
    """

    # The flags are True or absent, so that an event's JSON names only what applies.
    refund_id: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    full_refund: bool | None = None
    retained_value: float | None = None
    refund_pending: bool | None = None
    total: float | None = None
    exchange_rate: Annotated[float, msgspec.Meta(gt=0)] | None = None
    backstop: bool | None = None
    placed_on_web: bool | None = None


ConversionStatus = Literal["uploaded", "pending", "failed", "none"]


class Adjustment(_Model):
    """A change to a conversion already reported: filled by the order ledger from its own arithmetic.

    ``conversion_time`` and ``uploaded_with_order_id`` describe the original
    upload, because Google identifies the conversion by ``orderId`` when it
    had one and by ``gclid`` + conversion time otherwise. ``adjustment_id`` is
    stable for one refund or cancellation, so a redelivered webhook maps to
    the same outbox item.
    """

    type: Literal["RETRACTION", "RESTATEMENT", "ENHANCEMENT"]
    adjustment_id: Annotated[str, msgspec.Meta(min_length=1)]
    order_id: str | None = None
    # A factory, not a plain default, so that the JSON names it even when True (see ``_Model``).
    uploaded_with_order_id: bool = msgspec.field(default_factory=_true)
    gclid: str | None = None
    conversion_time: datetime | None = None
    conversion_uploaded_at: datetime | None = None
    adjusted_value: float | None = None
    currency: str | None = None
    # Conversion action resource name -> what became of this gateway's upload of the conversion:
    # uploaded, pending (in the outbox), failed (dead-lettered) or none (no upload for that action).
    # None: not known (an order recorded before the ledger kept it); the adjustment tag then assumes it exists.
    conversions: dict[str, ConversionStatus] | None = None


class Event(_Model):
    event_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    client_id: str | None = None
    user_id: str | None = None
    event_id: str | None = None
    timestamp: datetime = msgspec.field(default_factory=_now)
    ip_override: str | None = None
    user_agent: str | None = None
    page_location: str | None = None
    page_referrer: str | None = None
    page_title: str | None = None
    language: str | None = None
    screen_resolution: str | None = None
    transaction_id: str | None = None
    value: float | None = None
    currency: str | None = None
    tax: float | None = None
    shipping: float | None = None
    items: list[dict[str, Any]] | None = None
    user_data: UserData | None = None
    user_properties: dict[str, Any] | None = None
    gclid: str | None = None
    gbraid: str | None = None
    wbraid: str | None = None
    fbclid: str | None = None
    fbc: str | None = None
    fbp: str | None = None
    consent: Consent = msgspec.field(default_factory=Consent)
    source: Source | None = None
    order: OrderData | None = None
    adjustment: Adjustment | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=_empty)  # not ``dict``: kept in the JSON when empty

    @property
    def authenticated(self) -> bool:
        """The gateway stamped the event as coming from a client that verified the request's signature."""
        return self.source is not None and self.source.authenticated

    def to_json_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, without empty fields (the debugger's record of it)."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    def to_json_bytes(self) -> bytes:
        """The event as JSON, without empty fields: the http_request tag's body and outbox row, encoded once.

        Fields come in the model's order and the keys of free-form objects
        (``extra``, ``items``, ``user_properties``) sorted, so the same event
        gives the same bytes whatever order its client read the keys in; the
        http_request tag's idempotency key is a digest of them. Times are
        ISO 8601, UTC as ``Z``; a non-finite number is ``null``.
        """
        return _ENCODER.encode(self)


_ENCODER = msgspec.json.Encoder(order="deterministic")

EVENT_FIELDS: frozenset[str] = frozenset(Event.__struct_fields__)
# Set by the gateway, the order clients and the ledger; never taken from a request.
INTERNAL_FIELDS: tuple[str, ...] = ("source", "order", "adjustment")


def invalid_field(exc: msgspec.ValidationError) -> tuple[tuple[str, ...], str]:
    """Where ``from_data`` found a problem, as field names and list positions, and what it is, never the value.

    msgspec names the first problem it finds, ending its message with
    ``- at `$.user_data.address.city``; a missing or unknown key is named in
    the message instead and added to the path here, so that the path names
    the field as pydantic's ``loc`` did. A quoted value (msgspec quotes the
    value of an enum it refused) is cut off, since a request's values are
    never echoed.
    """
    message = str(exc)
    message, at, path = message.rpartition(" - at `$") if " - at `$" in message else (message, "", "")
    loc = [name or index for name, index in _PATH_PART.findall(path.removesuffix("`"))] if at else []
    for prefix, problem in _KEY_PROBLEMS:
        if message.startswith(prefix) and message.endswith("`"):
            return (*loc, message[len(prefix):-1]), problem
    return tuple(loc), message.split(" '", 1)[0]


_PATH_PART = re.compile(r"\.([^.\[\]]+)|\[([^\]]*)\]")  # .name, or [0] in a list ([...] in a mapping)
_KEY_PROBLEMS = (("Object missing required field `", "Field required"),
                 ("Object contains unknown field `", "Extra inputs are not permitted"))
