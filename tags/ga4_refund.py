"""GA4 refunds from the order system, through the Measurement Protocol: ``POST {collect_base}/mp/collect``.

Reference: https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference
(the payload) and the ``refund`` event of GA4's recommended events
(``transaction_id``, ``value``, ``currency``, ``items``). GA4 subtracts a
refund from the revenue of its transaction id, so revenue in GA4 follows the
order system's refunds and cancellations.

Rules, and why:

- Only order changes that the order ledger decided, from a signed webhook
  (``tags._ga4.authenticated``), become refunds: anyone can send a browser
  hit named ``refund``.
- ``value`` is the money that went back: the refunded amount, or for a
  cancellation or a full refund without an amount what the order still had
  (the ledger fills it). ``currency`` is the order's.
- One refund or cancellation is one GA4 event, whatever is redelivered: the
  ledger ignores a change it has seen, and the outbox item's key is the
  change's id (``adjustment.adjustment_id``). GA4 does not de-duplicate
  Measurement Protocol events itself.
- ``client_id`` is required for a web stream. The ledger keeps no visitor id,
  so it is a number made from the order id, with the purchase's time: the
  same for every refund of an order, and no cookie of anyone's.
- ``timestamp_micros`` is the change's time; the sender leaves it out when it
  is older than the 72 hours GA4 accepts, so a late refund still counts
  (today, not lost). ``consent`` carries ``ad_user_data`` and
  ``ad_personalization`` as the order had them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gateway.delivery import Delivery
from gateway.event import Event
from gateway.tag import Skip, TagConfig
from tags._ga4 import DESTINATION, MEASUREMENT_ID_PATTERN, REFUND_EVENT_NAMES, authenticated, digest_number

_ITEM_KEYS = ("item_id", "item_name", "item_brand", "item_category", "item_variant", "price", "quantity", "coupon",
              "discount")


class Config(TagConfig):
    type: Literal["ga4_refund"] = Field(
        description="Send the order system's refunds and cancellations to GA4 as refund events (Measurement Protocol)."
    )
    measurement_id: str = Field(pattern=MEASUREMENT_ID_PATTERN, description="The GA4 web stream's measurement id.")
    api_secret: str = Field(
        min_length=1,
        description="Measurement Protocol API secret of that stream (Admin > Data streams > Measurement Protocol API "
                    "secrets). Use ${GA4_API_SECRET}: it is a secret.",
    )
    send_items: bool = Field(True, description="Send the refunded items (item_id, quantity, price ...) when the order system names them.")


def build(event: Event, config: Config) -> list[Delivery]:
    if event.event_name not in REFUND_EVENT_NAMES:
        raise Skip("not_a_refund")
    adjustment = event.adjustment
    if adjustment is None or not authenticated(event):
        raise Skip("unauthenticated_source")
    order_id = event.transaction_id or adjustment.order_id
    if not order_id:
        raise Skip("no_order_id")
    currency = event.currency or adjustment.currency
    if event.value is None:
        raise Skip("no_value")
    if not currency:
        raise Skip("no_currency")

    params: dict[str, Any] = {"transaction_id": order_id, "value": abs(event.value), "currency": currency.upper()}
    items = _items(event) if config.send_items else []
    if items:
        params["items"] = items
    since = adjustment.conversion_time or event.timestamp
    body: dict[str, Any] = {
        "client_id": f"{digest_number('order', order_id)}.{int(since.timestamp())}",
        "timestamp_micros": int(event.timestamp.timestamp() * 1_000_000),
        "consent": {
            "ad_user_data": "GRANTED" if event.consent.ad_user_data == "granted" else "DENIED",
            "ad_personalization": "GRANTED" if event.consent.ad_personalization == "granted" else "DENIED",
        },
        "events": [{"name": "refund", "params": params}],
    }
    return [
        Delivery(
            destination=DESTINATION,
            batch_key=f"mp:{config.measurement_id}",
            idempotency_key=f"{DESTINATION}:mp:{config.measurement_id}:refund:{adjustment.adjustment_id}",
            item={"measurement_id": config.measurement_id, "body": body},
            tag=config.name,
        )
    ]


def _items(event: Event) -> list[dict[str, Any]]:
    out = []
    for item in event.items or ():
        if not isinstance(item, dict) or item.get("item_id") in (None, ""):
            continue
        out.append({key: item[key] for key in _ITEM_KEYS if item.get(key) is not None})
    return out
