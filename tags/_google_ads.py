"""What the three Google Ads tags and their sender share: API version, names, times, identifiers, error codes.

Each constant carries the Google reference it comes from. The tags build one
REST item each (camelCase JSON, as in the API's REST reference); the sender
wraps up to 2000 of them into one upload request and reads the answer with the
tables at the end of this module.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import Field, field_validator

from gateway.event import Address, Consent, Event, UserData
from gateway.identity import clean
from gateway.identity.google import (
    EmailRule,
    hash_email,
    hash_name,
    hash_phone,
    hash_street,
    normalize_country,
    prehashed,
)
from gateway.tag import TagConfig
from rules.paths import PathError, compile_path

DESTINATION = "google_ads"

# The google-ads client library 34.x ships v23 to v26; the REST path carries the version.
# Ref: https://developers.google.com/google-ads/api/docs/sunset-dates
DEFAULT_API_VERSION = "v26"
DEFAULT_API_BASE = "https://googleads.googleapis.com"
# Ref: https://developers.google.com/identity/protocols/oauth2/web-server#offline
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"

# "Upload fewer than 2001 events in a single request" (TOO_MANY_CONVERSIONS_IN_REQUEST,
# TOO_MANY_ADJUSTMENTS_IN_REQUEST).
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionUploadErrorEnum.ConversionUploadError
MAX_ROWS_PER_REQUEST = 2000
# "The maximum number of user identifiers for each conversion is 5."
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ClickConversion
MAX_USER_IDENTIFIERS = 5
# "Adjustment can't be made to a conversion that occurred more than 54 days ago." (CONVERSION_EXPIRED)
# The window holds for every adjustment type, so it is the default of each.
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionAdjustmentUploadErrorEnum.ConversionAdjustmentUploadError
ADJUSTMENT_WINDOW = timedelta(days=54)
# "Adjustment can't be recorded because the conversion occurred too recently. Try adjusting a
# conversion that occurred at least 24 hours ago." (TOO_RECENT_CONVERSION, same enum)
DEFAULT_ADJUSTMENT_DELAY = timedelta(hours=24)

# The key of a row that holds what only the Data Manager API takes (eventSource, device
# information, session attributes, a restatement's original event time and click id), in the
# Data Manager API's own JSON names. The Google Ads API route leaves it out of the request.
DATA_MANAGER_EXTRAS = "dataManager"

# click, call, adjustment (retractions, enhancements, restatements named by gclid and time) and
# restatement (a restatement named by order id, which the Data Manager API can carry).
Kind = Literal["click", "call", "adjustment", "restatement"]
# kind -> (REST method, the request's list field, the list's proto field name in error field paths)
# Ref: https://developers.google.com/google-ads/api/rest/reference/rest/latest/customers/uploadClickConversions
# Ref: https://developers.google.com/google-ads/api/rest/reference/rest/latest/customers/uploadCallConversions
# Ref: https://developers.google.com/google-ads/api/rest/reference/rest/latest/customers/uploadConversionAdjustments
UPLOADS: dict[str, tuple[str, str, str]] = {
    "click": ("uploadClickConversions", "conversions", "conversions"),
    "call": ("uploadCallConversions", "conversions", "conversions"),
    "adjustment": ("uploadConversionAdjustments", "conversionAdjustments", "conversion_adjustments"),
    "restatement": ("uploadConversionAdjustments", "conversionAdjustments", "conversion_adjustments"),
}

_CUSTOMER_ID = re.compile(r"^\d{10}$")
_NUMERIC_ID = re.compile(r"^\d{1,20}$")


# -- names and keys ------------------------------------------------------------------------

def conversion_action_name(customer_id: str, action_id: str) -> str:
    # Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionAction (resource_name)
    return f"customers/{customer_id}/conversionActions/{action_id}"


def custom_variable_name(customer_id: str, variable_id: str) -> str:
    # Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionCustomVariable
    return f"customers/{customer_id}/conversionCustomVariables/{variable_id}"


def batch_key(customer_id: str, kind: Kind) -> str:
    return f"{customer_id}:{kind}"


def split_batch_key(key: str) -> tuple[str, str] | None:
    customer, sep, kind = key.rpartition(":")
    if not sep or not _CUSTOMER_ID.match(customer) or kind not in UPLOADS:
        return None
    return customer, kind


def customer_id_digits(value: object) -> str:
    """``123-456-7890`` or ``1234567890`` as ten digits; raises ValueError otherwise."""
    text = str(value).strip().replace("-", "") if isinstance(value, (str, int)) else ""
    if not _CUSTOMER_ID.match(text):
        raise ValueError("must be a Google Ads customer id: 10 digits, dashes allowed")
    return text


# -- time ----------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_zone(name: str) -> str:
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name such as Europe/Berlin or America/New_York") from None
    return name


def format_time(moment: datetime, tz: ZoneInfo) -> str:
    """``yyyy-mm-dd hh:mm:ss+hh:mm``: wall time in ``tz`` with the offset in force at that instant.

    "The timezone must be specified. The format is yyyy-mm-dd hh:mm:ss+|-hh:mm,
    for example, 2019-01-01 12:32:45-08:00." Fractions of a second are not part
    of the format, so they are dropped.
    Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ClickConversion (conversion_date_time)
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone(tz)
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{local:%Y-%m-%d %H:%M:%S}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def parse_time(value: Any, tz: ZoneInfo) -> datetime | None:
    """An ISO 8601 string (or a datetime) as an aware datetime; a time without offset is read in ``tz``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


# -- consent and identifiers -----------------------------------------------------------------

# ConsentStatusEnum: GRANTED / DENIED; UNKNOWN is "used for return value only", so a
# signal the event does not carry is left out rather than sent.
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/Consent
_CONSENT_STATUS = {"granted": "GRANTED", "denied": "DENIED"}


def consent_of(consent: Consent, send_ad_personalization: bool) -> dict[str, str] | None:
    """``consent`` of a click or call conversion: ``adUserData`` always, ``adPersonalization`` on request.

    Google documents ad_user_data for conversion uploads; ad_personalization is
    accepted by the message but meant for audience (user-data) uploads, so it
    is sent only when the tag says so.
    Ref: https://developers.google.com/google-ads/api/docs/conversions/upload-offline (consent)
    """
    out: dict[str, str] = {}
    if consent.ad_user_data in _CONSENT_STATUS:
        out["adUserData"] = _CONSENT_STATUS[consent.ad_user_data]
    if send_ad_personalization and consent.ad_personalization in _CONSENT_STATUS:
        out["adPersonalization"] = _CONSENT_STATUS[consent.ad_personalization]
    return out or None


def consented_user_data(event: Event) -> UserData | None:
    """The event's user data when ad_user_data is explicitly granted: nothing else lets it travel to Google."""
    return event.user_data if event.consent.ad_user_data == "granted" else None


