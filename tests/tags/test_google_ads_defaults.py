"""Defaults of the google_ads destination and adjustment tag that follow Google's rules as of December 2026.

- Developer tokens were sunset on 2026-09-09: "You no longer need a developer
  token or a Google Ads manager account to get started" (the header is
  optional and ignored).
  Ref: https://developers.google.com/google-ads/api/docs/api-policy/developer-token
- Since 2026-06-15 the Google Ads API refuses offline click conversions from
  new adopters; the Data Manager API is "the primary API for importing
  offline conversions", so it is the default route.
  Ref: https://developers.google.com/ads/blog/posts/2026/05/changes-to-offline-click-conversion
- CONVERSION_EXPIRED: "Adjustment can't be made to a conversion that occurred
  more than 54 days ago"; TOO_RECENT_CONVERSION: "Try adjusting a conversion
  that occurred at least 24 hours ago" (ConversionAdjustmentUploadError, the
  google-ads package's proto docs).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gateway.event import Event
from gateway.tag import Skip
from tags import _google_ads_sender as google_ads
from tags import google_ads_conversion_adjustment as adjustment_tag

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ADJUST = adjustment_tag.Config.model_validate({
    "name": "gads_refund", "type": "google_ads_conversion_adjustment", "trigger": "refund",
    "customer_id": "1234567890", "conversion_action_id": "987654321",
})


def test_a_live_section_needs_only_the_oauth_client_and_refresh_token() -> None:
    config = google_ads.Config.model_validate({
        "mode": "live", "client_id": "test-id", "client_secret": "test-secret", "refresh_token": "test-refresh",
    })
    assert (config.developer_token, config.api) == ("", "data_manager")


def test_adjustments_wait_24_hours_after_their_conversion_by_default() -> None:
    assert ADJUST.delay_after_conversion == timedelta(hours=24)


@pytest.mark.parametrize("kind", ["RETRACTION", "RESTATEMENT", "ENHANCEMENT"])
def test_every_adjustment_type_is_skipped_after_54_days(kind: str) -> None:
    event = Event.from_data({
        "event_name": "refund", "timestamp": T0, "consent": {"ad_user_data": "granted"},
        "user_data": {"email_address": "test@example.com"},
        "adjustment": {"type": kind, "adjustment_id": "a-1", "order_id": "ORD-1", "adjusted_value": 5.0,
                       "conversion_time": T0 - timedelta(days=54, minutes=1)},
    })
    with pytest.raises(Skip) as info:
        adjustment_tag.build(event, ADJUST)
    assert info.value.reason == "conversion_expired"
