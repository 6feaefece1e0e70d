"""Between events and the order ledger: what the ledger reads from an event, and what it gives back to one.

- ``change_of``: the ``Change`` a refund or cancellation reports, from its
  public fields and ``Event.order`` (which only the order clients fill).
- ``held_event_data``: a change's event as the ledger keeps it while it
  waits, without anything personal.
- ``consent_pairs`` / ``fill_consent``: the consent a purchase carried, and
  a refund taking it for the signals it does not carry.
- ``kept_identifiers`` / ``fill_identifiers``: a purchase's hashed
  identifiers (and ``fbp``/``fbc``) kept for its refunds, so that a Meta
  Refund can carry customer information that Shopify's ``refunds/create``
  does not. Each is kept only when the consent that applied to the purchase
  allowed it: hashed contact data under ``ad_user_data`` granted, the
  cookies under ``ad_storage`` granted. Hashing follows Meta's rules
  (``gateway.identity.meta``), since Meta is the destination that needs
  them; nothing raw is kept.
"""

from __future__ import annotations

from typing import Any, Mapping

import msgspec

from gateway.event import CONSENT_SIGNALS, Address, Consent, Event, UserData
from gateway.identity import meta as meta_identity
from gateway.ledger import CANCELLED, Change, money, stable_id

# sGTM's names of the hashed identifiers a refund can carry, and Meta's parameter for each.
_HASHED = (("sha256_email_address", "em"), ("sha256_phone_number", "ph"),
           ("sha256_first_name", "fn"), ("sha256_last_name", "ln"))
_COOKIES = ("fbp", "fbc")


def change_of(event: Event, order_id: str) -> Change:
    """The change a refund or cancellation event reports.

    A refund without an amount is a full refund (GA4's ``refund`` without a
    value means the whole transaction); its id is ``order.refund_id`` when
    the client set one, else the event id, else a digest of what it says.
    """
    data = event.order
    backstop = data is not None and bool(data.backstop)
    if event.event_name == CANCELLED:
        return Change(order_id, "cancel", "cancel", event.timestamp, currency=event.currency, backstop=backstop)
    amount = money(event.value)
    full = (data is not None and bool(data.full_refund)) or amount is None
    change_id = (data.refund_id if data is not None else None) or event.event_id or stable_id(
        order_id, event.timestamp.isoformat(), amount)
    return Change(
        order_id=order_id,
        change_id=str(change_id),
        kind="full_refund" if full else "refund",
        occurred_at=event.timestamp,
        amount=amount,
        currency=event.currency,
        reported_retained=money(data.retained_value) if data is not None else None,
        pending=data is not None and bool(data.refund_pending),
        backstop=backstop,
        total=money(data.total) if data is not None else None,
        exchange_rate=money(data.exchange_rate) if data is not None else None,
    )


def consent_pairs(consent: Consent) -> tuple[tuple[str, str], ...]:
    return tuple((s, getattr(consent, s)) for s in CONSENT_SIGNALS if getattr(consent, s) is not None)


def fill_consent(event: Event, stored: tuple[tuple[str, str], ...]) -> None:
    """Signals the event does not carry take the order's (before the container's defaults apply)."""
    for signal, state in stored:
        if getattr(event.consent, signal) is None:
            setattr(event.consent, signal, state)


_HELD_ITEM_KEYS = ("item_id", "quantity", "price")


def held_event_data(event: Event) -> dict[str, Any]:
    """A held change's event without anything personal: no user data, address, agent or free text.

    It keeps the source stamp and the order system's data, so that the
    change is the same change (and passes the same triggers) when it is
    applied later.
    """
    data: dict[str, Any] = {
        "event_name": event.event_name,
        "timestamp": event.timestamp.isoformat(),
        "transaction_id": event.transaction_id,
        "consent": msgspec.to_builtins(event.consent),  # the signals set: the models leave out what is None
    }
    for name in ("event_id", "value", "currency", "gclid", "gbraid", "wbraid"):
        value = getattr(event, name)
        if value is not None:
            data[name] = value
    for name in ("source", "order"):
        model = getattr(event, name)
        if model is not None:
            data[name] = msgspec.to_builtins(model)
    if event.items:
        data["items"] = [{k: item[k] for k in _HELD_ITEM_KEYS if k in item} for item in event.items]
    return data


def kept_identifiers(event: Event, consent: Mapping[str, str | None]) -> tuple[tuple[str, str], ...]:
    """What of a purchase the ledger may keep for its refunds under ``consent`` (signal -> state).

    Only an explicit ``granted`` keeps anything: hashed email, phone and
    names under ``ad_user_data``, ``fbp`` and ``fbc`` (or one built from the
    page's ``fbclid``, as Meta describes) under ``ad_storage``.
    """
    kept: dict[str, str] = {}
    if consent.get("ad_user_data") == "granted" and event.user_data is not None:
        hashed = meta_identity.contact_information(event.user_data)
        for name, meta_key in _HASHED:
            digests = hashed.get(meta_key)
            if digests:
                kept[name] = digests[0]
    if consent.get("ad_storage") == "granted":
        fbc = event.fbc or (meta_identity.click_id(event.fbclid, event.timestamp) if event.fbclid else None)
        if fbc:
            kept["fbc"] = fbc
        if event.fbp:
            kept["fbp"] = event.fbp
    return tuple(sorted(kept.items()))


def fill_identifiers(event: Event, kept: tuple[tuple[str, str], ...]) -> None:
    """A refund without customer data of its own carries what was kept of its purchase.

    The pipeline's consent pass still applies after this: the refund takes
    the purchase's consent, so what was kept under a grant passes, and a
    denial given since removes it.
    """
    if not kept:
        return
    values = dict(kept)
    if event.user_data is None and any(name in values for name, _ in _HASHED):
        address = None
        if "sha256_first_name" in values or "sha256_last_name" in values:
            address = Address(sha256_first_name=values.get("sha256_first_name"),
                              sha256_last_name=values.get("sha256_last_name"))
        event.user_data = UserData(sha256_email_address=values.get("sha256_email_address"),
                                   sha256_phone_number=values.get("sha256_phone_number"), address=address)
    for name in _COOKIES:
        if getattr(event, name) is None and name in values:
            setattr(event, name, values[name])