def user_identifiers(
    user_data: UserData, *, email_rule: EmailRule, default_region: str | None, with_address: bool
) -> list[dict[str, Any]]:
    """Hashed email and phone identifiers (and an address for enhancements), each in its own object.

    "Only hashed_email and hashed_phone_number are supported for conversion
    uploads"; ``address_info`` is accepted by ConversionAdjustmentUploadService
    only. A UserIdentifier holds one identifier (a oneof), at most five per row.
    An address is sent only when it has hashed first and last name, postal
    code and country: Google matches an address on all four together.
    Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/UserIdentifier
    Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/OfflineUserAddressInfo
    """
    found: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(kind: str, digest: str | None) -> None:
        if digest is not None and digest not in seen:
            seen.add(digest)
            found.append({"userIdentifierSource": "FIRST_PARTY", kind: digest})

    add("hashedEmail", hash_email(user_data.email_address, email_rule))
    add("hashedEmail", prehashed(user_data.sha256_email_address))
    add("hashedPhoneNumber", hash_phone(user_data.phone_number, default_region))
    add("hashedPhoneNumber", prehashed(user_data.sha256_phone_number))
    if with_address and user_data.address is not None:
        address = _address_info(user_data.address)
        if address is not None:
            found.append({"userIdentifierSource": "FIRST_PARTY", "addressInfo": address})
    return found[:MAX_USER_IDENTIFIERS]


def _address_info(address: Address) -> dict[str, str] | None:
    info = {
        "hashedFirstName": hash_name(address.first_name) or prehashed(address.sha256_first_name),
        "hashedLastName": hash_name(address.last_name) or prehashed(address.sha256_last_name),
        "hashedStreetAddress": hash_street(address.street) or prehashed(address.sha256_street),
        "city": clean(address.city),
        "state": clean(address.region),
        "postalCode": clean(address.postal_code),
        "countryCode": normalize_country(address.country),
    }
    if not (info["hashedFirstName"] and info["hashedLastName"] and info["postalCode"] and info["countryCode"]):
        return None
    return {k: v for k, v in info.items() if v is not None}


# -- config shared by the three tags -----------------------------------------------------------

class GoogleAdsTagConfig(TagConfig):
    customer_id: str = Field(
        description="Google Ads customer id of the account that owns the conversion action (10 digits; dashes allowed)."
    )
    conversion_action_id: str = Field(description="Numeric id of the conversion action (from its resource name).")
    timezone: str = Field(
        "UTC",
        description="IANA time zone for the times sent to Google (e.g. Europe/Berlin); "
        "use the Google Ads account's zone so the times read as in the UI. The offset is always explicit.",
    )

    @field_validator("customer_id", mode="before")
    @classmethod
    def _customer_id(cls, value: object) -> str:
        return customer_id_digits(value)

    @field_validator("conversion_action_id", mode="before")
    @classmethod
    def _action_id(cls, value: object) -> str:
        text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not _NUMERIC_ID.match(text):
            raise ValueError("must be the numeric id of a conversion action")
        return text

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_zone(value)

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    @property
    def conversion_action(self) -> str:
        return conversion_action_name(self.customer_id, self.conversion_action_id)


def check_region(value: str | None) -> str | None:
    if value is None:
        return None
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code that phonenumbers knows, such as DE or US")
    return value.upper()


