"""The Data Manager API's wire format for Google Ads conversions: rows from the tags, as ``IngestEventsRequest``.

Since 2026-06-15 "Data Manager API is now the primary API for importing
offline conversions" and the Google Ads API refuses new adopters of
``UploadClickConversions``; the Data Manager API needs no developer token.
Ref: https://developers.google.com/ads/blog/posts/2026/05/changes-to-offline-click-conversion
Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/upgrade

The tags build one row per conversion in the Google Ads API's JSON shape
(plus ``dataManager``, what only this API takes); this module turns a row
into an ``Event`` following Google's field mappings, field by field:
Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/upgrade/field-mappings
Ref: https://developers.google.com/data-manager/api/reference/rest/v1/events/ingest

- ``customer_id`` and ``conversion_action`` become a ``Destination``:
  ``operatingAccount`` {``accountType: GOOGLE_ADS``, the 10-digit id}, the
  manager in ``loginAccount`` when one is used, and ``productDestinationId``
  = the conversion action id. The operating account must own the conversion
  action ("Difference in destination account requirements").
- ``gclid`` / ``gbraid`` / ``wbraid`` go to ``adIdentifiers``; ``orderId``
  is ``transactionId``; ``conversionDateTime`` is ``eventTimestamp`` (RFC
  3339, the same wall time and offset); ``conversionValue`` and
  ``currencyCode`` are ``conversionValue`` and ``currency``.
- ``userIdentifiers`` (SHA-256, lowercase hex) become
  ``userData.userIdentifiers`` (``emailAddress``, ``phoneNumber``,
  ``address``) and the request says ``encoding: HEX``. The identity module's
  default ``gmail`` rule is the Data Manager rule: gmail.com and
  googlemail.com lose dots and a ``+suffix``, other domains keep both.
  Ref: https://developers.google.com/data-manager/api/devguides/concepts/formatting
- ``consent`` GRANTED / DENIED becomes ``CONSENT_GRANTED`` / ``CONSENT_DENIED``.
- ``eventSource`` is required for offline conversions and enhanced
  conversions for leads (release notes, v1.2): the tag's choice, else WEB
  (APP for ``conversionEnvironment: APP``); PHONE for call conversions.
  Ref: https://developers.google.com/data-manager/api/reference (release notes)
- ``cartData``: ``merchantId`` (a string here), the feed country as
  ``merchantFeedLabel`` ("the 2-letter country code ... can be used
  instead"), ``merchantFeedLanguageCode``, the cart discount as
  ``transactionDiscount``, items as ``merchantProductId``, ``quantity``,
  ``unitPrice``.
- A call conversion's caller is a hashed ``userData`` phone number ("Uses
  SHA-256 hashed phone numbers in UserIdentifier.phone_number").
  Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/call/upgrade
- A restatement is the original event again, same ``transactionId``, same
  destination and identifiers, with the new ``conversionValue`` and
  ``currency``: "conversionValue, currency: overwritten ... without
  increasing the conversion count". Its ``lastUpdatedTimestamp`` is the
  adjustment's time.
  Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/conversion-adjustments

At most 2,000 events per request ("At most 2000 Event resources can be sent
in a single request", ``IngestEventsRequest.events``).
"""

from __future__ import annotations

from typing import Any

from gateway.identity import sha256_hex
from tags._google_ads import DATA_MANAGER_EXTRAS

DEFAULT_DATA_MANAGER_BASE = "https://datamanager.googleapis.com"
# Ref: https://developers.google.com/data-manager/api/reference/rest/v1/events/ingest
INGEST_PATH = "/v1/events:ingest"
# Ref: https://developers.google.com/data-manager/api/reference/rest/v1/requestStatus/retrieve
STATUS_PATH = "/v1/requestStatus:retrieve"
MAX_EVENTS_PER_REQUEST = 2000
EVENT_SOURCES = ("WEB", "APP", "IN_STORE", "PHONE", "MESSAGE", "OTHER")

_CONSENT = {"GRANTED": "CONSENT_GRANTED", "DENIED": "CONSENT_DENIED"}
_IDENTIFIERS = {"hashedEmail": "emailAddress", "hashedPhoneNumber": "phoneNumber"}


