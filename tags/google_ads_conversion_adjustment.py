"""Conversion adjustments for Google Ads (``uploadConversionAdjustments``): refunds, cancellations, enhancements.

References: https://developers.google.com/google-ads/api/docs/conversions/upload-adjustments,
https://developers.google.com/google-ads/api/docs/conversions/enhance-conversions and
https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionAdjustment.

The event's ``adjustment`` (filled by the order ledger) says what happened;
this tag turns it into one ``ConversionAdjustment``:
- ``RETRACTION`` removes the conversion, ``RESTATEMENT`` replaces its value
  (``restatementValue.adjustedValue`` is the value after the change, not the
  difference), ``ENHANCEMENT`` adds hashed user identifiers (email, phone,
  address) and the user agent to a conversion uploaded by the Google tag.
- The conversion is named the way it was uploaded: by ``orderId`` when it had
  one, else by ``gclidDateTimePair`` (gclid and the original conversion time,
  formatted exactly as at upload). Never both: Google refuses that
  (GCLID_DATE_TIME_PAIR_AND_ORDER_ID_BOTH_SET). Enhancements always need the
  order id.
- ``adjustmentDateTime`` is the event's time and must not precede the
  conversion (ADJUSTMENT_PRECEDES_CONVERSION); a second restatement needs a
  later adjustment time or Google drops it as a duplicate.
- Google cannot adjust a conversion it has not processed yet ("Try adjusting
  a conversion that occurred at least 24 hours ago", TOO_RECENT_CONVERSION),
  so the item waits ``delay_after_conversion`` (24 hours by default) after
  the upload (``Delivery.not_before``); CONVERSION_NOT_FOUND and
  TOO_RECENT_CONVERSION are then retried for ``retry_horizon`` (read by the
  sender through the item's tag) before they count as permanent.
- "Adjustment can't be made to a conversion that occurred more than 54 days
  ago" (CONVERSION_EXPIRED) holds for every adjustment type: past
  ``adjustment_window`` (54 days, the most Google allows) the event is
  skipped with the reason ``conversion_expired`` instead of dead-lettered;
  a retraction after a shorter configured ``click_through_window`` likewise.
  If Google still answers CONVERSION_EXPIRED, the sender counts the item as
  skipped; MORE_RECENT_RESTATEMENT_FOUND counts as superseded.
  Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionAdjustmentUploadErrorEnum.ConversionAdjustmentUploadError
- Only a conversion that exists can be adjusted; anything else is 72 hours
  of CONVERSION_NOT_FOUND retries. The ledger says what became of this
  gateway's upload to each conversion action (``adjustment.conversions``):
  one dead-lettered is skipped (``conversion_upload_failed``), one never
  uploaded here is skipped (``conversion_not_uploaded``) unless
  ``conversions_from_page_tag`` says the page's Google tag records this
  conversion action with the transaction id as its order id (then the
  adjustment names it by order id).

Which API takes it is the destination's choice (``api``). A restatement
named by order id is built to travel either way: its batch key is
``restatement`` and it carries, under ``dataManager``, what the Data Manager
API needs to restate by re-sending the conversion (the original
``eventTimestamp``, the click id or hashed user identifiers, ``eventSource``):
"send an IngestEvents request that includes the same transactionId as the
original event, the same destination and conversion action, the updated
values ... all fields required for an event, including at least one
identifier". Retractions and enhancements stay with the Google Ads API's
ConversionAdjustmentUploadService: the Data Manager API "doesn't support
retracting conversions", and its user-data adjustment only fills in a
conversion that had none. A restatement without an order id, or without an
identifier, goes the same way (batch key ``adjustment``).
Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/conversion-adjustments
Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/upgrade

The idempotency key is the ledger's ``adjustment_id``, so a redelivered refund
webhook maps to the same outbox item.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from gateway.delivery import Delivery
from gateway.durations import Duration
from gateway.event import Event
from gateway.identity import clean
from gateway.identity.google import EmailRule
from gateway.tag import Skip
from tags._data_manager import event_identifiers, rfc3339
from tags._google_ads import (
    ADJUSTMENT_WINDOW,
    DATA_MANAGER_EXTRAS,
    DEFAULT_ADJUSTMENT_DELAY,
    DEFAULT_RETRY_HORIZON,
    DESTINATION,
    GoogleAdsTagConfig,
    batch_key,
    check_region,
    consented_user_data,
    format_time,
    user_identifiers,
)

__all__ = ["DESTINATION", "Config", "build"]


class Config(GoogleAdsTagConfig):
    type: Literal["google_ads_conversion_adjustment"] = Field(
        description="Upload retractions, restatements and enhancements of conversions to Google Ads."
    )
    delay_after_conversion: Duration = Field(
        DEFAULT_ADJUSTMENT_DELAY,
        description="Hold an adjustment back this long after its conversion was uploaded; Google refuses adjusting "
        "a conversion younger than 24 hours (TOO_RECENT_CONVERSION).",
    )
    adjustment_window: Duration = Field(
        ADJUSTMENT_WINDOW,
        description="An adjustment later than this after its conversion is skipped (conversion_expired); Google "
        "refuses every adjustment to a conversion older than 54 days (CONVERSION_EXPIRED), so at most 54d.",
    )
    retry_horizon: Duration = Field(
        DEFAULT_RETRY_HORIZON,
        description="How long CONVERSION_NOT_FOUND and TOO_RECENT_CONVERSION are retried (from the item's creation).",
    )
    click_through_window: Duration = Field(
        timedelta(days=90),
        description="The conversion action's click-through window; "
        "a retraction later than this after the conversion is not sent.",
    )
    event_source: Literal["WEB", "APP", "IN_STORE", "PHONE", "MESSAGE", "OTHER"] = Field(
        "WEB", description="eventSource of a restatement sent through the Data Manager API (as the conversion's own)."
    )
    email_rule: EmailRule = Field(
        "gmail", description="Email normalisation for enhancements: gmail, all_domains or gmail_dots."
    )
    default_region: str | None = Field(
        None, description="Region for phone numbers written without a country code, e.g. DE (two letters)."
    )
    conversions_from_page_tag: bool = Field(
        False,
        description="The page's Google tag records this conversion action with the transaction id as order id: "
        "adjust orders this gateway did not upload too (by order id). Off: only conversions this gateway uploaded.",
    )

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return check_region(value)

    @field_validator("adjustment_window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if value > ADJUSTMENT_WINDOW:
            raise ValueError("must be at most 54d: Google refuses adjustments to older conversions (CONVERSION_EXPIRED)")
        return value


def build(event: Event, config: Config) -> list[Delivery]:
    adjustment = event.adjustment
    if adjustment is None:
        raise Skip("no_adjustment")
    conversion_time = adjustment.conversion_time
    if conversion_time is not None:
        if event.timestamp < conversion_time:
            raise Skip("adjustment_precedes_conversion")
        age = event.timestamp - conversion_time
        if age > config.adjustment_window:
            raise Skip("conversion_expired")
        if adjustment.type == "RETRACTION" and age > config.click_through_window:
            raise Skip("outside_click_through_window")

    upload = None if adjustment.conversions is None else adjustment.conversions.get(config.conversion_action, "none")
    if upload == "failed":
        raise Skip("conversion_upload_failed")
    if upload == "none" and not config.conversions_from_page_tag:
        raise Skip("conversion_not_uploaded")

    item: dict[str, Any] = {
        "conversionAction": config.conversion_action,
        "adjustmentType": adjustment.type,
        "adjustmentDateTime": format_time(event.timestamp, config.tz),
    }
    order_id = clean(adjustment.order_id) or clean(event.transaction_id)
    if adjustment.type == "ENHANCEMENT" or adjustment.uploaded_with_order_id or upload == "none":
        if order_id is None:
            raise Skip("no_order_id")
        item["orderId"] = order_id
    else:
        gclid = clean(adjustment.gclid) or clean(event.gclid)
        if gclid is None:
            raise Skip("no_gclid")
        if conversion_time is None:
            raise Skip("no_conversion_time")
        item["gclidDateTimePair"] = {"gclid": gclid, "conversionDateTime": format_time(conversion_time, config.tz)}

    if adjustment.type == "RESTATEMENT":
        if adjustment.adjusted_value is None:
            raise Skip("no_adjusted_value")
        restated: dict[str, Any] = {"adjustedValue": float(adjustment.adjusted_value)}
        currency = clean(adjustment.currency) or clean(event.currency)
        if currency is not None:
            restated["currencyCode"] = currency.upper()
        item["restatementValue"] = restated
    elif adjustment.type == "ENHANCEMENT":
        user_data = consented_user_data(event)
        identifiers = [] if user_data is None else user_identifiers(
            user_data, email_rule=config.email_rule, default_region=config.default_region, with_address=True
        )
        if not identifiers:
            raise Skip("no_user_identifiers")
        item["userIdentifiers"] = identifiers
        user_agent = clean(event.user_agent)
        if user_agent is not None:
            item["userAgent"] = user_agent

    kind = "adjustment"
    if adjustment.type == "RESTATEMENT" and "orderId" in item and conversion_time is not None:
        extras = _data_manager_extras(event, config, conversion_time)
        if extras is not None:
            kind = "restatement"
            item[DATA_MANAGER_EXTRAS] = extras
    uploaded = adjustment.conversion_uploaded_at or conversion_time
    key = f"{DESTINATION}:adjustment:{config.customer_id}:{config.conversion_action_id}:{adjustment.adjustment_id}"
    return [Delivery(destination=DESTINATION, batch_key=batch_key(config.customer_id, kind),
                     idempotency_key=key, item=item, tag=config.name,
                     not_before=None if uploaded is None else uploaded + config.delay_after_conversion)]


def _data_manager_extras(event: Event, config: Config, conversion_time: datetime) -> dict[str, Any] | None:
    """What the Data Manager API needs to restate by re-sending the conversion, or None without an identifier."""
    extras: dict[str, Any] = {"eventTimestamp": rfc3339(format_time(conversion_time, config.tz))}
    gclid = clean(event.adjustment.gclid if event.adjustment else None) or clean(event.gclid)
    if gclid is not None:
        extras["adIdentifiers"] = {"gclid": gclid}
    user_data = consented_user_data(event)
    identifiers = [] if user_data is None else event_identifiers(user_identifiers(
        user_data, email_rule=config.email_rule, default_region=config.default_region, with_address=False))
    if identifiers:
        extras["userData"] = {"userIdentifiers": identifiers}
    if gclid is None and not identifiers:
        return None  # "including at least one identifier, such as adIdentifiers or userData"
    extras["eventSource"] = config.event_source
    return extras
