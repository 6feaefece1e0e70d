"""Meta Conversions API: one server event per event, sent to ``POST /{api_version}/{pixel_id}/events``.

Reference: https://developers.facebook.com/docs/marketing-api/conversions-api/parameters
(server event, customer information and custom data parameters). The item is
one element of the request's ``data`` array; the sender (``tags/_meta_sender.py``)
batches up to 1000 of them per pixel and adds the access token.

Wire rules that surprised us, and what we do about them:

- Deduplication with the browser pixel works on ``event_name`` + ``event_id``
  (https://developers.facebook.com/docs/marketing-api/conversions-api/deduplicate-pixel-and-server-events),
  so ``event_id`` must be what the page's pixel sends as ``eventID``. It is
  the hit's own ``event_id`` when it has one; for a Purchase without one it
  is the order id (``transaction_id``), the usual convention for the pixel's
  ``eventID``. An order system's purchase always uses the order id: its own
  ids are webhook deliveries, which the page never saw. Anything else gets an
  id hashed from the event (client id, name, time, page), so a rebuilt event
  keeps its id. Our outbox item keeps the id, so our retries never count twice.
- ``action_source`` is a promise to Meta ("accurate to the best of your
  knowledge"). The rule reads the gateway's stamp, never the request: an
  event from an authenticated client (the signed order webhooks), and every
  refund, takes ``order_action_source`` (default ``system_generated``),
  except an order the buyer placed in a browser on the web storefront
  (``order.placed_on_web``, Shopify's ``source_name: web``) that carries the
  browser's user agent and page: that is a ``website`` event. Every other
  event comes from a browser hit (the ga4 and json_beacon clients) and is
  ``website``. A website event without ``user_agent`` or ``page_location`` is
  skipped, since Meta requires ``client_user_agent`` and ``event_source_url``
  and one bad event fails the whole request.
- An address that is no customer's (``0.0.0.0``, loopback, link-local,
  multicast, reserved) is never sent as ``client_ip_address``.
- Contact information goes hashed, as lists (Meta takes a string or a list of
  strings); the normalisation is ``gateway.identity.meta``'s. IP address, user
  agent, ``fbc`` and ``fbp`` go unhashed. Without an ``fbc`` cookie, ``fbc`` is
  built from the page URL's ``fbclid`` with the event's time in milliseconds,
  as Meta describes for servers that do not set the cookie.
- Consent is applied here too, not only by the pipeline, and a signal that
  is not ``granted`` (``None``: no signal reached the tag) counts as denied:
  - ``ad_user_data`` denied: by default (``skip_when_denied: [ad_user_data]``)
    the event is not sent at all (``consent_denied``). A tag configured with
    ``skip_when_denied: []`` still sends no customer information whatsoever:
    no IP address, user agent, ``em``, ``ph``, ``external_id``, ``fbp`` or
    ``fbc``. Meta requires ``client_user_agent`` on every website event and
    ``user_data`` on every event, so such an event, website or order system,
    is skipped (``no_customer_information``): there is nothing it may carry.
  - ``ad_storage`` denied: no ``fbp``/``fbc``, and the click ids (``gclid``,
    ``gbraid``, ``wbraid``, ``dclid``, ``gclsrc``, ``fbclid``, ``msclkid``,
    ``ttclid``, ``twclid``, ``li_fat_id``) are taken out of
    ``event_source_url`` and ``referrer_url``.
  - ``ad_personalization`` denied: ``opt_out: true``, Meta's flag for "do not
    use this event for ads delivery optimization, only for attribution"
    (https://developers.facebook.com/documentation/ads-commerce/conversions-api/parameters/server-event).
  Limited Data Use stays the ``limited_data_use`` setting: it is a legal
  regime (US state laws), not a visitor's signal.
- An event whose remaining customer information is empty, or only one of the
  combinations Meta calls invalid (``fn`` + ``ge`` ...), is skipped: Meta would
  refuse it, and with it the whole request.
- A refund (``refund`` or ``order_cancelled``) is a custom ``Refund`` event
  with the refunded amount as a positive value, or with
  ``refund_convention: negative_purchase`` a ``Purchase`` with a negative
  value. Its ``event_id`` is ``refund:<order id>:<refund id>``, never the order
  id, so that Meta does not drop it as a duplicate of the purchase. Only the
  order system refunds: a refund from a browser hit (anyone can send one) is
  skipped. Shopify's refunds carry no customer information; the order ledger
  gives a refund the purchase's hashed identifiers and ``fbp``/``fbc`` when
  the purchase's consent let it keep them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.delivery import Delivery
from gateway.event import Event
from gateway.identity import meta as identity
from gateway.tag import Skip, TagConfig
from tags._meta import (
    DEFAULT_EVENT_NAMES, PURCHASE, REFUND_EVENT_NAMES, ActionSource, insufficient_user_data, without_click_ids,
)

DESTINATION = "meta"

ConsentSignal = Literal["ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"]
_EVENT_NAME_PATTERN = r"^[A-Za-z0-9_\- ]{1,50}$"  # custom event names: under 50 characters


class LimitedDataUse(BaseModel):
    """Ref - https://developers.facebook.com/docs/marketing-apis/data-processing-options"""

    model_config = ConfigDict(extra="forbid", frozen=True)
    country: int = Field(
        0, ge=0, description="data_processing_options_country: 1 for the United States, 0 to let Meta geolocate the event."
    )
    state: int = Field(
        0, ge=0,
        description="data_processing_options_state: 1000 California ... 1013 Rhode Island (Meta's list), "
                    "0 to let Meta geolocate the event. Set it whenever country is set.",
    )


