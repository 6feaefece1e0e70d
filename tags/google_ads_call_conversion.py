"""Call conversions for Google Ads (``customers/{id}:uploadCallConversions``), one ``CallConversion`` per event.

References: https://developers.google.com/google-ads/api/docs/conversions/upload-calls and
https://developers.google.com/google-ads/api/reference/rpc/latest/CallConversion.

Google finds the call by the caller's number and the call's start time, so
both must be exact:
- ``callerId`` is E.164 with the ``+`` ("+16502531234"), normalised with
  ``phonenumbers`` and the tag's ``default_region`` for numbers written
  without a country code. A number that does not parse is not guessed at:
  the event is skipped (``no_caller_id``). With ``ad_user_data`` denied the
  consent step has already removed phone numbers from ``extra``, so such an
  event skips the same way.
- ``callStartDateTime`` comes from an ISO 8601 field (a time without an
  offset is read in the tag's zone); ``conversionDateTime`` is the event's
  time. Both go out as ``yyyy-mm-dd hh:mm:ss+hh:mm`` in the tag's zone, and a
  conversion before its call is skipped (Google: CONVERSION_PRECEDES_CALL).
- ``consent.adUserData`` mirrors the event's consent, as for click conversions.

The idempotency key holds a digest of the call's identity, never the number.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from gateway.delivery import Delivery
from gateway.event import Event
from gateway.identity import clean, sha256_hex
from gateway.identity.google import normalize_phone
from gateway.tag import Skip
from tags._google_ads import (
    DESTINATION,
    GoogleAdsTagConfig,
    batch_key,
    check_custom_variables,
    check_path,
    check_region,
    consent_of,
    custom_variables,
    field_getter,
    format_time,
    parse_time,
)

__all__ = ["DESTINATION", "Config", "build"]


class Config(GoogleAdsTagConfig):
    type: Literal["google_ads_call_conversion"] = Field(
        description="Upload one call conversion per event to Google Ads."
    )
    caller_id_field: str = Field(
        "extra.caller_id", description="Event field holding the caller's phone number (any common format)."
    )
    call_start_field: str = Field(
        "extra.call_start_time",
        description="Event field holding the call's start as ISO 8601; without an offset it is read in timezone.",
    )
    default_region: str | None = Field(
        None, description="Region for caller numbers written without a country code, e.g. DE (two letters)."
    )
    send_ad_personalization: bool = Field(
        False, description="Also send consent.adPersonalization (Google documents it for user-data uploads)."
    )
    custom_variables: dict[str, str] = Field(
        default_factory=dict, description="Conversion custom variable id -> event field path."
    )

    @field_validator("caller_id_field", "call_start_field")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return check_region(value)

    @field_validator("custom_variables")
    @classmethod
    def _custom_variables(cls, value: dict[str, str]) -> dict[str, str]:
        return check_custom_variables(value)


def build(event: Event, config: Config) -> list[Delivery]:
    caller = normalize_phone(field_getter(config.caller_id_field)(event), config.default_region)
    if caller is None:
        raise Skip("no_caller_id")
    started = parse_time(field_getter(config.call_start_field)(event), config.tz)
    if started is None:
        raise Skip("no_call_start_time")
    if event.timestamp < started:
        raise Skip("conversion_precedes_call")

    call_start = format_time(started, config.tz)
    conversion_time = format_time(event.timestamp, config.tz)
    item: dict[str, Any] = {
        "callerId": caller,
        "callStartDateTime": call_start,
        "conversionAction": config.conversion_action,
        "conversionDateTime": conversion_time,
    }
    if event.value is not None:
        item["conversionValue"] = float(event.value)
    currency = clean(event.currency)
    if currency is not None:
        item["currencyCode"] = currency.upper()
    if config.custom_variables:
        variables = custom_variables(event, config.custom_variables, config.customer_id)
        if variables:
            item["customVariables"] = variables
    consent = consent_of(event.consent, config.send_ad_personalization)
    if consent is not None:
        item["consent"] = consent

    call = sha256_hex(f"{caller}|{call_start}|{conversion_time}")[:32]
    key = f"{DESTINATION}:call:{config.customer_id}:{config.conversion_action_id}:{call}"
    return [Delivery(destination=DESTINATION, batch_key=batch_key(config.customer_id, "call"),
                     idempotency_key=key, item=item, tag=config.name)]
