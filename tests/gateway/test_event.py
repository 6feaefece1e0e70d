"""The event model: its JSON (what the http_request tag sends and the outbox stores) and its validation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import orjson
import pytest

from clients import json_beacon
from gateway.client import RawRequest
from gateway.errors import BadRequest
from gateway.event import Adjustment, Consent, Event, OrderData, Source, UserData, invalid_field

T0 = datetime(2026, 12, 7, 6, 24, 32, 123456, tzinfo=timezone.utc)


def test_json_leaves_out_empty_fields_but_keeps_empty_extra_and_consent_and_a_true_upload_flag() -> None:
    event = Event(event_name="refund", timestamp=T0, value=5.0, source=Source(client="ledger", authenticated=True),
                  adjustment=Adjustment(type="RETRACTION", adjustment_id="ORD-1/r1"))

    assert event.to_json_bytes() == (
        b'{"event_name":"refund","timestamp":"2026-12-07T06:24:32.123456Z","value":5.0,"consent":{},'
        b'"source":{"client":"ledger","authenticated":true},'
        b'"adjustment":{"type":"RETRACTION","adjustment_id":"ORD-1/r1","uploaded_with_order_id":true},"extra":{}}'
    )
    assert orjson.loads(event.to_json_bytes()) == event.to_json_dict()


def test_json_times_are_iso_8601_with_z_for_utc_and_the_offset_otherwise() -> None:
    def time_of(at: datetime) -> str:
        return orjson.loads(Event(event_name="x", timestamp=at).to_json_bytes())["timestamp"]

    assert time_of(T0.replace(microsecond=0)) == "2026-12-07T06:24:32Z"
    assert time_of(T0.astimezone(timezone(timedelta(hours=2)))) == "2026-12-07T08:24:32.123456+02:00"


def test_json_sorts_the_keys_of_free_form_objects_so_the_same_event_gives_the_same_bytes() -> None:
    one = Event(event_name="x", timestamp=T0, extra={"b": 1, "a": {"d": 2, "c": 3}}, items=[{"price": 1, "item_id": "A"}])
    other = Event(event_name="x", timestamp=T0, extra={"a": {"c": 3, "d": 2}, "b": 1}, items=[{"item_id": "A", "price": 1}])

    assert one.to_json_bytes() == other.to_json_bytes()
    assert b'"items":[{"item_id":"A","price":1}]' in one.to_json_bytes()


def test_json_writes_a_number_that_is_not_finite_as_null() -> None:
    assert orjson.loads(Event(event_name="x", timestamp=T0, value=float("inf")).to_json_bytes())["value"] is None


def test_from_data_validates_nested_models_and_reads_text_as_pydantic_did() -> None:
    event = Event.from_data({"event_name": "purchase", "timestamp": "2026-12-07T06:24:32.123456Z", "value": "12.5",
                             "tax": 2, "user_data": {"email_address": "a@example.com", "address": {"city": "Berlin"}},
                             "consent": {"ad_storage": "granted"}, "order": {"refund_id": "r1", "exchange_rate": 1.1}})

    assert (event.timestamp, event.value, event.tax) == (T0, 12.5, 2.0) and isinstance(event.tax, float)
    assert event.user_data == UserData.from_data({"email_address": "a@example.com", "address": {"city": "Berlin"}})
    assert (event.consent, event.order) == (Consent(ad_storage="granted"), OrderData(refund_id="r1", exchange_rate=1.1))


@pytest.mark.parametrize(
    ("data", "loc", "problem"),
    [
        pytest.param({}, ("event_name",), "Field required", id="missing"),
        pytest.param({"event_name": ""}, ("event_name",), "Expected `str` of length >= 1", id="empty_name"),
        pytest.param({"event_name": "x" * 201}, ("event_name",), "Expected `str` of length <= 200", id="long_name"),
        pytest.param({"event_name": "x", "user_data": {"address": {"nope": "jane"}}}, ("user_data", "address", "nope"),
                     "Extra inputs are not permitted", id="unknown_nested_key"),
        pytest.param({"event_name": "x", "items": [{}, "jane@example.com"]}, ("items", "1"),
                     "Expected `object`, got `str`", id="list_position"),
        pytest.param({"event_name": "x", "consent": {"ad_storage": "jane@example.com"}}, ("consent", "ad_storage"),
                     "Invalid enum value", id="enum_value_not_echoed"),
        pytest.param({"event_name": "x", "order": {"refund_id": ""}}, ("order", "refund_id"),
                     "Expected `str` of length >= 1", id="refund_id"),
        pytest.param({"event_name": "x", "order": {"exchange_rate": 0}}, ("order", "exchange_rate"),
                     "Expected `float` > 0.0", id="exchange_rate"),
        pytest.param({"event_name": "x", "adjustment": {"type": "RETRACTION", "adjustment_id": ""}},
                     ("adjustment", "adjustment_id"), "Expected `str` of length >= 1", id="adjustment_id"),
    ],
)
def test_a_refused_event_names_the_field_and_never_the_value(data: dict[str, Any], loc: tuple[str, ...],
                                                             problem: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        Event.from_data(data)

    assert invalid_field(caught.value) == (loc, problem)


def test_source_is_frozen_and_the_rest_may_change_in_place() -> None:
    event = Event(event_name="x", source=Source(client="ga4", authenticated=False))
    event.consent.ad_storage = "denied"
    event.user_data = None

    with pytest.raises(AttributeError):
        event.source.authenticated = True  # type: ignore[misc, union-attr]
    assert event.consent == Consent(ad_storage="denied")


def beacon(body: Any) -> Event:
    raw = RawRequest("POST", "/collect", "", {"content-type": "application/json"}, orjson.dumps(body), "203.0.113.7", T0)
    (event,) = json_beacon.parse(raw, json_beacon.Config(type="json_beacon")).events
    return event


@pytest.mark.parametrize("sent", [" 12.5", "12.5 ", "1_2.5", 12.5, "12.5"])
def test_a_beacon_may_send_its_numbers_as_text_as_before(sent: Any) -> None:
    assert beacon({"event_name": "purchase", "value": sent}).value == 12.5


def test_a_beacon_true_or_false_number_reads_as_one_or_zero_as_before() -> None:
    assert (beacon({"event_name": "x", "tax": True}).tax, beacon({"event_name": "x", "shipping": False}).shipping) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"value": "jane@example.com"}, "body.value", id="not_a_number"),
        pytest.param({"value": "１２"}, "body.value", id="other_digits"),
        pytest.param({"user_data": {"email": "jane@example.com"}}, "body.user_data.email", id="unknown_key"),
        pytest.param({"items": ["jane@example.com"]}, "body.items.0", id="item_not_an_object"),
    ],
)
def test_a_beacon_event_that_is_refused_gets_a_400_naming_the_field_never_the_value(body: dict[str, Any],
                                                                                     field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        beacon({"event_name": "x", **body})

    assert (caught.value.status, caught.value.error) == (400, "invalid event")
    assert [problem["field"] for problem in caught.value.detail] == [field]
    assert "jane" not in orjson.dumps(caught.value.body()).decode()
