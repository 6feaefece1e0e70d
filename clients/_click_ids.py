"""Click ids in a page URL, read one way for every client.

Google Ads puts ``gclid`` (or, on iOS, ``gbraid`` / ``wbraid``) in the
landing page's query; Meta puts ``fbclid`` there. GA4 hits carry the page
URL in ``dl``, beacons in ``page_location``, Shopify orders in
``landing_site``: each client calls ``click_ids`` on it, so a purchase
gets the same ids (and Meta its ``fbc``) whichever way it arrived.

- A name counts after ``?``, ``&``, ``#`` or ``;``, so a single-page app's
  ``#/thanks?fbclid=...`` is read too, and ``xgclid=`` is not ``gclid``.
- The first usable value of a name wins; an empty one, one that is not
  UTF-8 once percent-decoded, or a placeholder a page wrote where it had
  nothing (``undefined``, ``null``) is skipped.

This runs on every GA4 hit whose URL has a query, so a URL without
``clid=`` or ``braid=`` in it costs two substring tests.
"""

from __future__ import annotations

import re

from gateway.identity import clean
from gateway.percent import unquote_plus

NAMES = ("gclid", "gbraid", "wbraid", "fbclid")
_CLICK_ID = re.compile(r"[?&#;](gclid|gbraid|wbraid|fbclid)=([^&#;]*)")


def click_ids(url: str | None) -> dict[str, str]:
    """The click ids in ``url`` (absolute, or a path with a query), by name."""
    if not url or ("clid=" not in url and "braid=" not in url):
        return {}
    found: dict[str, str] = {}
    for match in _CLICK_ID.finditer(url):
        name, value = match.group(1), match.group(2)
        if name in found or not value:
            continue
        if "%" in value or "+" in value:
            try:
                value = unquote_plus(value)
            except UnicodeDecodeError:
                continue
        value = clean(value) if "\x00" not in value else None
        if value is not None:
            found[name] = value
    return found
