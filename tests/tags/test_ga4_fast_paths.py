"""The ga4 tag's shortcuts give the answers of the plain code they stand in for."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from gateway.consent import decode_gcd
from gateway.event import Consent
from tags import _ga4
from tags.ga4 import _is_ip

addresses = (st.ip_addresses().map(str) | st.text(alphabet="0123456789abcdef.:%x", max_size=45)
             | st.sampled_from(["01.2.3.4", "1.2.3.4 ", "::ffff:1.2.3.4", "fe80::1%eth0", "256.1.1.1", "1.2.3", "",
                               "\x00"]))


def ipaddress_says(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@settings(max_examples=1000)
@given(addresses)
def test_is_ip_agrees_with_ipaddress(text):
    assert _is_ip(text) == ipaddress_says(text)


states = st.none() | st.sampled_from(["granted", "denied"])
gcds = st.none() | st.sampled_from(["13r3r3r2r5l1", "11p1p1p1p5", "13l3l3l2l5l1", "bad", "13q3t3v3u5l1"]) | st.text(
    alphabet="0123456789lpqrtuvm", min_size=9, max_size=14)


@settings(max_examples=500)
@given(states, states, states, states, gcds)
def test_gcd_remembered_is_gcd_worked_out(ad, analytics, user_data, personalization, sent):
    consent = Consent(ad_storage=ad, analytics_storage=analytics, ad_user_data=user_data,
                      ad_personalization=personalization)
    worked_out = _ga4._gcd(tuple(getattr(consent, s) or "denied" for s in _ga4.CONSENT_SIGNALS), sent)
    assert _ga4.gcd(consent, sent) == worked_out
    assert _ga4.gcd(consent, sent) == worked_out  # the second time from the memo


page_lists = st.lists(st.tuples(st.sampled_from(["dl", "cid", "gcs"]), st.sampled_from(["a b", "1", "x/y", ""])),
                      min_size=1, max_size=3)


@settings(max_examples=300)
@given(st.lists(page_lists, min_size=1, max_size=6))
def test_the_remembered_page_encoding_is_each_pages_own(pages):
    from gateway.percent import encode_query
    from tags.ga4 import _encode_page

    for params in pages:  # a run of pages, repeats and changes mixed, as consecutive events bring them
        assert _encode_page(list(params)) == encode_query(params)


@pytest.mark.parametrize("sent", ["bad", "13x3x3x2x5l1", "1"])
def test_a_gcd_the_gateway_could_not_read_is_not_forwarded_as_it_came(sent: str) -> None:
    # decode_gcd reads such a string as every signal denied; the forwarded gcd says so in letters GA4 reads.
    forwarded = _ga4._gcd(("denied", "denied", "denied", "denied"), sent)
    assert forwarded != sent
    assert decode_gcd(forwarded) == {s: "denied" for s in _ga4.CONSENT_SIGNALS}
