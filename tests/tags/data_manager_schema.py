"""Strict checks of Data Manager API bodies against Google's own protos (the ``google-ads-datamanager`` package).

``check_ingest_request(body)`` parses a request body into the official
``google.ads.datamanager.v1.IngestEventsRequest`` with
``ignore_unknown_fields=False`` (an unknown or misspelt field, a wrong type or
an unknown enum value fails) and then insists that every key is the field's
JSON (camelCase) name, as the REST reference writes them. On top of the
protos it checks what Google's guides require of a Google Ads offline
conversion and that a proto cannot express:

- every destination has an ``operatingAccount`` of ``accountType``
  GOOGLE_ADS with a 10-digit ``accountId`` and a ``productDestinationId``
  (the conversion action id); a ``loginAccount`` likewise;
  Ref: https://developers.google.com/data-manager/api/devguides/events/google-ads/offline/send-events
- at most 2,000 events ("At most 2000 Event resources");
- every event has ``eventTimestamp`` and ``eventSource`` ("An event_source is
  required for offline conversions and enhanced conversions for leads",
  release notes v1.2) and at least one identifier (``adIdentifiers`` with a
  click id or ``userData``), at most one of gclid / gbraid / wbraid;
- ``encoding`` is set when an event has ``userData``, and every hashed value
  is a SHA-256 digest in that encoding (HEX: 64 lowercase hex characters);
  at most 10 identifiers per event; an ``address`` has all four parts, the
  names hashed, region and postal code in clear.
  Ref: https://developers.google.com/data-manager/api/devguides/concepts/formatting

``problems`` returns the same findings as a list of (field path, reason)
pairs, which the fake Data Manager API turns into Google's field violations.
"""

from __future__ import annotations

import re
from typing import Any

from google.ads.datamanager_v1.types import ingestion_service
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

MAX_EVENTS = 2000
MAX_IDENTIFIERS = 10
_HEX = re.compile(r"^[0-9a-f]{64}$")
_ACCOUNT = re.compile(r"^\d{10}$")
_ACTION = re.compile(r"^\d{1,20}$")
_REGION = re.compile(r"^[A-Z]{2}$")


class SchemaError(AssertionError):
    pass


def request_type() -> Any:
    return ingestion_service.IngestEventsRequest.pb()


def parse(body: Any) -> Any:
    """The body as the official message; raises SchemaError on what protobuf's JSON parser refuses."""
    message = request_type()()
    try:
        json_format.ParseDict(body, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise SchemaError(f"google.ads.datamanager.v1.IngestEventsRequest: {exc}") from None
    _check_json_names(body, message.DESCRIPTOR, "IngestEventsRequest")
    return message


def check_ingest_request(body: Any) -> None:
    """Raise SchemaError unless ``body`` is a valid ``IngestEventsRequest`` for Google Ads conversions."""
    parse(body)
    found = problems(body)
    if found:
        raise SchemaError("; ".join(f"{path}: {reason}" for path, reason in found))


def problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, ErrorReason) for each rule of Google's guides the body breaks; empty when it keeps them all."""
    out: list[tuple[str, str]] = []
    destinations = body.get("destinations") or []
    if not destinations:
        out.append(("destinations", "REQUIRED_FIELD_MISSING"))
    for n, target in enumerate(destinations):
        for name in ("operatingAccount", "loginAccount"):
            account = target.get(name)
            if account is None:
                if name == "operatingAccount":
                    out.append((f"destinations[{n}].operatingAccount", "REQUIRED_FIELD_MISSING"))
                continue
            if account.get("accountType") != "GOOGLE_ADS" or not _ACCOUNT.match(str(account.get("accountId", ""))):
                out.append((f"destinations[{n}].{name}", "INVALID_DESTINATION"))
        if not _ACTION.match(str(target.get("productDestinationId", ""))):
            out.append((f"destinations[{n}].productDestinationId", "INVALID_CONVERSION_ACTION_ID"))
    events = body.get("events") or []
    if not events:
        out.append(("events", "REQUIRED_FIELD_MISSING"))
    if len(events) > MAX_EVENTS:
        out.append(("events", "TOO_MANY_EVENTS"))
    with_user_data = False
    for n, event in enumerate(events):
        where = f"events[{n}]"
        if not event.get("eventTimestamp"):
            out.append((f"{where}.eventTimestamp", "REQUIRED_FIELD_MISSING"))
        if not event.get("eventSource"):
            out.append((f"{where}.eventSource", "REQUIRED_FIELD_MISSING"))
        ad = event.get("adIdentifiers") or {}
        clicks = [k for k in ("gclid", "gbraid", "wbraid") if ad.get(k)]
        if len(clicks) > 1:
            out.append((f"{where}.adIdentifiers.{clicks[1]}", "INVALID_ARGUMENT"))
        identifiers = (event.get("userData") or {}).get("userIdentifiers") or []
        with_user_data = with_user_data or bool(identifiers)
        if not clicks and not identifiers:
            out.append((where, "NO_IDENTIFIERS_PROVIDED"))
        if len(identifiers) > MAX_IDENTIFIERS:
            out.append((f"{where}.userData.userIdentifiers", "TOO_MANY_USER_IDENTIFIERS"))
        for k, identifier in enumerate(identifiers):
            out.extend(_identifier_problems(identifier, f"{where}.userData.userIdentifiers[{k}]"))
    if with_user_data and body.get("encoding") != "HEX":
        out.append(("encoding", "REQUIRED_FIELD_MISSING" if "encoding" not in body else "INVALID_HEX_ENCODING"))
    return out


def _identifier_problems(identifier: dict[str, Any], where: str) -> list[tuple[str, str]]:
    out = []
    for name in ("emailAddress", "phoneNumber"):
        if name in identifier and not _HEX.match(str(identifier[name])):
            out.append((f"{where}.{name}", "INVALID_SHA256_FORMAT"))
    address = identifier.get("address")
    if address is not None:
        for name in ("givenName", "familyName"):
            if not _HEX.match(str(address.get(name, ""))):
                out.append((f"{where}.address.{name}", "INVALID_SHA256_FORMAT"))
        if not _REGION.match(str(address.get("regionCode", ""))):
            out.append((f"{where}.address.regionCode", "INVALID_COUNTRY_CODE"))
        if not address.get("postalCode"):
            out.append((f"{where}.address.postalCode", "INVALID_POSTAL_CODE"))
    return out


def _check_json_names(value: Any, descriptor: Descriptor, where: str) -> None:
    if not isinstance(value, dict):
        return
    fields = {f.json_name: f for f in descriptor.fields}
    for key, child in value.items():
        field = fields.get(key)
        if field is None:
            raise SchemaError(f"{where}.{key}: not the JSON (camelCase) name of a field of {descriptor.full_name}")
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.full_name.startswith("google.protobuf."):
            continue
        children = child if isinstance(child, list) else [child]
        for i, element in enumerate(children):
            _check_json_names(element, field.message_type,
                              f"{where}.{key}[{i}]" if isinstance(child, list) else f"{where}.{key}")
