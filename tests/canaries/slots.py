"""Every slot of every client: where in its request a canary can be put.

``SLOTS[client]`` lists them; each slot writes a rendered canary into a draft
of ``tests.canaries.requests``. Headers, URL query parameters and paths,
titles, ids, items at any depth, custom parameters, user properties, object
keys and parameter names: the places issue 14 names, client by client.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

from tests.canaries.canary import Kind
from tests.canaries.placements import NAME_KEYS, URL_PARAMS, Draw, Slot, as_text
from tests.canaries.requests import Ga4Draft, JsonDraft

IDENTITY_KEYS: dict[str, dict[Kind, tuple[str, ...]]] = {
    "json_beacon": {"email": ("email_address",), "phone": ("phone_number",), "name": ("last_name", "first_name")},
    "order_webhook": {"email": ("email",), "phone": ("phone",), "name": ("last_name", "first_name")},
    "woocommerce": {"email": ("email",), "phone": ("phone",), "name": ("last_name", "first_name")},
}


def _encoded(text: str, draw: Draw) -> str:
    how = draw(st.sampled_from(["raw", "quote", "quote_plus"]))
    return text if how == "raw" else quote(text, safe="") if how == "quote" else quote_plus(text, safe="")


def _with_param(url: str, kind: Kind, value: Any, draw: Draw) -> str:
    name = draw(st.sampled_from(URL_PARAMS[kind]))
    return f"{url}{'&' if '?' in url else '?'}{name}={_encoded(as_text(value), draw)}"


def _with_segment(url: str, value: Any, draw: Draw) -> str:
    path, mark, query = url.partition("?")
    return f"{path}/{_encoded(as_text(value), draw)}/orders{mark}{query}"


# -- GA4 (GET and POST alike) --------------------------------------------------------------------------


def _ga4_param(name: str) -> Callable[[Ga4Draft, Kind, Any, Draw], None]:
    return lambda d, kind, value, draw: d.set(name, as_text(value))


def _ga4_header(name: str) -> Callable[[Ga4Draft, Kind, Any, Draw], None]:
    return lambda d, kind, value, draw: d.header(name, as_text(value))


def _ga4_url(name: str, path: bool = False) -> Callable[[Ga4Draft, Kind, Any, Draw], None]:
    def put(d: Ga4Draft, kind: Kind, value: Any, draw: Draw) -> None:
        if not d.urls[name]:
            d.urls[name].append("https://www.example.com/search?x=1" if name == "dr" else "https://shop.example/")
        if path:
            d.urls[name][0] = _with_segment(d.urls[name][0], value, draw)
        else:
            d.urls[name][0] = _with_param(d.urls[name][0], kind, value, draw)
    return put


def _ga4_em(d: Ga4Draft, kind: Kind, value: Any, draw: Draw) -> None:
    key = {"email": "em", "phone": "pn"}.get(kind) or draw(st.sampled_from(["ln0", "fn0"]))
    d.em.append(f"{key}.{value}")


def _ga4_item(piece: str) -> Callable[[Ga4Draft, Kind, Any, Draw], None]:
    def put(d: Ga4Draft, kind: Kind, value: Any, draw: Draw) -> None:
        text = quote(as_text(value), safe=" @+")  # a ~ or % inside a piece is escaped once more
        n = len(d.item_pieces)
        d.item_pieces.append({"nm": f"nm{text}", "value": f"k{n}note~v{n}{text}", "key": f"k{n}{text}~v{n}1"}[piece])
    return put


def _ga4_custom(prefix: str, key: bool = False) -> Callable[[Ga4Draft, Kind, Any, Draw], None]:
    def put(d: Ga4Draft, kind: Kind, value: Any, draw: Draw) -> None:
        if key:
            d.set(f"{prefix}.{as_text(value)}", "1")
        else:
            d.set(f"{prefix}.{draw(st.sampled_from(['note', 'contact', 'lead_info']))}", as_text(value))
    return put


def _ga4_name_key(prefix: str) -> Callable[[Ga4Draft, Kind, Any, Draw], None]:
    return lambda d, kind, value, draw: d.set(f"{prefix}.{draw(st.sampled_from(NAME_KEYS))}", as_text(value))


GA4 = [
    Slot("em (hashed user data)", "identity", _ga4_em, ("sha256_b64url", "sha256_hex")),
    Slot("dl query", "url", _ga4_url("dl")), Slot("dl path", "path", _ga4_url("dl", path=True)),
    Slot("dr query", "url", _ga4_url("dr")),
    Slot("dt (title)", "text", _ga4_param("dt")), Slot("ul (language)", "text", _ga4_param("ul")),
    Slot("cid", "id", _ga4_param("cid")), Slot("uid", "id", _ga4_param("uid")),
    Slot("ep.event_id", "id", _ga4_param("ep.event_id")), Slot("ep.transaction_id", "id", _ga4_param("ep.transaction_id")),
    Slot("User-Agent header", "text", _ga4_header("User-Agent")),
    Slot("Accept-Language header", "text", _ga4_header("Accept-Language")),
    Slot("Referer header", "text", _ga4_header("Referer")),
    Slot("pr1 item name", "text", _ga4_item("nm")), Slot("pr1 custom item parameter", "text", _ga4_item("value")),
    Slot("pr1 custom item parameter name", "key", _ga4_item("key")),
    Slot("ep custom parameter", "text", _ga4_custom("ep")), Slot("ep parameter name", "key", _ga4_custom("ep", key=True)),
    Slot("up user property", "text", _ga4_custom("up")), Slot("up property name", "key", _ga4_custom("up", key=True)),
    Slot("ep named like a name", "name_key", _ga4_name_key("ep")),
    Slot("up named like a name", "name_key", _ga4_name_key("up")),
]


# -- JSON bodies ------------------------------------------------------------------------------------


def _text_at(*path: Any) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    return lambda d, kind, value, draw: d.put(path, as_text(value))


def _header(name: str) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    return lambda d, kind, value, draw: d.header(name, as_text(value))


def _url_at(*path: Any, segment: bool = False) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    def put(d: JsonDraft, kind: Kind, value: Any, draw: Draw) -> None:
        node: Any = d.body
        for key in path[:-1]:
            node = node[key]
        url = node.get(path[-1]) or "https://www.example.com/"
        node[path[-1]] = _with_segment(url, value, draw) if segment else _with_param(url, kind, value, draw)
    return put


def _custom(*path: Any) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    """A value under a key of its own (no personal meaning in the key) below ``path``."""
    return lambda d, kind, value, draw: d.put((*path, draw(st.sampled_from(["note", "contact", "lead_info"]))), value)


def _key(*path: Any) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    """The canary as a key below ``path``."""
    return lambda d, kind, value, draw: d.put((*path, as_text(value)), 1)


def _named(*path: Any) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    return lambda d, kind, value, draw: d.put((*path, draw(st.sampled_from(NAME_KEYS))), value)


def _deep(d: JsonDraft, kind: Kind, value: Any, draw: Draw) -> None:
    """Somewhere inside the first item, objects and lists 1 to 6 levels down."""
    # A neutral root of its own per kind, so two canaries never descend into each other.
    path: list[Any] = ["items", 0, {"email": "attributes", "phone": "extras", "name": "context"}[kind]]
    for _ in range(draw(st.integers(0, 5))):
        if isinstance(path[-1], int):
            path.append(draw(st.sampled_from(["details", "notes", "meta"])))
        else:
            path.append(draw(st.sampled_from(["details", "notes", "meta", 0])))
    d.put(tuple(path), value)


def _identity(client: str, *prefix: str) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    def put(d: JsonDraft, kind: Kind, value: Any, draw: Draw) -> None:
        key = draw(st.sampled_from(IDENTITY_KEYS[client][kind]))
        where = prefix + (("address",) if client == "json_beacon" and kind == "name" else ())
        d.put((*where, key), value)
    return put


def _shopify_identity(d: JsonDraft, kind: Kind, value: Any, draw: Draw) -> None:
    if kind == "email":
        d.put(("email",), value)
        d.put(("customer", "email"), value)
    elif kind == "phone":
        d.put((draw(st.sampled_from(["customer", "billing_address"])), "phone"), value)
    else:
        key = draw(st.sampled_from(["last_name", "first_name"]))
        d.put(("customer", key), value)
        d.put(("billing_address", key), value)


def _shopify_note(key: bool = False, name: bool = False) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    def put(d: JsonDraft, kind: Kind, value: Any, draw: Draw) -> None:
        label = draw(st.sampled_from(NAME_KEYS)) if name else as_text(value) if key else "gift_message"
        d.body["note_attributes"].append({"name": label, "value": "1" if key else value})
    return put


def _woo_meta(key: bool = False, name: bool = False) -> Callable[[JsonDraft, Kind, Any, Draw], None]:
    def put(d: JsonDraft, kind: Kind, value: Any, draw: Draw) -> None:
        label = "_billing_" + draw(st.sampled_from(["last_name", "first_name"])) if name else (
            as_text(value) if key else "_order_note")
        d.body["meta_data"].append({"id": 90 + len(d.body["meta_data"]), "key": label, "value": "1" if key else value})
    return put


COMMON_HEADERS = [Slot("User-Agent header", "text", _header("User-Agent")),
                  Slot("Accept-Language header", "text", _header("Accept-Language")),
                  Slot("Referer header", "text", _header("Referer"))]

BEACON = [
    Slot("user_data", "identity", _identity("json_beacon", "user_data")),
    Slot("page_location query", "url", _url_at("page_location")),
    Slot("page_location path", "path", _url_at("page_location", segment=True)),
    Slot("page_referrer query", "url", _url_at("page_referrer")),
    Slot("page_title", "text", _text_at("page_title")), Slot("language", "text", _text_at("language")),
    Slot("user_agent field", "text", _text_at("user_agent")),
    Slot("client_id", "id", _text_at("client_id")), Slot("user_id", "id", _text_at("user_id")),
    Slot("event_id", "id", _text_at("event_id")), Slot("transaction_id", "id", _text_at("transaction_id")),
    Slot("item name", "text", _text_at("items", 0, "item_name")),
    Slot("item custom parameter", "text", _custom("items", 0)), Slot("item key", "key", _key("items", 0)),
    Slot("items at depth", "text", _deep),
    Slot("unknown top-level field", "text", _custom()), Slot("extra", "text", _custom("extra")),
    Slot("user_properties", "text", _custom("user_properties")),
    Slot("extra key", "key", _key("extra")), Slot("user_properties key", "key", _key("user_properties")),
    Slot("extra named like a name", "name_key", _named("extra")),
    Slot("user_properties named like a name", "name_key", _named("user_properties")),
    *COMMON_HEADERS,
]

ORDER_WEBHOOK = [
    Slot("customer", "identity", _identity("order_webhook", "customer")),
    Slot("order_id", "id", _text_at("order_id")), Slot("event_id", "id", _text_at("event_id")),
    Slot("Idempotency-Key header", "id", _header("Idempotency-Key")),
    Slot("unknown top-level field", "text", _custom()), Slot("unknown customer field", "text", _custom("customer")),
    Slot("unknown key", "key", _key()), Slot("field named like a name", "name_key", _named()),
    *COMMON_HEADERS,
]

SHOPIFY = [
    Slot("customer, billing_address", "identity", _shopify_identity),
    Slot("id (order id)", "id", _text_at("id")), Slot("X-Shopify-Webhook-Id header", "id", _header("X-Shopify-Webhook-Id")),
    Slot("landing_site query", "url", _url_at("landing_site")),
    Slot("landing_site path", "path", _url_at("landing_site", segment=True)),
    Slot("referring_site query", "url", _url_at("referring_site")),
    Slot("client_details.user_agent", "text", _text_at("client_details", "user_agent")),
    Slot("line item title", "text", _text_at("line_items", 0, "title")),
    Slot("line item custom field", "text", _custom("line_items", 0)), Slot("line item key", "key", _key("line_items", 0)),
    Slot("note", "text", _text_at("note")), Slot("note_attributes value", "text", _shopify_note()),
    Slot("note_attributes name", "key", _shopify_note(key=True)),
    Slot("note_attributes named like a name", "name_key", _shopify_note(name=True)),
    Slot("shipping_address name", "name_key", _named("shipping_address")),
    *COMMON_HEADERS,
]

WOOCOMMERCE = [
    Slot("billing", "identity", _identity("woocommerce", "billing")),
    Slot("id (order id)", "id", _text_at("id")),
    Slot("X-WC-Webhook-Delivery-ID header", "id", _header("X-WC-Webhook-Delivery-ID")),
    Slot("customer_user_agent", "text", _text_at("customer_user_agent")),
    Slot("customer_note", "text", _text_at("customer_note")),
    Slot("line item name", "text", _text_at("line_items", 0, "name")),
    Slot("line item custom field", "text", _custom("line_items", 0)), Slot("line item key", "key", _key("line_items", 0)),
    Slot("meta_data value", "text", _woo_meta()), Slot("meta_data key", "key", _woo_meta(key=True)),
    Slot("meta_data named like a name", "name_key", _woo_meta(name=True)),
    Slot("shipping name", "name_key", _named("shipping")),
    *COMMON_HEADERS,
]

SLOTS: dict[str, list[Slot]] = {"ga4_get": GA4, "ga4_post": GA4, "json_beacon": BEACON, "order_webhook": ORDER_WEBHOOK,
                                "shopify": SHOPIFY, "woocommerce": WOOCOMMERCE}
