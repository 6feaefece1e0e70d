"""Client registry: config ``type`` -> module. Explicit, sorted, complete (a test checks)."""

from types import ModuleType

from clients import ga4, json_beacon, order_webhook, shopify, woocommerce

CLIENTS: dict[str, ModuleType] = {
    "ga4": ga4,
    "json_beacon": json_beacon,
    "order_webhook": order_webhook,
    "shopify": shopify,
    "woocommerce": woocommerce,
}
