"""Access decisions per client address: CIDR matching, the `local` default, classes."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.options import LOCAL_NETWORKS, ClientNetwork, Config, Endpoint
from gateway.server.access import (
    LOOPBACK_NETWORKS,
    Access,
    AccessPolicy,
    NetworkSet,
    block_of,
    expand,
    local_networks,
    parse_address,
)
from gateway.server.interfaces import InterfaceAddress

LO = 1
ETH0 = 2
ETH1 = 3
# A machine with two links besides loopback, as netlink would report it.
MACHINE = [
    InterfaceAddress(LO, ipaddress.ip_interface("127.0.0.1/8")),
    InterfaceAddress(LO, ipaddress.ip_interface("::1/128")),
    InterfaceAddress(ETH0, ipaddress.ip_interface("10.99.0.1/24")),
    InterfaceAddress(ETH0, ipaddress.ip_interface("10.98.0.1/16")),  # a second address
    InterfaceAddress(ETH0, ipaddress.ip_interface("fd99::1/64")),
    InterfaceAddress(ETH1, ipaddress.ip_interface("192.168.7.5/24")),
    InterfaceAddress(ETH1, ipaddress.ip_interface("fe80::1/64")),
]


def nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


@pytest.mark.parametrize(
    ("networks", "inside", "outside"),
    [
        (["10.0.0.0/8"], ["10.0.0.0", "10.255.255.255", "10.1.2.3"], ["11.0.0.0", "9.255.255.255"]),
        (["192.0.2.7/32"], ["192.0.2.7"], ["192.0.2.6", "192.0.2.8"]),
        (["0.0.0.0/0"], ["1.2.3.4", "255.255.255.255"], ["::1", "2001:db8::1"]),
        (["2001:db8::/32"], ["2001:db8::", "2001:db8:ffff::1"], ["2001:db9::", "10.0.0.1"]),
        (["::/0"], ["2001:db8::1", "fe80::1"], ["127.0.0.1"]),
        # Several prefix lengths: one probe per length.
        (["10.1.0.0/16", "10.2.3.0/24", "172.16.0.0/12"],
         ["10.1.200.1", "10.2.3.4", "172.31.255.255"], ["10.2.4.1", "172.32.0.0", "10.3.0.0"]),
        ([], [], ["10.0.0.1", "::1"]),
    ],
)  # fmt: skip
def test_network_set_membership(networks: list[str], inside: list[str], outside: list[str]) -> None:
    members = NetworkSet(nets(*networks))
    for text in inside:
        assert ipaddress.ip_address(text) in members, text
    for text in outside:
        assert ipaddress.ip_address(text) not in members, text


def test_parse_address_drops_scope_and_unwraps_mapped() -> None:
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("::ffff:10.99.0.2") == ipaddress.ip_address("10.99.0.2")
    assert parse_address("10.99.0.2") == ipaddress.ip_address("10.99.0.2")


def test_local_networks_of_a_specific_listen_address() -> None:
    # The interface holding 10.99.0.1 has three subnets; eth1's are not local.
    assert local_networks(["10.99.0.1"], MACHINE) == (
        *LOOPBACK_NETWORKS, *nets("10.99.0.0/24", "10.98.0.0/16", "fd99::/64"),
    )  # fmt: skip


def test_local_networks_of_a_wildcard_is_every_interface() -> None:
    assert local_networks(["0.0.0.0"], MACHINE) == (
        *LOOPBACK_NETWORKS,
        *nets("10.99.0.0/24", "10.98.0.0/16", "fd99::/64", "192.168.7.0/24", "fe80::/64"),
    )
    assert local_networks(["::"], MACHINE) == local_networks(["0.0.0.0"], MACHINE)


def test_local_networks_loopback_only_and_unknown_addresses() -> None:
    assert local_networks(["127.0.0.1", "::1"], MACHINE) == LOOPBACK_NETWORKS
    assert local_networks(["192.0.2.99"], MACHINE) == LOOPBACK_NETWORKS  # held by no interface
    # No interface data (netlink unreadable): loopback only, never open.
    assert local_networks(["0.0.0.0"], []) == LOOPBACK_NETWORKS


def test_expand_replaces_the_keyword_and_deduplicates() -> None:
    local = nets("127.0.0.0/8", "10.99.0.0/24")
    assert expand([LOCAL_NETWORKS], local) == local
    configured: list[ClientNetwork] = [*nets("10.99.0.0/24"), LOCAL_NETWORKS, *nets("192.0.2.0/24")]
    assert expand(configured, local) == nets("10.99.0.0/24", "127.0.0.0/8", "192.0.2.0/24")
    assert expand(nets("0.0.0.0/0"), local) == nets("0.0.0.0/0")


def policy(**options: object) -> AccessPolicy:
    config = Config(listen=(Endpoint("10.99.0.1", 53),), upstream=(), **options)  # type: ignore[arg-type]
    return AccessPolicy.from_config(config, MACHINE)


def test_default_policy_is_local_service() -> None:
    gate = policy()
    assert gate.classify("10.99.0.77").access is Access.FULL
    assert gate.classify("10.98.200.1").access is Access.FULL
    assert gate.classify("fd99::5").access is Access.FULL
    assert gate.classify("192.168.7.9").access is Access.NONE  # eth1: not a listen interface
    assert gate.classify("198.51.100.1").access is Access.NONE
    assert gate.classify("127.0.0.1").access is Access.FULL
    assert "queries from 127.0.0.0/8, ::1/128, 10.99.0.0/24" in gate.describe()


def test_allow_without_recursion_is_local_answers_only() -> None:
    gate = policy(allow=(LOCAL_NETWORKS, *nets("198.51.100.0/24")))
    assert gate.classify("198.51.100.1").access is Access.LOCAL
    assert gate.classify("10.99.0.77").access is Access.FULL
    assert gate.classify("203.0.113.1").access is Access.NONE


def test_recursion_needs_allow_too_and_loopback_is_always_allowed() -> None:
    gate = policy(allow=nets("10.99.0.0/24"), allow_recursion=nets("0.0.0.0/0", "::/0"))
    assert gate.classify("10.99.0.5").access is Access.FULL
    assert gate.classify("198.51.100.1").access is Access.NONE  # recursion alone is not enough
    assert gate.classify("127.0.0.2").access is Access.FULL  # not listed, still allowed
    assert gate.classify("::1").access is Access.FULL


def test_limited_clients_and_their_blocks() -> None:
    gate = policy()  # --max-amplification 10 by default: non-loopback clients are limited
    client = gate.classify("10.99.0.77")
    assert client.limited and client.block == bytes([10, 99, 0])
    assert block_of(ipaddress.ip_address("2001:db8:1:2ff::1").packed) == bytes.fromhex(
        "20010db8000102"
    )
    assert gate.classify("::ffff:10.99.0.77").block == bytes([10, 99, 0])
    assert not gate.classify("127.0.0.1").limited
    assert policy(limit_loopback=True).classify("127.0.0.1").limited
    assert not policy(max_amplification=0).classify("10.99.0.77").limited
    assert policy(max_amplification=0, rate_limit=5).classify("10.99.0.77").limited


def test_loopback_listeners_skip_every_check() -> None:
    assert not policy().checks_listener("127.0.0.1")
    assert not policy().checks_listener("::1")
    assert policy(limit_loopback=True).checks_listener("127.0.0.1")
    assert not policy(limit_loopback=True, max_amplification=0).checks_listener("127.0.0.1")
    assert policy().checks_listener("10.99.0.1")
    assert policy().checks_listener("0.0.0.0")
