"""The generic order-update webhook: signed JSON in, order events out, or a 4xx naming the field."""

from __future__ import annotations

import hashlib
import hmac
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
            "consent": CONSENT_ORD_10492, "extra": {"source": "order_system"},
        }, id="order_created_is_a_purchase_with_click_id_customer_and_consent"),
        pytest.param("order_created_gbraid.json", {
            "event_name": "purchase", "transaction_id": "ORD-20001", "timestamp": "2026-04-30T08:00:00Z",
            "value": 54.9, "currency": "EUR", "gbraid": "0AAAAAoGx-test-gbraid",
            "user_data": {"email_address": "no-consent@example.com", "phone_number": "+33 6 12 34 56 78"},
            "consent": {"ad_storage": "granted", "analytics_storage": "granted", "ad_user_data": "denied",
                        "ad_personalization": "denied"},
            "extra": {"source": "order_system"},
        }, id="gbraid_and_denied_consent_travel_as_sent"),
        pytest.param("partial_refund.json", {
            "event_name": "refund", "transaction_id": "ORD-10492", "timestamp": "2026-04-25T07:12:00Z",
            "event_id": "c006a4a6efb61d4f3242129b02e5a7fd", "value": 30.0, "currency": "EUR",
            "items": [{"item_id": "SKU-SOCKS", "quantity": 1, "price": 30.0}], "consent": {},
            "extra": {"source": "order_system", "refund_id": "c006a4a6efb61d4f3242129b02e5a7fd", "retained_value": 99.95},
        }, id="partial_refund_is_a_refund_with_the_refunded_amount_and_a_stable_id"),
        pytest.param("full_refund.json", {
            "event_name": "refund", "transaction_id": "ORD-20001", "timestamp": "2026-05-02T09:00:00Z",
            "event_id": "749b1dfbb634728d0af1c2314cffeb45", "value": 54.9, "currency": "EUR", "consent": {},
            "extra": {"source": "order_system", "refund_id": "749b1dfbb634728d0af1c2314cffeb45", "refund_type": "full"},
        }, id="full_refund_is_marked_full"),
        pytest.param("cancelled.json", {
            "event_name": "order_cancelled", "transaction_id": "ORD-20002", "timestamp": "2026-05-03T12:00:00Z",
            "event_id": "cancel:ORD-20002", "currency": "USD", "consent": {}, "extra": {"source": "order_system"},
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
        pytest.param("bad_unknown_event.json", "event", id="unknown_event"),
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


def test_the_idempotency_key_is_the_request_key_and_names_the_refund() -> None:
    result = order_webhook.parse(fixture_request("partial_refund.json", **{"Idempotency-Key": "oms-77"}), CONFIG)

    assert (result.request_key, result.events[0].extra["refund_id"]) == ("order_webhook:oms-77", "key:oms-77")


def test_the_payloads_event_id_is_the_request_key_when_there_is_no_header() -> None:
    result = order_webhook.parse(signed({"order_id": "A-1", "event": "cancelled", "event_id": "evt-9"}), CONFIG)

    assert (result.request_key, result.events[0].event_id) == ("order_webhook:evt-9", "evt-9")


def test_a_refund_id_in_the_payload_wins() -> None:
    payload = {"order_id": "A-1", "event": "refund", "refund_amount": "5.00", "refund_id": "RF-1",
               "updated_at": "2026-05-01T10:00:00Z"}

    (event,) = events_of(signed(payload, **{"Idempotency-Key": "k"}))

    assert (event["extra"]["refund_id"], event["value"]) == ("RF-1", 5.0)


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
        "currency": "EUR", "wbraid": "wb-1", "consent": {}, "extra": {"source": "order_system"},
    }]
