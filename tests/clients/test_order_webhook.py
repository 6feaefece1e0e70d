"""The generic order-update webhook: signed JSON in, order events out, or a 4xx naming the field."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from clients import order_webhook
from gateway.client import RawRequest
from gateway.errors import BadRequest
from tests.conftest import FIXTURES, load_fixture

RECEIVED_AT = datetime(2026, 5, 5, 12, 0, 0, tzinfo=timezone.utc)
CONFIG = order_webhook.Config(type="order_webhook", secret="fixture-secret")
HEADERS = load_fixture("webhooks", "headers.json")
WEBHOOKS = FIXTURES / "webhooks"


def fixture_request(name: str, **extra_headers: str) -> RawRequest:
    headers = {k.lower(): v for k, v in {**HEADERS[name], **extra_headers}.items()}
    return RawRequest("POST", "/webhooks/order-update", "", headers, (WEBHOOKS / name).read_bytes(), "127.0.0.1", RECEIVED_AT)


def signed(payload: dict[str, Any], **extra_headers: str) -> RawRequest:
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(b"fixture-secret", body, hashlib.sha256).hexdigest()
    headers = {"x-signature": signature, **{k.lower(): v for k, v in extra_headers.items()}}
    return RawRequest("POST", "/webhooks/order-update", "", headers, body, "127.0.0.1", RECEIVED_AT)


def events_of(raw: RawRequest) -> list[dict[str, Any]]:
    result = order_webhook.parse(raw, CONFIG)
    assert result.status == 200
    return [event.to_json_dict() for event in result.events]


def body_id(name: str) -> str:
    """A refund without refund_id is named by the SHA-256 of the signed body (its first 32 hex digits)."""
    return "body:" + hashlib.sha256((WEBHOOKS / name).read_bytes()).hexdigest()[:32]


def refund_data(refund_id: str, **fields: Any) -> dict[str, Any]:
    return {"refund_id": refund_id, **fields}


CONSENT_ORD_10492 = {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "granted",
                     "ad_personalization": "denied"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("order_created.json", {
            "event_name": "purchase", "transaction_id": "ORD-10492", "timestamp": "2026-04-23T12:31:09Z",
            "value": 129.95, "currency": "EUR", "gclid": "EAIaIQobChMI8fK2x4-test-gclid",
            "user_data": {"email_address": "Alex.Doe@Gmail.com", "phone_number": "+49 170 1234567",
                          "address": {"first_name": "Alex", "last_name": "Doe", "city": "Berlin",
                                      "postal_code": "10115", "country": "DE"}},
            "consent": CONSENT_ORD_10492, "extra": {},
        }, id="order_created_is_a_purchase_with_click_id_customer_and_consent"),
        pytest.param("order_created_gbraid.json", {
            "event_name": "purchase", "transaction_id": "ORD-20001", "timestamp": "2026-04-30T08:00:00Z",
            "value": 54.9, "currency": "EUR", "gbraid": "0AAAAAoGx-test-gbraid",
            "user_data": {"email_address": "no-consent@example.com", "phone_number": "+33 6 12 34 56 78"},
            "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "denied",
                        "ad_personalization": "denied"},
            "extra": {},
        }, id="gbraid_and_denied_consent_travel_as_sent"),
        pytest.param("partial_refund.json", {
            "event_name": "refund", "transaction_id": "ORD-10492", "timestamp": "2026-04-25T07:12:00Z",
            "event_id": body_id("partial_refund.json"), "value": 30.0, "currency": "EUR",
            "items": [{"item_id": "SKU-SOCKS", "quantity": 1, "price": 30.0}], "consent": {},
            "order": refund_data(body_id("partial_refund.json"), retained_value=99.95), "extra": {},
        }, id="partial_refund_without_refund_id_is_named_by_the_digest_of_its_signed_body"),
        pytest.param("full_refund.json", {
            "event_name": "refund", "transaction_id": "ORD-20001", "timestamp": "2026-05-02T09:00:00Z",
            "event_id": body_id("full_refund.json"), "value": 54.9, "currency": "EUR", "consent": {},
            "order": refund_data(body_id("full_refund.json"), full_refund=True), "extra": {},
        }, id="full_refund_is_marked_full"),
        pytest.param("cancelled.json", {
            "event_name": "order_cancelled", "transaction_id": "ORD-20002", "timestamp": "2026-05-03T12:00:00Z",
            "event_id": "cancel:ORD-20002", "currency": "USD", "consent": {}, "extra": {},
        }, id="cancelled_is_order_cancelled"),
    ],
)
def test_fixture_becomes_the_order_event(name: str, expected: dict[str, Any]) -> None:
    assert events_of(fixture_request(name)) == [expected]


@pytest.mark.parametrize(
    ("name", "field"),
    [
        pytest.param("bad_missing_order_id.json", "order_id", id="missing_order_id"),
        pytest.param("bad_negative_refund.json", "refund_amount", id="negative_refund"),
    ],
)
def test_bad_payload_is_refused_naming_the_field(name: str, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        order_webhook.parse(fixture_request(name), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, field)
    assert b"teleported" not in orjson.dumps(caught.value.body())


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        pytest.param({}, "missing signature", id="unsigned"),
        pytest.param({"X-Signature": "sha256=" + "0" * 64}, "invalid signature", id="wrong_digest"),
        pytest.param({"X-Signature": HEADERS["partial_refund.json"]["X-Signature"]}, "invalid signature",
                     id="another_bodys_signature"),
        pytest.param({"X-Signature": "md5=abc"}, "invalid signature", id="another_algorithm"),
    ],
)
def test_a_request_without_the_right_signature_is_401(headers: dict[str, str], error: str) -> None:
    body = (WEBHOOKS / "order_created.json").read_bytes()
    raw = RawRequest("POST", "/webhooks/order-update", "", {k.lower(): v for k, v in headers.items()}, body,
                     "127.0.0.1", RECEIVED_AT)

    with pytest.raises(BadRequest) as caught:
        order_webhook.parse(raw, CONFIG)

    assert caught.value.body() == {"error": error, "detail": {"field": "headers.x-signature"}}
    assert caught.value.status == 401


def test_the_idempotency_key_is_the_request_key_but_never_names_the_refund() -> None:
    keyed = order_webhook.parse(fixture_request("partial_refund.json", **{"Idempotency-Key": "oms-77"}), CONFIG)
    replayed = order_webhook.parse(fixture_request("partial_refund.json", **{"Idempotency-Key": "attacker-1"}), CONFIG)

    assert (keyed.request_key, replayed.request_key) == ("order_webhook:oms-77", "order_webhook:attacker-1")
    assert keyed.events[0].order.refund_id == replayed.events[0].order.refund_id == body_id("partial_refund.json")


def test_an_unknown_event_is_acknowledged_as_ignored() -> None:
    result = order_webhook.parse(fixture_request("bad_unknown_event.json"), CONFIG)

    assert (result.status, result.body, result.events, result.ignored) == (200, b'{"ignored":"unknown_event"}', [],
                                                                         "unknown_event")


def test_an_unsigned_unknown_event_is_still_401() -> None:
    raw = RawRequest("POST", "/webhooks/order-update", "", {}, (WEBHOOKS / "bad_unknown_event.json").read_bytes(),
                     "127.0.0.1", RECEIVED_AT)

    with pytest.raises(BadRequest) as caught:
        order_webhook.parse(raw, CONFIG)

    assert caught.value.status == 401


def stamped(payload: dict[str, Any], sent_at: int, secret: bytes = b"fixture-secret") -> RawRequest:
    body = orjson.dumps(payload)
    digest = hmac.new(secret, f"{sent_at}.".encode() + body, hashlib.sha256).hexdigest()
    return RawRequest("POST", "/webhooks/order-update", "", {"x-signature": f"t={sent_at},sha256={digest}"}, body,
                      "127.0.0.1", RECEIVED_AT)


CANCEL = {"order_id": "A-1", "event": "cancelled"}
NOW_UNIX = int(RECEIVED_AT.timestamp())


@pytest.mark.parametrize(
    "sent_at",
    [pytest.param(NOW_UNIX, id="now"), pytest.param(NOW_UNIX - 300, id="at_the_tolerance"),
     pytest.param(NOW_UNIX + 300, id="a_clock_ahead_within_the_tolerance")],
)
def test_a_signed_timestamp_within_the_tolerance_is_accepted(sent_at: int) -> None:
    assert [e["event_name"] for e in events_of(stamped(CANCEL, sent_at))] == ["order_cancelled"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(stamped(CANCEL, NOW_UNIX - 301), "signature timestamp outside the tolerance", id="too_old"),
        pytest.param(stamped(CANCEL, NOW_UNIX + 301), "signature timestamp outside the tolerance", id="too_far_ahead"),
        pytest.param(stamped(CANCEL, NOW_UNIX, secret=b"other"), "invalid signature", id="wrong_secret"),
        pytest.param(replace(stamped(CANCEL, NOW_UNIX), headers={"x-signature": "t=1,t=2,sha256=" + "0" * 64}),
                     "invalid signature", id="two_timestamps"),
        pytest.param(replace(stamped(CANCEL, NOW_UNIX), headers={"x-signature": f"t={NOW_UNIX}"}), "invalid signature",
                     id="no_digest"),
        pytest.param(replace(stamped(CANCEL, NOW_UNIX), headers={"x-signature": "t=99999999999999999999,sha256=00"}),
                     "invalid signature", id="timestamp_out_of_range"),
    ],
)
def test_a_bad_signed_timestamp_is_401_naming_the_header(raw: RawRequest, error: str) -> None:
    with pytest.raises(BadRequest) as caught:
        order_webhook.parse(raw, CONFIG)

    assert (caught.value.status, caught.value.body()) == (401, {"error": error, "detail": {"field": "headers.x-signature"}})


def test_a_timestamped_signature_may_list_several_digests_for_a_secret_being_rotated() -> None:
    raw = stamped(CANCEL, NOW_UNIX)
    header = raw.headers["x-signature"].replace("sha256=", "sha256=" + "0" * 64 + ",sha256=")

    assert len(events_of(replace(raw, headers={"x-signature": header}))) == 1


def test_the_tolerance_is_configurable_and_the_plain_form_can_be_refused() -> None:
    strict = order_webhook.Config(type="order_webhook", secret="fixture-secret", signature_tolerance="1m",
                                  require_signed_timestamp=True)

    with pytest.raises(BadRequest) as old:
        order_webhook.parse(stamped(CANCEL, NOW_UNIX - 61), strict)
    with pytest.raises(BadRequest) as plain:
        order_webhook.parse(signed(CANCEL), strict)

    assert (old.value.status, plain.value.status, plain.value.error) == (401, 401, "signed timestamp required")


def test_a_pending_refund_needs_its_refund_id_and_is_marked_pending() -> None:
    pending = {"order_id": "A-1", "event": "refund", "refund_amount": 5, "refund_status": "pending", "refund_id": "RF-1"}

    (event,) = events_of(signed(pending))
    with pytest.raises(BadRequest) as caught:
        order_webhook.parse(signed({**pending, "refund_id": None}), CONFIG)

    assert (event["order"]["refund_id"], event["order"]["refund_pending"]) == ("RF-1", True)
    assert (caught.value.status, caught.value.field) == (400, "refund_id")


def test_a_failed_refund_is_acknowledged_as_ignored() -> None:
    result = order_webhook.parse(signed({"order_id": "A-1", "event": "refund", "refund_amount": 5,
                                         "refund_status": "failed"}), CONFIG)

    assert (result.status, result.events, result.ignored) == (200, [], "refund_failed")


def test_a_refund_carries_the_order_total_and_the_order_systems_exchange_rate() -> None:
    (event,) = events_of(signed({"order_id": "A-1", "event": "refund", "refund_amount": 5, "currency": "USD",
                                 "order_value": "124.00", "exchange_rate": "0.92", "refund_id": "RF-2"}))

    assert (event["order"]["total"], event["order"]["exchange_rate"]) == (124.0, 0.92)


def test_the_payloads_event_id_is_the_request_key_when_there_is_no_header() -> None:
    result = order_webhook.parse(signed({"order_id": "A-1", "event": "cancelled", "event_id": "evt-9"}), CONFIG)

    assert (result.request_key, result.events[0].event_id) == ("order_webhook:evt-9", "evt-9")


def test_a_refund_id_in_the_payload_wins() -> None:
    payload = {"order_id": "A-1", "event": "refund", "refund_amount": "5.00", "refund_id": "RF-1",
               "updated_at": "2026-05-01T10:00:00Z"}

    (event,) = events_of(signed(payload, **{"Idempotency-Key": "k"}))

    assert (event["order"]["refund_id"], event["value"]) == ("RF-1", 5.0)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"order_id": "A-1", "event": "order_paid", "currency": "EUR"}, "order_value",
                     id="purchase_without_value"),
        pytest.param({"order_id": "A-1", "event": "order_paid", "order_value": 5}, "currency",
                     id="purchase_without_currency"),
        pytest.param({"order_id": "A-1", "event": "refund", "refund_amount": "lots"}, "refund_amount",
                     id="amount_not_a_number"),
        pytest.param({"order_id": "A-1", "event": "partial_refund"}, "refund_amount", id="partial_refund_without_amount"),
        pytest.param({"order_id": "A-1", "event": "cancelled", "updated_at": "2026-05-01 10:00"}, "updated_at",
                     id="time_without_offset"),
        pytest.param({"order_id": "A-1", "event": "cancelled", "consent": {"ad_user_data": "yes"}},
                     "consent.ad_user_data", id="consent_not_granted_or_denied"),
        pytest.param({"order_id": "A-1", "event": "cancelled", "customer": {"email": ["jane@example.com"]}},
                     "customer.email", id="customer_email_not_text"),
        pytest.param({"order_id": {"id": 1}, "event": "cancelled"}, "order_id", id="order_id_not_text"),
        pytest.param({"order_id": "A-1"}, "event", id="event_missing"),
        pytest.param({"order_id": "A-1", "event": ["cancelled"]}, "event", id="event_not_text"),
        pytest.param({"order_id": "A-1", "event": "refund", "refund_amount": 1, "refund_status": "lots"},
                     "refund_status", id="refund_status_unknown"),
        pytest.param({"order_id": "A-1", "event": "refund", "refund_amount": 1, "exchange_rate": "lots"},
                     "exchange_rate", id="exchange_rate_not_a_number"),
        pytest.param({"order_id": "A-1", "event": "refund", "refund_amount": 1, "exchange_rate": 0},
                     "exchange_rate", id="exchange_rate_zero"),
    ],
)
def test_a_bad_field_is_named_and_its_value_never_echoed(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        order_webhook.parse(signed(payload), CONFIG)

    assert (caught.value.status, caught.value.field) == (400, field)
    body = orjson.dumps(caught.value.body())
    assert b"jane@example.com" not in body and b"lots" not in body and b"yes" not in body


def test_order_paid_is_a_purchase_too() -> None:
    payload = {"order_id": "A-1", "event": "order_paid", "order_value": "19.90", "currency": "eur",
               "updated_at": "2026-05-01T10:00:00+02:00", "wbraid": "wb-1"}

    assert events_of(signed(payload)) == [{
        "event_name": "purchase", "transaction_id": "A-1", "timestamp": "2026-05-01T08:00:00Z", "value": 19.9,
        "currency": "EUR", "wbraid": "wb-1", "consent": {}, "extra": {},
    }]
