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
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ConsentState = Literal["granted", "denied"]
CONSENT_SIGNALS: tuple[str, ...] = ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


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


class Source(_Model):
    """Where an event came from: stamped by the gateway, never read from a request.

    ``client`` is the client type that parsed the request (``ga4``,
    ``json_beacon``, ``order_webhook``, ``shopify``, ``woocommerce``);
    ``authenticated`` says whether that client verified a signature over the
    request (the order webhooks) or takes anyone's requests (GA4 hits and
    beacons). Triggers test it as ``source.client`` and ``source.authenticated``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    client: str
    authenticated: bool


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
    refund_id: str | None = Field(None, min_length=1)
    full_refund: bool | None = None
    retained_value: float | None = None
    refund_pending: bool | None = None
    total: float | None = None
    exchange_rate: float | None = Field(None, gt=0)
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
    adjustment_id: str = Field(min_length=1)
    order_id: str | None = None
    uploaded_with_order_id: bool = True
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
    event_name: str = Field(min_length=1, max_length=200)
    client_id: str | None = None
    user_id: str | None = None
    event_id: str | None = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
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
    consent: Consent = Field(default_factory=Consent)
    source: Source | None = None
    order: OrderData | None = None
    adjustment: Adjustment | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        """The gateway stamped the event as coming from a client that verified the request's signature."""
        return self.source is not None and self.source.authenticated

    def to_json_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, without empty fields."""
        return self.model_dump(mode="json", exclude_none=True)


EVENT_FIELDS: frozenset[str] = frozenset(Event.model_fields)
# Set by the gateway, the order clients and the ledger; never taken from a request.
INTERNAL_FIELDS: tuple[str, ...] = ("source", "order", "adjustment")
