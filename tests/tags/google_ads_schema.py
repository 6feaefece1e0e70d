"""Strict checks of Google Ads bodies against the google-ads package's protobuf messages, and the fixture runner.

``check_request(kind, body)`` parses a request body into the official
``UploadClickConversionsRequest`` / ``UploadCallConversionsRequest`` /
``UploadConversionAdjustmentsRequest`` of ``API_VERSION`` with
``ignore_unknown_fields=False`` and then insists that every key is the
field's REST (camelCase) JSON name: protobuf's parser also takes the proto
names (``conversion_action``), which our bodies must not rely on. A unknown
field, a wrong type, an unknown enum value or two identifiers in one
UserIdentifier (a oneof) fail the check.

``fixture_cases`` and ``assert_case`` run the one-case-per-file fixtures in
``tests/fixtures/tags/<type>/`` (STYLE.md): config and event in, the expected
deliveries (or skip reason, or whose fault the error is) out, and each
expected item checked against the schema inside a request wrapper, so a
fixture written from Google's reference is also held to Google's schema.
Every item also goes through the Data Manager encoder when its kind travels
that way (click, call, restatement), and the ``IngestEventsRequest`` around
it is held to the ``google-ads-datamanager`` protos; a case may state the
expected ``data_manager_event``, written from the Data Manager reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import ValidationError

from gateway.event import Event
from gateway.tag import Skip
from tags._data_manager import destination, event_of, ingest_body
from tags._google_ads import split_batch_key
from tags._google_ads_api import ads_row
from tests.tags.data_manager_schema import check_ingest_request

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tags"


def _api_version() -> str:
    """v26 when the google-ads package has it, else the newest version it ships."""
    if importlib.util.find_spec("google.ads.googleads.v26") is not None:
        return "v26"
    package = Path(importlib.import_module("google.ads.googleads").__file__ or "").parent
    versions = sorted((p.name for p in package.glob("v[0-9]*") if p.is_dir()), key=lambda v: int(v[1:]))
    return versions[-1]


API_VERSION = _api_version()
DATA_MANAGER_KINDS = ("click", "call", "restatement")
_REQUESTS = {
    "restatement": ("conversion_adjustment_upload_service", "UploadConversionAdjustmentsRequest",
                    "conversionAdjustments"),
    "click": ("conversion_upload_service", "UploadClickConversionsRequest", "conversions"),
    "call": ("conversion_upload_service", "UploadCallConversionsRequest", "conversions"),
    "adjustment": ("conversion_adjustment_upload_service", "UploadConversionAdjustmentsRequest", "conversionAdjustments"),
}


class SchemaError(AssertionError):
    pass


def _request_type(kind: str, version: str) -> Any:
    module_name, message, _ = _REQUESTS[kind]
    module: ModuleType = importlib.import_module(f"google.ads.googleads.{version}.services.types.{module_name}")
    return getattr(module, message).pb()


def check_request(kind: str, body: Any, version: str = API_VERSION) -> None:
    """Raise SchemaError unless ``body`` is a valid REST request body for this upload kind."""
    request_type = _request_type(kind, version)
    try:
        json_format.ParseDict(body, request_type(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise SchemaError(f"{request_type.DESCRIPTOR.full_name}: {exc}") from None
    _check_json_names(body, request_type.DESCRIPTOR, request_type.DESCRIPTOR.name)


def check_item(kind: str, item: Any, version: str = API_VERSION) -> None:
    """Check one row inside a minimal request wrapper, as each API that takes its kind would get it."""
    check_request(kind, {_REQUESTS[kind][2]: [ads_row(item)], "partialFailure": True}, version)
    if kind in DATA_MANAGER_KINDS:
        check_ingest_request(data_manager_request(kind, [item]))


def data_manager_request(kind: str, items: list[Any], customer_id: str = "1234567890") -> dict[str, Any]:
    """The ``IngestEventsRequest`` the sender would make of these rows (one conversion action)."""
    action = str(items[0].get("conversionAction", "")).rpartition("/")[2]
    return ingest_body(destination(customer_id, action), [event_of(kind, item) for item in items], False)


def _check_json_names(value: Any, descriptor: Descriptor, where: str) -> None:
    if not isinstance(value, dict):
        return
    fields = {f.json_name: f for f in descriptor.fields}
    for key, child in value.items():
        field = fields.get(key)
        if field is None:
            raise SchemaError(f"{where}.{key}: not the REST (camelCase) name of a field of {descriptor.full_name}")
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.full_name.startswith("google.protobuf."):
            continue
        children = child if isinstance(child, list) else [child]
        for i, element in enumerate(children):
            _check_json_names(element, field.message_type, f"{where}.{key}[{i}]" if isinstance(child, list) else f"{where}.{key}")


# -- fixtures ------------------------------------------------------------------------------------

def fixture_cases(tag_type: str) -> list[Any]:
    folder = FIXTURES / tag_type
    return [pytest.param(json.loads(path.read_text(encoding="utf-8")), id=path.stem)
            for path in sorted(folder.glob("*.json"))]


def assert_case(module: ModuleType, kind: str, case: dict[str, Any]) -> None:
    """Run one fixture case against ``module.build`` and compare with its ``expect``."""
    expect = case["expect"]
    spec = {"name": "gads_test", "type": module.__name__.rsplit(".", 1)[-1], "trigger": "purchase"} | case["config"]
    try:
        config = module.Config.model_validate(spec)
    except ValidationError:
        assert expect.get("error") == "config", "the config was refused but the case expects it to be valid"
        return
    assert expect.get("error") != "config", "the config was accepted but the case expects a config error"
    try:
        event = Event.from_data(case["event"])
    except msgspec.ValidationError:
        assert expect.get("error") == "event", "the event was refused but the case expects it to be valid"
        return
    assert expect.get("error") != "event", "the event was accepted but the case expects an event error"

    if "skip" in expect:
        with pytest.raises(Skip) as info:
            module.build(event, config)
        assert info.value.reason == expect["skip"]
        return
    deliveries = module.build(event, config)
    got = []
    kinds = []
    for delivery, wanted in zip(deliveries, expect["deliveries"]):
        parsed = split_batch_key(delivery.batch_key)
        kinds.append(parsed[1] if parsed else kind)
        entry: dict[str, Any] = {"batch_key": delivery.batch_key, "item": delivery.item}
        if "idempotency_key" in wanted:
            entry["idempotency_key"] = delivery.idempotency_key
        if "not_before" in wanted:
            entry["not_before"] = None if delivery.not_before is None else delivery.not_before.isoformat()
        got.append(entry)
        assert (delivery.destination, delivery.tag) == ("google_ads", "gads_test")
    assert len(deliveries) == len(expect["deliveries"])
    assert got == [_normal({k: v for k, v in w.items() if k != "data_manager_event"}) for w in expect["deliveries"]]
    for wanted, item_kind in zip(expect["deliveries"], kinds):
        check_item(item_kind, wanted["item"])
        if "data_manager_event" in wanted:
            assert event_of(item_kind, wanted["item"]) == wanted["data_manager_event"]


def _normal(wanted: dict[str, Any]) -> dict[str, Any]:
    out = dict(wanted)
    if out.get("not_before") is not None:
        out["not_before"] = datetime.fromisoformat(out["not_before"].replace("Z", "+00:00")).isoformat()
    return out
