"""Offline click conversions for Google Ads: one ``ClickConversion`` per event, for ``uploadClickConversions``.

References:
https://developers.google.com/google-ads/api/docs/conversions/upload-offline (Manage offline conversions,
enhanced conversions for leads), https://developers.google.com/google-ads/api/docs/conversions/legacy_oci_guide
(Upload click conversions) and https://developers.google.com/google-ads/api/reference/rpc/latest/ClickConversion.

Wire rules that are easy to get wrong:
- At most one click id. Google refuses ``gbraid`` together with ``wbraid``
  (GBRAID_WBRAID_BOTH_SET), and a gclid is the most precise of the three, so
  gclid wins, then gbraid, then wbraid. A click id is never made up: without
  one the conversion can only be matched through user identifiers.
- ``conversionDateTime`` is wall time in the tag's zone with the offset in
  force at that instant (daylight saving included), never the host's zone.
  Two uploads of the same click at the same second are one conversion to
  Google (CLICK_CONVERSION_ALREADY_EXISTS), which is how retries stay safe.
- ``orderId`` is the transaction id; it makes later adjustments possible by
  order id and lets Google reject a second upload of the same order. Turning
  ``send_order_id`` off uploads without it (adjustments then go by gclid and
  conversion time, which the order ledger records).
- User identifiers (enhanced conversions for leads) only with an explicit
  ``ad_user_data`` grant: hashed email and phone, each in its own object, at
  most five. Custom variables are never combined with user identifiers,
  gbraid or wbraid (Google: keep custom variables away from user data; they
  are not supported with the iOS parameters), so they are dropped then.
- ``consent.adUserData`` mirrors the event's consent; ``adPersonalization``
  only when ``send_ad_personalization`` is on.
- What only the Data Manager API takes sits under ``dataManager`` in its own
  JSON names, and the Google Ads API route leaves it out: ``eventSource``
  when configured; with ``ad_user_data`` granted, the browser's IP address
  and user agent (``eventDeviceInfo``) and Google's session attributes
  (``adIdentifiers.sessionAttributes``), which the Google Ads API no longer
  takes from new adopters since 2026-02-02 and the Data Manager API takes
  from everyone; and custom variables by name (the Data Manager API's
  ``CustomVariable.variable`` is "the name of the custom variable", so ids
  need ``custom_variable_names``).
  Ref: https://developers.google.com/ads/blog/posts/2026/01/changes-to-ip-address-and-session
  Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/upgrade

Batching, OAuth and reading Google's answer are in ``tags/_google_ads_sender.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.delivery import Delivery
from gateway.event import Event
from gateway.identity import clean, sha256_hex
from gateway.identity.google import EmailRule
from gateway.tag import Skip
from tags._google_ads import (
    DATA_MANAGER_EXTRAS,
    DESTINATION,
    GoogleAdsTagConfig,
    batch_key,
    check_custom_variables,
    check_path,
    check_region,
    consent_of,
    consented_user_data,
    custom_variables,
    field_getter,
    format_time,
    plain_text,
    user_identifiers,
)

__all__ = ["DESTINATION", "CartData", "Config", "build"]


class CartData(BaseModel):
    """Where ``cartData`` comes from; the items themselves are the event's ``items``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    merchant_id: int = Field(ge=1, description="Merchant Center id where the items are uploaded.")
    feed_country_code: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="Country of the Merchant Center feed (ISO 3166-1 alpha-2)."
    )
    feed_language_code: str | None = Field(
        None, pattern=r"^[a-z]{2}$", description="Language of the Merchant Center feed (ISO 639-1)."
    )
    local_transaction_cost_field: str | None = Field(
        None,
        description="Event field holding the sum of cart-level discounts (e.g. extra.discount), "
        "sent as localTransactionCost.",
    )
    product_id_key: str = Field(
        "item_id", min_length=1, description="Key of each entry in items that holds the Merchant Center product id."
    )

    @field_validator("local_transaction_cost_field")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)


class Config(GoogleAdsTagConfig):
    type: Literal["google_ads_click_conversion"] = Field(
        description="Upload one offline click conversion per event to Google Ads."
    )
    send_order_id: bool = Field(True, description="Send transaction_id as orderId (recommended; adjustments use it).")
    send_user_identifiers: bool = Field(
        True,
        description="With ad_user_data granted, add hashed email and phone (enhanced conversions for leads).",
    )
    send_ad_personalization: bool = Field(
        False, description="Also send consent.adPersonalization (Google documents it for user-data uploads)."
    )
    email_rule: EmailRule = Field(
        "gmail",
        description="How emails are normalised before hashing: gmail (dots and +suffix removed for gmail.com and "
        "googlemail.com only), all_domains (for every domain), gmail_dots (dots only, gmail only).",
    )
    default_region: str | None = Field(
        None, description="Region for phone numbers written without a country code, e.g. DE (two letters)."
    )
    custom_variables: dict[str, str] = Field(
        default_factory=dict,
        description="Conversion custom variable id -> event field path (e.g. {'123456': 'extra.store_type'}); "
        "never sent together with user identifiers, gbraid or wbraid.",
    )
    cart_data: CartData | None = Field(
        None, description="Send the event's items as cartData (conversions with cart data)."
    )
    conversion_environment: Literal["APP", "WEB"] | None = Field(
        None, description="conversionEnvironment of the conversion, when known."
    )
    event_source: Literal["WEB", "APP", "IN_STORE", "PHONE", "MESSAGE", "OTHER"] | None = Field(
        None, description="eventSource for the Data Manager API (required there); default WEB, or APP with "
        "conversion_environment: APP.",
    )
    send_device_info: bool = Field(
        True, description="With ad_user_data granted, send the IP address and user agent (Data Manager API only)."
    )
    session_attributes_field: str | None = Field(
        "extra.session_attributes",
        description="Event field holding Google's encoded session attributes; sent with ad_user_data granted "
        "(Data Manager API only).",
    )
    custom_variable_names: dict[str, str] = Field(
        default_factory=dict,
        description="Conversion custom variable id -> its name in Google Ads, for the Data Manager API, which "
        "names variables (those without a name are sent to the Google Ads API only).",
    )

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return check_region(value)

    @field_validator("custom_variables")
    @classmethod
    def _custom_variables(cls, value: dict[str, str]) -> dict[str, str]:
        return check_custom_variables(value)

    @field_validator("session_attributes_field")
    @classmethod
    def _session_path(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)


