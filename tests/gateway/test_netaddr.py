"""X-Forwarded-For is believed from trusted proxies only, walking from the right."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from gateway.netaddr import TrustedProxies

PROXIES = TrustedProxies([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("10.1.2.3", "203.0.113.7", "203.0.113.7", id="one_hop_behind_a_proxy"),
        pytest.param("10.1.2.3", "198.51.100.1, 203.0.113.7, 10.9.9.9", "203.0.113.7", id="chain_of_proxies"),
        pytest.param("10.1.2.3", "1.1.1.1, 203.0.113.7", "203.0.113.7", id="forged_left_entries_ignored"),
        pytest.param("192.0.2.1", "203.0.113.7", "192.0.2.1", id="untrusted_peer"),
        pytest.param("2001:db8::1", "2001:db8::2, 2a00:1450::5", "2a00:1450::5", id="ipv6"),
        pytest.param("10.1.2.3", "garbage, 203.0.113.7", "203.0.113.7", id="garbage_left_of_a_good_hop"),
        pytest.param("10.1.2.3", "203.0.113.7, garbage", "10.1.2.3", id="garbage_next_to_the_proxy"),
        pytest.param("10.1.2.3", "010.1.2.3", "10.1.2.3", id="leading_zeros_are_not_an_address"),
        pytest.param("10.1.2.3", "::ffff:10.1.2.3", "::ffff:10.1.2.3", id="mapped_v4_is_not_the_v4_network"),
        pytest.param("10.1.2.3", "", "10.1.2.3", id="empty_header"),
        pytest.param(None, "203.0.113.7", None, id="no_peer"),
    ],
)
def test_resolve(peer, forwarded, expected):
    assert PROXIES.resolve(peer, forwarded) == expected


def test_no_trusted_proxies_means_the_peer():
    assert TrustedProxies([]).resolve("10.1.2.3", "203.0.113.7") == "10.1.2.3"


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


@given(addresses)
def test_trust_agrees_with_ipaddress(address):
    networks = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"),
                ipaddress.ip_network("192.168.1.128/25")]
    expected = any(address in net for net in networks)
    assert TrustedProxies(networks).trusts(str(address)) is expected