@lru_cache(maxsize=256)
def field_getter(path: str) -> Any:
    return compile_path(path).get


def check_path(path: str) -> str:
    try:
        compile_path(path)
    except PathError as exc:
        raise ValueError(str(exc)) from None
    return path


def custom_variables(event: Event, config_map: dict[str, str], customer_id: str) -> list[dict[str, str]]:
    """``customVariables``: each configured variable whose event field has a value, as a string.

    Google warns that custom variable values must not hold personal data
    (CUSTOM_VARIABLE_VALUE_CONTAINS_PII).
    Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/CustomVariable
    """
    out = []
    for variable_id, path in config_map.items():
        value = field_getter(path)(event)
        if value is None or isinstance(value, (dict, list)):
            continue
        text = plain_text(str(value).lower() if isinstance(value, bool) else value)
        if text is not None:
            out.append({"conversionCustomVariable": custom_variable_name(customer_id, variable_id), "value": text})
    return out


def plain_text(value: object) -> str | None:
    """Trimmed text, None when empty; unlike ``clean`` it keeps values such as "0" or "none",
    which are placeholders for personal data but ordinary values of a custom variable or a product id."""
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    text = str(value).strip()
    return text or None


def check_custom_variables(value: dict[str, str]) -> dict[str, str]:
    for variable_id, path in value.items():
        if not _NUMERIC_ID.match(variable_id):
            raise ValueError("keys must be numeric conversion custom variable ids")
        check_path(path)
    return value


# -- reading Google's answers ----------------------------------------------------------------------

# Codes that mean "this is already in Google Ads": the item counts as delivered.
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionUploadErrorEnum.ConversionUploadError
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionAdjustmentUploadErrorEnum.ConversionAdjustmentUploadError
ALREADY_THERE = frozenset({
    "CLICK_CONVERSION_ALREADY_EXISTS",   # same click and conversion_date_time as an existing conversion
    "CALL_CONVERSION_ALREADY_EXISTS",    # same call and conversion_date_time
    "CONVERSION_ALREADY_RETRACTED",
    "CONVERSION_ALREADY_ENHANCED",       # same order id and conversion action enhanced before
    "RESTATEMENT_ALREADY_EXISTS",        # a restatement with the same adjustment_date_time
})
# "includes an order ID that was previously recorded": ours when we are retrying (the first
# attempt landed but its answer was lost), someone else's conversion on a first attempt.
ALREADY_THERE_ON_RETRY = frozenset({"ORDER_ID_ALREADY_IN_USE"})

# Transient on Google's side: retry with backoff.
# Ref: https://developers.google.com/google-ads/api/docs/best-practices/error-types
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/InternalErrorEnum.InternalError
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/DatabaseErrorEnum.DatabaseError
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/QuotaErrorEnum.QuotaError
TRANSIENT = frozenset({
    "INTERNAL_ERROR", "TRANSIENT_ERROR", "DEADLINE_EXCEEDED", "CONCURRENT_MODIFICATION",
    "RESOURCE_EXHAUSTED", "RESOURCE_TEMPORARILY_EXHAUSTED",
    # google.rpc status names of whole-request errors without a GoogleAdsFailure
    "INTERNAL", "UNAVAILABLE", "ABORTED", "UNAUTHENTICATED",
})

# "Try importing again in 6 hours" / "Retry after 6 hours have passed".
WAIT_THEN_RETRY: dict[str, timedelta] = {
    "TOO_RECENT_EVENT": timedelta(hours=6),
    "TOO_RECENT_CALL": timedelta(hours=6),
    "TOO_RECENT_CONVERSION_ACTION": timedelta(hours=6),
}

# Adjustments sent before Google has processed the conversion: retried for the tag's
# retry_horizon, then permanent. TOO_RECENT_CONVERSION: "Try adjusting a conversion that
# occurred at least 24 hours ago"; CONVERSION_NOT_FOUND also covers a conversion not yet there.
RETRY_WITHIN_HORIZON = frozenset({"CONVERSION_NOT_FOUND", "TOO_RECENT_CONVERSION"})
# Final answers that are not failures, each counted under its own outcome instead of dead-lettered:
# CONVERSION_EXPIRED, "Adjustment can't be made to a conversion that occurred more than 54 days
# ago": nothing to retry, the adjustment is skipped with Google's code as its reason.
# MORE_RECENT_RESTATEMENT_FOUND, "More recent adjustment adjustment_date_time has already been
# reported for the associated conversion": Google holds a newer value, this one is superseded.
# Ref: https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionAdjustmentUploadErrorEnum.ConversionAdjustmentUploadError
SKIPPED = frozenset({"CONVERSION_EXPIRED"})
SUPERSEDED = frozenset({"MORE_RECENT_RESTATEMENT_FOUND"})
DEFAULT_RETRY_HORIZON = timedelta(hours=72)
# Waits between those retries double from here (30m, 1h, 2h, ...) so that the dispatcher's
# max_attempts (10 by default) covers a 72h horizon.
HORIZON_RETRY_BASE = timedelta(minutes=30)
