"""What the Meta tag and the Meta sender share: the API's limits, names and error classes.

Each constant names the page of Meta's reference it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Mapping
from urllib.parse import unquote_plus

import orjson

from gateway import secrets_mask

DESTINATION = "meta"

# Ref - https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api
# POST {api_base}/{api_version}/{pixel_id}/events, body {"data": [...], "access_token": ..., "test_event_code": ...}
DEFAULT_API_BASE = "https://graph.facebook.com"
# Ref - https://developers.facebook.com/documentation/ads-commerce/marketing-api/marketing-api-changelog/versions
# The newest version: v27.0, released 2026-11-04. Marketing API versions (the Conversions API's) now expire
# about a year after release: v24.0 on 2026-11-10, v25.0 on 2027-02-23.
DEFAULT_API_VERSION = "v27.0"
EVENTS_PATH = "{api_base}/{api_version}/{pixel_id}/events"

# Ref - https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/main-body
# "data: ... up to 1,000 events" per request.
MAX_EVENTS_PER_REQUEST = 1000

# Ref - https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/server-event#event-time
# event_time may be up to 7 days old, and one event outside the window fails
# the whole request; physical_store (offline) events may be 62 days old
# (https://developers.facebook.com/docs/marketing-api/conversions-api/offline-events).
# Meta does not document how far ahead a timestamp may be: we allow a minute
# of clock skew between our hosts and Meta's.
MAX_EVENT_AGE = timedelta(days=7)
MAX_EVENT_AGE_BY_SOURCE = {"physical_store": timedelta(days=62)}
MAX_EVENT_AHEAD = timedelta(minutes=1)

# Ref - https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/server-event#action-source
ActionSource = Literal[
    "email", "website", "app", "phone_call", "chat", "physical_store", "system_generated", "business_messaging", "other"
]

# Ref - https://developers.facebook.com/docs/meta-pixel/reference#standard-events
# Our (GA4's recommended) event names -> Meta's standard events.
DEFAULT_EVENT_NAMES: Mapping[str, str] = {
    "add_to_cart": "AddToCart",
    "begin_checkout": "InitiateCheckout",
    "generate_lead": "Lead",
    "page_view": "PageView",
    "purchase": "Purchase",
    "view_item": "ViewContent",
}
PURCHASE = "Purchase"

# Events the order systems send for money going back; ``gateway.event`` documents their fields.
REFUND_EVENT_NAMES = frozenset({"refund", "order_cancelled"})

# Ref - https://developers.facebook.com/docs/marketing-api/conversions-api/best-practices#baseline-requirements-for-matching
# "An event is considered invalid if it only includes customer information
# parameters that consist of one of the following combinations (or a subset thereof)."
INSUFFICIENT_USER_DATA: tuple[frozenset[str], ...] = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


def insufficient_user_data(keys: set[str] | frozenset[str]) -> bool:
    return any(keys <= combination for combination in INSUFFICIENT_USER_DATA)


def event_time_problem(event_time: object, action_source: object, now: datetime) -> str | None:
    """Why Meta would refuse this event_time (and with it the whole request), or None."""
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return "event_time is missing or not a unix timestamp"
    max_age = MAX_EVENT_AGE_BY_SOURCE.get(str(action_source), MAX_EVENT_AGE)
    now_s = now.timestamp()
    if event_time < now_s - max_age.total_seconds():
        return f"event_time is more than {max_age.days} days old; Meta refuses such events"
    if event_time > now_s + MAX_EVENT_AHEAD.total_seconds():
        return "event_time is more than a minute in the future; Meta refuses such events"
    return None


# Ad click ids that land in a page's query: Google (gclid, gbraid, wbraid, dclid, gclsrc), Meta (fbclid),
# Microsoft (msclkid), TikTok (ttclid), X (twclid), LinkedIn (li_fat_id). With ad_storage denied they are
# taken out of event_source_url and referrer_url: each joins the visit to one ad click of one person.
CLICK_ID_PARAMETERS = frozenset({
    "gclid", "gbraid", "wbraid", "dclid", "gclsrc", "fbclid", "msclkid", "ttclid", "twclid", "li_fat_id",
})


def without_click_ids(url: str) -> str:
    """``url`` without its click-id query parameters, whatever their case or percent-encoding.

    Every other byte stays as it was (no re-encoding), so the page Meta sees
    is the page the visitor saw; a query left empty loses its ``?``.
    """
    head, hash_mark, fragment = url.partition("#")
    base, question, query = head.partition("?")
    if not question:
        return url
    kept = [piece for piece in query.split("&")
            if unquote_plus(piece.partition("=")[0], errors="replace").strip().lower() not in CLICK_ID_PARAMETERS]
    rebuilt = base + ("?" + "&".join(kept) if any(kept) else "")
    return rebuilt + hash_mark + fragment


# -- errors -------------------------------------------------------------------------------
# Ref - https://developers.facebook.com/docs/graph-api/guides/error-handling
# {"error": {"message", "type", "code", "error_subcode", "error_user_title", "error_user_msg", "fbtrace_id"}}
# Ref - https://developers.facebook.com/docs/graph-api/overview/rate-limiting

# 1 API Unknown and 2 API Service: "temporary issue due to downtime, wait and retry".
TRANSIENT_CODES = frozenset({1, 2})
# 4 app, 17 user, 32 page, 613 custom-level throttling, 341 application limit
# reached; 80000-80014 are the Business Use Case limits (80003 custom audience,
# 80004 ads management ...), which system-user tokens such as the Conversions
# API's are subject to.
RATE_LIMIT_CODES = frozenset({4, 17, 32, 341, 613, *range(80000, 80015)})
# 190 invalid or expired access token (its subcodes 458-467 say why); 102 API session.
TOKEN_CODES = frozenset({102, 190})
# 10 and 200-299: the token lacks a permission on this pixel. 100 with subcode
# 33 ("Object with ID ... does not exist, cannot be loaded due to missing
# permissions"): a wrong pixel id or one the token cannot see. Either way the
# whole pixel fails, not one event.
PIXEL_SUBCODES_OF_100 = frozenset({33})
# Invalid parameter: the data of one or more events is wrong.
INVALID_PARAMETER = 100

RATE_LIMIT_RETRY_AFTER = 60.0  # seconds, when Meta does not say how long to wait
MESSAGE_CHARS = 300

ErrorKind = Literal["token", "rate_limit", "transient", "pixel", "data", "other"]


@dataclass(frozen=True, slots=True)
class GraphError:
    status: int
    code: int | None = None
    subcode: int | None = None
    type: str | None = None
    message: str | None = None
    user_title: str | None = None
    user_msg: str | None = None
    fbtrace_id: str | None = None
    is_transient: bool = False

    @property
    def result_code(self) -> str:
        """The code stored with the item's result: Meta's ``code`` (and ``/subcode``), else ``http_<status>``."""
        if self.code is None:
            return f"http_{self.status}"
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)

    @property
    def kind(self) -> ErrorKind:
        code = self.code
        if code in TOKEN_CODES or (code is None and self.status == 401):
            return "token"
        if code in RATE_LIMIT_CODES or (code is None and self.status == 429):
            return "rate_limit"
        if code in TRANSIENT_CODES or self.is_transient or self.status >= 500 or (code is None and self.status == 408):
            return "transient"
        if code == 10 or (code is not None and 200 <= code <= 299):
            return "pixel"
        if code == INVALID_PARAMETER:
            if self.subcode in PIXEL_SUBCODES_OF_100 or self.type == "GraphMethodException":
                return "pixel"
            return "data"
        return "other"

    def describe(self, secret: str = "") -> str:
        """Meta's own words for the error, cut short, with the access token (should Meta echo it) masked."""
        parts = [p for p in (self.message, self.user_title, self.user_msg) if p]
        text = " - ".join(dict.fromkeys(parts)) or f"HTTP {self.status}"
        if self.fbtrace_id:
            text += f" (fbtrace_id {self.fbtrace_id})"
        text = secrets_mask.mask_text(text, [secret] if secret else [])
        return " ".join(text.split())[:MESSAGE_CHARS]