class Config(TagConfig):
    type: Literal["meta_capi"] = Field(description="Send events to Meta's Conversions API.")
    pixel_id: str = Field(pattern=r"^\d{6,20}$", description="Meta dataset (pixel) id; events of one pixel are batched.")
    event_names: dict[str, str] = Field(
        default_factory=dict,
        description="Our event names -> Meta event names, added to (or replacing entries of) the defaults: "
                    "purchase: Purchase, begin_checkout: InitiateCheckout, add_to_cart: AddToCart, "
                    "view_item: ViewContent, generate_lead: Lead, page_view: PageView. "
                    "An event whose name is in neither is skipped (unmapped_event_name).",
    )
    refund_event_name: str = Field(
        "Refund", pattern=_EVENT_NAME_PATTERN,
        description="Custom event name for refund and order_cancelled events (refund_convention: custom_event).",
    )
    refund_convention: Literal["custom_event", "negative_purchase"] = Field(
        "custom_event",
        description="custom_event: a refund is the refund_event_name event with a positive value; "
                    "negative_purchase: a Purchase event with a negative value.",
    )
    order_action_source: ActionSource = Field(
        "system_generated",
        description="action_source of events from an order system (source.authenticated) and of refunds; "
                    "browser hits, and orders placed on the web storefront with the browser's user agent, "
                    "are website events.",
    )
    default_region: str | None = Field(
        None, pattern=r"^[A-Za-z]{2}$",
        description="ISO 3166-1 country of phone numbers written without a country code, "
                    "when the address has no country (e.g. DE reads 0170 1234567 as +49 170 1234567).",
    )
    content_type: Literal["product", "product_group"] = Field(
        "product", description="custom_data.content_type sent with content_ids: product, or product_group for item groups."
    )
    skip_when_denied: list[ConsentSignal] = Field(
        default_factory=lambda: ["ad_user_data"],
        description="Consent signals that, when denied, stop this tag from sending the event at all "
                    "(consent_denied). With [] an event whose ad_user_data is denied still carries no customer "
                    "information at all, so Meta could not take it: it is skipped as no_customer_information.",
    )
    limited_data_use: LimitedDataUse | None = Field(
        None,
        description="Flag every event for Limited Data Use (data_processing_options [LDU]) with this country and state; "
                    "leave out to send no data processing options.",
    )

    @field_validator("event_names")
    @classmethod
    def _meta_names(cls, value: dict[str, str]) -> dict[str, str]:
        for ours, theirs in value.items():
            if not re.match(_EVENT_NAME_PATTERN, theirs):
                raise ValueError(f"the Meta name for {ours} must be 1-50 letters, digits, spaces, _ or -")
        return value

    @field_validator("default_region")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    def meta_name(self, event_name: str) -> str | None:
        """Meta's name for one of our event names: the configured map first, then the defaults."""
        return self.event_names.get(event_name) or DEFAULT_EVENT_NAMES.get(event_name)