def destination(customer_id: str, action_id: str, login_customer_id: str = "") -> dict[str, Any]:
    """A ``Destination`` for one Google Ads conversion action."""
    out: dict[str, Any] = {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": customer_id}}
    if login_customer_id and login_customer_id != customer_id:
        out["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": login_customer_id}
    out["productDestinationId"] = action_id
    return out


def ingest_body(destination_: dict[str, Any], events: list[dict[str, Any]], validate_only: bool) -> dict[str, Any]:
    """An ``IngestEventsRequest`` for one destination."""
    body: dict[str, Any] = {"destinations": [destination_], "events": events}
    if validate_only:
        body["validateOnly"] = True
    body["encoding"] = "HEX"  # hashed identifiers are lowercase hex SHA-256
    return body


def action_id_of(row: dict[str, Any]) -> str:
    """The conversion action id at the end of a row's ``conversionAction`` resource name."""
    return str(row.get("conversionAction", "")).rpartition("/")[2]


def event_of(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """One ``Event`` from one row of the given kind (click, call or restatement)."""
    extras: dict[str, Any] = row.get(DATA_MANAGER_EXTRAS) or {}
    event: dict[str, Any] = {}
    if kind == "restatement":
        order_id = row.get("orderId")
        if order_id:
            event["transactionId"] = order_id
        event["eventTimestamp"] = extras.get("eventTimestamp")
        if row.get("adjustmentDateTime"):
            event["lastUpdatedTimestamp"] = rfc3339(row["adjustmentDateTime"])
        value = row.get("restatementValue") or {}
        ad_identifiers = dict(extras.get("adIdentifiers") or {})
        amount, currency = value.get("adjustedValue"), value.get("currencyCode")
        identifiers: list[dict[str, Any]] = list((extras.get("userData") or {}).get("userIdentifiers") or ())
    else:
        if row.get("orderId"):
            event["transactionId"] = row["orderId"]
        event["eventTimestamp"] = rfc3339(row["conversionDateTime"])
        ad_identifiers = {name: row[name] for name in ("gclid", "gbraid", "wbraid") if row.get(name)}
        ad_identifiers.update(extras.get("adIdentifiers") or {})
        amount, currency = row.get("conversionValue"), row.get("currencyCode")
        identifiers = event_identifiers(row.get("userIdentifiers") or ())
        if kind == "call" and row.get("callerId"):
            identifiers.insert(0, {"phoneNumber": sha256_hex(str(row["callerId"]))})
    if identifiers:
        event["userData"] = {"userIdentifiers": identifiers}
    consent = _consent(row.get("consent"))
    if consent:
        event["consent"] = consent
    if ad_identifiers:
        event["adIdentifiers"] = ad_identifiers
    if currency:
        event["currency"] = currency
    if amount is not None:
        event["conversionValue"] = amount
    event["eventSource"] = extras.get("eventSource") or _default_source(kind, row)
    if extras.get("eventDeviceInfo"):
        event["eventDeviceInfo"] = extras["eventDeviceInfo"]
    if row.get("cartData"):
        event["cartData"] = _cart(row["cartData"])
    if extras.get("customVariables"):
        event["customVariables"] = extras["customVariables"]
    return event


def rfc3339(google_ads_time: str) -> str:
    """``yyyy-mm-dd hh:mm:ss+hh:mm`` (the Google Ads API's format) as RFC 3339, same wall time and offset."""
    return google_ads_time.replace(" ", "T", 1)


def event_identifiers(entries: Any) -> list[dict[str, Any]]:
    """Google Ads API ``userIdentifiers`` as Data Manager ``UserIdentifier`` objects (same SHA-256 hex digests)."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        for ads_name, dm_name in _IDENTIFIERS.items():
            if entry.get(ads_name):
                out.append({dm_name: entry[ads_name]})
        address = entry.get("addressInfo")
        if address and all(address.get(k) for k in ("hashedFirstName", "hashedLastName", "countryCode", "postalCode")):
            # AddressInfo: hashed given and family names, region and postal code in clear (all four required).
            out.append({"address": {"givenName": address["hashedFirstName"], "familyName": address["hashedLastName"],
                                    "regionCode": address["countryCode"], "postalCode": address["postalCode"]}})
    return out[:10]  # "At most 10 userIdentifiers can be provided in a single ... Event"


def _consent(consent: Any) -> dict[str, str]:
    if not isinstance(consent, dict):
        return {}
    return {name: _CONSENT[consent[name]] for name in ("adUserData", "adPersonalization")
            if consent.get(name) in _CONSENT}


def _default_source(kind: str, row: dict[str, Any]) -> str:
    if kind == "call":
        return "PHONE"
    return "APP" if row.get("conversionEnvironment") == "APP" else "WEB"


def _cart(cart: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cart.get("merchantId") is not None:
        out["merchantId"] = str(cart["merchantId"])
    if cart.get("feedCountryCode"):
        out["merchantFeedLabel"] = cart["feedCountryCode"]
    if cart.get("feedLanguageCode"):
        out["merchantFeedLanguageCode"] = cart["feedLanguageCode"]
    if cart.get("localTransactionCost") is not None:
        out["transactionDiscount"] = cart["localTransactionCost"]
    out["items"] = [{"merchantProductId": item["productId"], "quantity": item.get("quantity", 1),
                     "unitPrice": item["unitPrice"]} for item in cart.get("items") or ()]
    return out
