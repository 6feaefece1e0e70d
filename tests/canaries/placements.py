"""Where a canary can go in a request, and how it is written there.

A *slot* is one place in one client's request (``ga4 dl query parameter``,
``json_beacon items at depth``, ``shopify X-Shopify-Webhook-Id header``),
with a *category* that says what may be put there:

- ``identity``: the field the client reads as the person's email, phone or
  name; the vendors expect the canary here, hashed, when consent allows it;
- ``url``: a query parameter of a URL field, named like what it holds
  (``email=``, ``tel=``, ``name=``) or not (``q=``);
- ``path``: a segment of a URL's path;
- ``text``: free text (a title, a user agent, a custom parameter, an item name);
- ``id``: an identifier the pipeline needs (client, event, transaction, user ids, request keys);
- ``key``: the key of an object, or a parameter's name;
- ``name_key``: a value under a key that says it is a name (``last_name``).

A *variant* is how the canary is written: as it is, in other case, inside a
sentence, as a SHA-256 digest in hex, base64 or with a ``sha256:`` prefix, a
phone with dots or as a JSON number. A name is only placed where a name can be
recognised (its identity field, a URL parameter or key named like a name) or
as a digest, which is recognisable anywhere: no redaction can tell a surname
in a page title from any other word.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable, Literal

from tests.canaries.canary import Canary, Kind

Category = Literal["identity", "url", "path", "text", "id", "key", "name_key"]
Draw = Callable[[Any], Any]  # hypothesis' draw, for the choices a slot makes itself

DIGESTS = ("sha256_hex", "sha256_HEX", "sha256_b64", "sha256_b64url", "sha256_prefixed")
VARIANTS: dict[Kind, tuple[str, ...]] = {
    "email": ("plain", "mixed_case", "in_text", "mailto", *DIGESTS),
    "phone": ("e164", "spaces", "dashes", "parens", "dots", "digits", "number", "in_text", *DIGESTS, "sha256_hex_digits"),
    "name": ("plain", "upper", "sha256_hex"),
}
# How each kind may be written in its identity field, where a client takes it as what it is.
IDENTITY_VARIANTS: dict[Kind, tuple[str, ...]] = {
    "email": ("plain", "mixed_case", "padded"),
    "phone": ("e164", "spaces", "dashes", "dotted_intl"),
    "name": ("plain", "upper"),
}
# A URL parameter's name, by what it holds: names a redaction list would know, and one it would not.
URL_PARAMS: dict[Kind, tuple[str, ...]] = {
    "email": ("email", "e-mail", "mail", "q", "ref"),
    "phone": ("phone", "tel", "q"),
    "name": ("name", "last_name", "first_name"),
}
NAME_KEYS = ("last_name", "first_name", "customer_name", "billing_last_name")


def allowed_variants(kind: Kind, category: Category) -> tuple[str, ...]:
    if category == "identity":
        return IDENTITY_VARIANTS[kind]
    if kind == "name":
        if category in ("url", "name_key"):
            return ("plain", "upper")
        return ("sha256_hex",)
    variants = VARIANTS[kind]
    if category in ("key", "url", "path"):
        variants = tuple(v for v in variants if v != "number")
    if category == "path":
        variants = tuple(v for v in variants if v not in ("in_text", "mailto"))
    return variants


def render(canary: Canary, variant: str) -> Any:
    """The canary written as ``variant``: a string, or an int for a phone ``number``."""
    value = canary.value
    if variant in ("plain", "e164"):
        return value
    if variant == "mixed_case":
        return canary.variants[0]
    if variant == "padded":
        return f"  {canary.variants[0]} "
    if variant == "upper":
        return value.upper()
    if variant == "in_text":
        return f"please contact {value} about this"
    if variant == "mailto":
        return f"mailto:{value}"
    if variant == "number":
        return int(value.lstrip("+"))
    if canary.kind == "phone" and variant in ("spaces", "dashes", "parens", "dots", "digits", "dotted_intl"):
        a, b, c = canary.national[:3], canary.national[3:6], canary.national[6:]
        return {"spaces": f"+1 {a} {b} {c}", "dashes": f"+1-{a}-{b}-{c}", "parens": f"({a}) {b}-{c}",
                "dots": f"{a}.{b}.{c}", "digits": value.lstrip("+"), "dotted_intl": f"+1.{a}.{b}.{c}"}[variant]
    if variant == "sha256_hex":
        return canary.sha256_hex()
    if variant == "sha256_hex_digits":
        return canary.sha256_hex(1)
    if variant == "sha256_HEX":
        return canary.sha256_hex().upper()
    if variant == "sha256_b64":
        return base64.b64encode(canary.digest()).decode()
    if variant == "sha256_b64url":
        return base64.urlsafe_b64encode(canary.digest()).decode().rstrip("=")
    if variant == "sha256_prefixed":
        return "sha256:" + canary.sha256_hex()
    raise ValueError(f"unknown variant {variant!r}")


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Slot:
    name: str
    category: Category
    put: Callable[[Any, Kind, Any, Draw], None]  # (draft, kind, rendered value, draw)
    variants: tuple[str, ...] | None = None  # how a canary may be written here, when not by category

    def variants_for(self, kind: Kind) -> tuple[str, ...]:
        if self.variants is not None:
            return self.variants
        return allowed_variants(kind, self.category)


@dataclass(frozen=True)
class Placement:
    """One canary in one slot, written one way: a row of the leak report."""

    kind: Kind
    client: str  # the request kind: ga4_get, ga4_post, json_beacon, order_webhook, shopify, woocommerce
    slot: str
    category: Category
    variant: str

    @property
    def label(self) -> str:
        return f"{self.client} {self.slot} ({self.category}) <- {self.kind} as {self.variant}"