def build(event: Event, config: Config) -> list[Delivery]:
    for signal in config.skip_when_denied:
        if _denied(getattr(event.consent, signal)):
            raise Skip("consent_denied")
    when = event.timestamp if event.timestamp.tzinfo else event.timestamp.replace(tzinfo=timezone.utc)
    refund = event.event_name in REFUND_EVENT_NAMES
    authenticated = event.authenticated
    if refund and not authenticated:
        raise Skip("refund_not_authenticated")  # anyone can send a browser hit: only the order system refunds
    web_order = (authenticated and not refund and event.order is not None and bool(event.order.placed_on_web)
                 and bool(event.user_agent) and bool(event.page_location))
    order_system = refund or (authenticated and not web_order)

    if refund:
        event_name, event_id, value = _refund(event, config, when)
    else:
        mapped = config.meta_name(event.event_name)
        if mapped is None:
            raise Skip("unmapped_event_name")
        event_name, event_id, value = mapped, _event_id(event, mapped, order_system, when), event.value
    if event_name == PURCHASE:
        if value is None:
            raise Skip("no_value")
        if not event.currency:
            raise Skip("no_currency")

    item: dict[str, Any] = {
        "event_name": event_name,
        "event_time": int(when.timestamp()),
        "event_id": event_id,
        "action_source": config.order_action_source if order_system else "website",
    }
    if not order_system:
        if not event.user_agent:
            raise Skip("no_user_agent")
        if not event.page_location:
            raise Skip("no_page_location")
    ad_storage = not _denied(event.consent.ad_storage)
    if event.page_location:
        item["event_source_url"] = event.page_location if ad_storage else without_click_ids(event.page_location)
    if event.page_referrer and not order_system:
        item["referrer_url"] = event.page_referrer if ad_storage else without_click_ids(event.page_referrer)
    if _denied(event.consent.ad_personalization):
        item["opt_out"] = True
    item["user_data"] = _user_data(event, config, when)
    custom_data = _custom_data(event, config, value)
    if custom_data:
        item["custom_data"] = custom_data
    if config.limited_data_use is not None:
        item["data_processing_options"] = ["LDU"]
        item["data_processing_options_country"] = config.limited_data_use.country
        item["data_processing_options_state"] = config.limited_data_use.state
    return [
        Delivery(
            destination=DESTINATION,
            batch_key=config.pixel_id,
            # Meta de-duplicates on event name + event id; so does our outbox.
            idempotency_key=f"{DESTINATION}:{config.pixel_id}:{item['event_name']}:{event_id}",
            item=item,
            tag=config.name,
        )
    ]


def _event_id(event: Event, meta_name: str, order_system: bool, when: datetime) -> str:
    order_id = event.transaction_id
    if order_system and meta_name == PURCHASE and order_id:
        return order_id
    if event.event_id:
        return event.event_id
    if meta_name == PURCHASE and order_id:
        return order_id
    basis = "|".join((event.client_id or "", event.event_name, when.isoformat(), event.page_location or ""))
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]


def _refund(event: Event, config: Config, when: datetime) -> tuple[str, str, float | None]:
    order_id = event.transaction_id
    if not order_id:
        raise Skip("no_order_id")
    if event.value is None:
        raise Skip("no_value")
    refund_id = event.order.refund_id if event.order is not None else None
    if not refund_id:
        basis = "|".join((event.event_name, when.isoformat(), repr(event.value), event.currency or ""))
        refund_id = hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]
    event_id = f"refund:{order_id}:{refund_id}"
    if config.refund_convention == "negative_purchase":
        return config.meta_name("purchase") or PURCHASE, event_id, -abs(event.value)
    return config.refund_event_name, event_id, abs(event.value)


def _denied(state: str | None) -> bool:
    """Only ``granted`` lets data go: a missing signal is a doubt, and in doubt the data does not leave."""
    return state != "granted"


def _user_data(event: Event, config: Config, when: datetime) -> dict[str, Any]:
    if _denied(event.consent.ad_user_data):
        # Not even the IP address and user agent: they identify the visitor to Meta as much as a cookie does.
        raise Skip("no_customer_information")
    user_data: dict[str, Any] = dict(identity.customer_information(event.user_data, config.default_region))
    if event.ip_override and _usable_ip(event.ip_override):
        user_data["client_ip_address"] = event.ip_override
    if event.user_agent:
        user_data["client_user_agent"] = event.user_agent
    if not _denied(event.consent.ad_storage):
        fbc = event.fbc or (identity.click_id(event.fbclid, when) if event.fbclid else None)
        if fbc:
            user_data["fbc"] = fbc
        if event.fbp:
            user_data["fbp"] = event.fbp
    if not user_data:
        raise Skip("no_customer_information")
    if insufficient_user_data(frozenset(user_data)):
        raise Skip("insufficient_customer_information")
    return user_data


def _custom_data(event: Event, config: Config, value: float | None) -> dict[str, Any]:
    custom_data: dict[str, Any] = {}
    if value is not None:
        custom_data["value"] = value
    if event.currency:
        custom_data["currency"] = event.currency.upper()
    if event.transaction_id:
        custom_data["order_id"] = event.transaction_id
    contents = []
    for item in event.items or ():
        item_id = item.get("item_id")
        if item_id is None or item_id == "":
            continue
        quantity = item.get("quantity")
        content: dict[str, Any] = {
            "id": str(item_id),
            "quantity": quantity if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0 else 1,
        }
        price = item.get("price")
        if isinstance(price, (int, float)) and not isinstance(price, bool):
            content["item_price"] = price
        contents.append(content)
    if contents:
        custom_data["content_ids"] = [c["id"] for c in contents]
        custom_data["contents"] = contents
        custom_data["num_items"] = sum(c["quantity"] for c in contents)
        custom_data["content_type"] = config.content_type
    return custom_data


def _usable_ip(text: str) -> bool:
    """An IP address that can be a customer's: not 0.0.0.0 (what some platforms record when they have none),
    loopback, link-local, multicast or reserved."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_reserved)
