"""Tag and destination registries: config ``type`` -> module. Explicit and sorted.

A tag module has ``Config``, ``build`` and ``DESTINATION`` (the sender that
delivers its items). A destination module has ``Config`` (its section under
``destinations``, or ``None`` when it needs none) and ``Sender``.
"""

from types import ModuleType

from tags import (
    _ga4_sender,
    _google_ads_sender,
    _http_sender,
    _meta_sender,
    ga4,
    ga4_refund,
    google_ads_call_conversion,
    google_ads_click_conversion,
    google_ads_conversion_adjustment,
    http_request,
    meta_capi,
)

TAGS: dict[str, ModuleType] = {
    "ga4": ga4,
    "ga4_refund": ga4_refund,
    "google_ads_call_conversion": google_ads_call_conversion,
    "google_ads_click_conversion": google_ads_click_conversion,
    "google_ads_conversion_adjustment": google_ads_conversion_adjustment,
    "http_request": http_request,
    "meta_capi": meta_capi,
}

DESTINATIONS: dict[str, ModuleType] = {
    "ga4": _ga4_sender,
    "google_ads": _google_ads_sender,
    "http_request": _http_sender,
    "meta": _meta_sender,
}
