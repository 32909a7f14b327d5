"""Which addresses a webhook may reach: classification, the allow-list, and the messages."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage.egress import (
    EgressPolicy,
    EgressRefused,
    Refusal,
    classify,
    parse_allow,
)

NOTHING_ALLOWED = EgressPolicy()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("fd00::1", "unique-local"),
        ("fd00:ec2::254", "unique-local"),  # AWS's IPv6 metadata service
        ("ff02::1", "multicast"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("100.100.100.200", "shared"),  # Alibaba Cloud's metadata service
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "special-purpose"),  # documentation
        ("2001:db8::1", "special-purpose"),
        ("::ffff:127.0.0.1", "loopback (IPv4-mapped 127.0.0.1)"),
        ("::ffff:169.254.169.254", "link-local (IPv4-mapped 169.254.169.254)"),
        ("::ffff:10.0.0.1", "private (IPv4-mapped 10.0.0.1)"),
        ("::ffff:0.0.0.0", "unspecified (IPv4-mapped 0.0.0.0)"),
        ("64:ff9b::a9fe:a9fe", "link-local (NAT64 169.254.169.254)"),
        ("2002:a9fe:a9fe::1", "link-local (6to4 169.254.169.254)"),
        ("2002:7f00:1::", "loopback (6to4 127.0.0.1)"),
        ("::127.0.0.1", "loopback (IPv4-compatible 127.0.0.1)"),
    ],
)
def test_a_non_public_address_is_classified(address: str, kind: str) -> None:
    assert classify(ipaddress.ip_address(address)) == kind
    refusal = NOTHING_ALLOWED.refusal(address)
    assert refusal is not None
    assert refusal.kind == kind


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"],
)
def test_a_public_address_is_allowed(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None
    assert NOTHING_ALLOWED.refusal(address) is None


def test_the_message_names_the_address_what_it_is_and_the_setting_that_allows_it() -> None:
    refusal = NOTHING_ALLOWED.refusal("169.254.169.254")
    assert refusal is not None
    assert str(EgressRefused.at(refusal)) == (
        "169.254.169.254 is link-local: refused; allow it with"
        " --allow-egress 169.254.169.254/32 or link-local (HOOKSTAGE_ALLOW_EGRESS)"
    )
    mapped = NOTHING_ALLOWED.refusal("::ffff:127.0.0.1")
    assert mapped is not None
    assert str(EgressRefused.at(mapped)) == (
        "::ffff:127.0.0.1 is loopback (IPv4-mapped 127.0.0.1): refused; allow it with"
        " --allow-egress 127.0.0.1/32 or loopback (HOOKSTAGE_ALLOW_EGRESS)"
    )


def test_a_name_that_resolved_to_refused_addresses_lists_them() -> None:
    refusals = [NOTHING_ALLOWED.refusal(a) for a in ("127.0.0.1", "::1")]
    error = EgressRefused.resolving("localhost", [r for r in refusals if r is not None])
    assert str(error) == (
        "localhost resolved to 127.0.0.1 (loopback), ::1 (loopback): refused;"
        " allow it with --allow-egress 127.0.0.1/32,::1/128 or loopback (HOOKSTAGE_ALLOW_EGRESS)"
    )
    # The suggested setting is one the option accepts, and it allows exactly these.
    allowed = parse_allow(["127.0.0.1/32,::1/128"])
    assert allowed.refusal("127.0.0.1") is None
    assert allowed.refusal("::1") is None
    assert allowed.refusal("127.0.0.2") is not None


def test_words_and_cidrs_allow_what_they_name_and_nothing_else() -> None:
    policy = parse_allow(["loopback", "10.20.0.0/16"])
    for allowed in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.20.3.4", "::ffff:10.20.3.4"):
        assert policy.refusal(allowed) is None, allowed
    for refused in ("10.21.0.1", "169.254.169.254", "fe80::1", "fd00::1", "0.0.0.0"):
        assert policy.refusal(refused) is not None, refused


def test_the_environment_form_is_a_comma_separated_list() -> None:
    policy = parse_allow(["link-local, private ,", " fd00::/8"])
    assert policy.refusal("169.254.169.254") is None
    assert policy.refusal("fe80::1%2") is None
    assert policy.refusal("192.168.0.10") is None
    assert policy.refusal("fd12::1") is None
    assert policy.refusal("127.0.0.1") is not None


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "everything", "1.2.3"])
def test_a_bad_allow_entry_is_refused_by_name(entry: str) -> None:
    with pytest.raises(ValueError, match="--allow-egress") as refused:
        parse_allow(["loopback", entry])
    assert repr(entry) in str(refused.value)
    assert "loopback, private, link-local" in str(refused.value)


def test_a_value_that_is_not_an_address_is_refused() -> None:
    assert NOTHING_ALLOWED.refusal("not-an-address") == Refusal(
        "not-an-address", "not an IP address", ""
    )


_ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@given(_ipv4)
def test_an_ipv4_mapped_address_is_judged_as_the_address_it_carries(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    plain = NOTHING_ALLOWED.refusal(str(address))
    carried = NOTHING_ALLOWED.refusal(str(mapped))
    assert (plain is None) == (carried is None)
    if plain is not None and carried is not None:
        assert carried.kind.startswith(plain.kind)
        assert carried.allow == plain.allow == f"{address}/32"


@given(_ipv4)
def test_allowing_the_suggested_entry_allows_the_address(address: ipaddress.IPv4Address) -> None:
    refusal = NOTHING_ALLOWED.refusal(str(address))
    if refusal is not None:
        assert parse_allow([refusal.allow]).refusal(str(address)) is None


@given(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
def test_every_ipv6_address_gets_an_answer(address: ipaddress.IPv6Address) -> None:
    refusal = NOTHING_ALLOWED.refusal(str(address))
    assert (refusal is None) == (classify(address) is None)
    if refusal is not None:
        assert parse_allow([refusal.allow]).refusal(str(address)) is None


def test_an_ip_literal_host_that_is_refused_gets_the_address_s_own_message() -> None:
    with pytest.raises(EgressRefused) as caught:
        NOTHING_ALLOWED.admit("169.254.169.254", ["169.254.169.254"])
    assert str(caught.value) == (
        "169.254.169.254 is link-local: refused; allow it with"
        " --allow-egress 169.254.169.254/32 or link-local (HOOKSTAGE_ALLOW_EGRESS)"
    )
    with pytest.raises(EgressRefused, match=r"^::ffff:127\.0\.0\.1 is loopback \(IPv4-mapped"):
        NOTHING_ALLOWED.admit("::ffff:127.0.0.1", ["::ffff:127.0.0.1"])
    assert NOTHING_ALLOWED.admit("8.8.8.8", ["8.8.8.8"]) == ["8.8.8.8"]


def test_a_name_keeps_only_its_allowed_addresses_in_their_order() -> None:
    mixed = ["10.0.0.7", "93.184.216.34", "127.0.0.1", "2606:4700:4700::1111"]
    kept = NOTHING_ALLOWED.admit("hooks.example.com", mixed)
    assert kept == ["93.184.216.34", "2606:4700:4700::1111"]
    assert parse_allow(["private"]).admit("hooks.example.com", mixed) == [
        "10.0.0.7",
        "93.184.216.34",
        "2606:4700:4700::1111",
    ]


def test_a_name_with_only_refused_addresses_lists_them() -> None:
    with pytest.raises(EgressRefused) as caught:
        NOTHING_ALLOWED.admit("hooks.example.com", ["10.0.0.7", "169.254.169.254"])
    assert str(caught.value).startswith(
        "hooks.example.com resolved to 10.0.0.7 (private), 169.254.169.254 (link-local): refused"
    )
    assert [r.address for r in caught.value.refusals] == ["10.0.0.7", "169.254.169.254"]


def test_no_addresses_is_no_refusal() -> None:
    assert NOTHING_ALLOWED.admit("hooks.example.com", []) == []


_any_address = st.one_of(
    _ipv4.map(str), st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address).map(str)
)


@given(st.lists(_any_address, max_size=8))
def test_admit_keeps_exactly_the_addresses_the_policy_allows(addresses: list[str]) -> None:
    policy = parse_allow(["loopback", "10.0.0.0/8"])
    allowed = [a for a in addresses if policy.refusal(a) is None]
    if addresses and not allowed:
        with pytest.raises(EgressRefused, match="--allow-egress") as refused:
            policy.admit("hooks.example.com", addresses)
        assert len(refused.value.refusals) == len(addresses)
    else:
        assert policy.admit("hooks.example.com", addresses) == allowed