def parse_error(status: int, body: bytes) -> GraphError:
    """Meta's ``error`` object from an answer's body; an HTML page or garbage leaves only the status."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return GraphError(status)

    def integer(key: str) -> int | None:
        value = error.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) and value else None

    return GraphError(
        status=status, code=integer("code"), subcode=integer("error_subcode"), type=text("type"),
        message=text("message"), user_title=text("error_user_title"), user_msg=text("error_user_msg"),
        fbtrace_id=text("fbtrace_id"), is_transient=error.get("is_transient") is True,
    )


def rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds until Meta lets us in again, from ``X-Business-Use-Case-Usage`` or ``Retry-After``.

    The usage header maps business ids to lists of usage objects; each may
    carry ``estimated_time_to_regain_access`` in minutes. The longest wins.
    """
    usage = headers.get("X-Business-Use-Case-Usage")
    if usage:
        try:
            parsed = orjson.loads(usage)
        except orjson.JSONDecodeError:
            parsed = None
        minutes = [
            entry.get("estimated_time_to_regain_access")
            for entries in (parsed.values() if isinstance(parsed, dict) else ())
            for entry in (entries if isinstance(entries, list) else ())
            if isinstance(entry, dict)
        ]
        waits = [m for m in minutes if isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0]
        if waits:
            return float(max(waits)) * 60
    retry_after = headers.get("Retry-After", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    return None