def build(event: Event, config: Config) -> list[Delivery]:
    item: dict[str, Any] = {}
    click_key: str | None = None
    for name in ("gclid", "gbraid", "wbraid"):
        click_id = clean(getattr(event, name))
        if click_id is not None:
            item[name] = click_id
            click_key = f"{name}={click_id}"
            break
    identifiers = []
    user_data = consented_user_data(event)
    if config.send_user_identifiers and user_data is not None:
        identifiers = user_identifiers(
            user_data, email_rule=config.email_rule, default_region=config.default_region, with_address=False
        )
    if click_key is None and not identifiers:
        raise Skip("no_click_id_or_identifier")

    conversion_time = format_time(event.timestamp, config.tz)
    item["conversionAction"] = config.conversion_action
    item["conversionDateTime"] = conversion_time
    if event.value is not None:
        item["conversionValue"] = float(event.value)
    currency = clean(event.currency)
    if currency is not None:
        item["currencyCode"] = currency.upper()
    order_id = clean(event.transaction_id) if config.send_order_id else None
    if order_id is not None:
        item["orderId"] = order_id
    variables: list[dict[str, str]] = []
    if config.custom_variables and not identifiers and "gbraid" not in item and "wbraid" not in item:
        variables = custom_variables(event, config.custom_variables, config.customer_id)
        if variables:
            item["customVariables"] = variables
    if config.cart_data is not None:
        cart = _cart_data(event, config.cart_data)
        if cart is not None:
            item["cartData"] = cart
    if identifiers:
        item["userIdentifiers"] = identifiers
    if config.conversion_environment is not None:
        item["conversionEnvironment"] = config.conversion_environment
    consent = consent_of(event.consent, config.send_ad_personalization)
    if consent is not None:
        item["consent"] = consent
    extras = _data_manager_extras(event, config, variables)
    if extras:
        item[DATA_MANAGER_EXTRAS] = extras

    if order_id is not None:
        identity = f"order={order_id}"
    elif click_key is not None:
        identity = f"{click_key}@{conversion_time}"
    else:  # identifiers only: a digest of the digests, so no personal data sits in the key
        digests = sorted(str(v) for entry in identifiers for k, v in entry.items() if k != "userIdentifierSource")
        identity = f"user={sha256_hex('|'.join(digests))[:32]}@{conversion_time}"
    key = f"{DESTINATION}:click:{config.customer_id}:{config.conversion_action_id}:{identity}"
    return [Delivery(destination=DESTINATION, batch_key=batch_key(config.customer_id, "click"),
                     idempotency_key=key, item=item, tag=config.name)]


def _data_manager_extras(event: Event, config: Config, variables: list[dict[str, str]]) -> dict[str, Any]:
    """``eventSource``, device information, session attributes and named custom variables (Data Manager API only)."""
    extras: dict[str, Any] = {}
    if config.event_source is not None:
        extras["eventSource"] = config.event_source
    if event.consent.ad_user_data == "granted":
        if config.session_attributes_field is not None:
            attributes = plain_text(field_getter(config.session_attributes_field)(event))
            if attributes is not None:
                extras["adIdentifiers"] = {"sessionAttributes": attributes}
        if config.send_device_info:
            device = {name: value for name, value in (("userAgent", clean(event.user_agent)),
                                                      ("ipAddress", clean(event.ip_override))) if value}
            if device:
                extras["eventDeviceInfo"] = device
    named = []
    for variable in variables:
        name = config.custom_variable_names.get(variable["conversionCustomVariable"].rpartition("/")[2])
        if name:
            named.append({"variable": name, "value": variable["value"]})
    if named:
        extras["customVariables"] = named
    return extras


def _cart_data(event: Event, cart: CartData) -> dict[str, Any] | None:
    """``cartData`` from GA4-style items (``item_id``, ``quantity``, ``price``).

    Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/CartData
    """
    items = []
    for entry in event.items or ():
        product_id = plain_text(entry.get(cart.product_id_key))
        price = _number(entry.get("price"))
        if product_id is None or price is None:
            continue
        quantity = _number(entry.get("quantity"))
        items.append({"productId": product_id, "quantity": int(quantity) if quantity else 1, "unitPrice": price})
    if not items:
        return None
    out: dict[str, Any] = {"merchantId": cart.merchant_id}
    if cart.feed_country_code:
        out["feedCountryCode"] = cart.feed_country_code
    if cart.feed_language_code:
        out["feedLanguageCode"] = cart.feed_language_code
    if cart.local_transaction_cost_field:
        cost = _number(field_getter(cart.local_transaction_cost_field)(event))
        if cost is not None:
            out["localTransactionCost"] = cost
    out["items"] = items
    return out


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
