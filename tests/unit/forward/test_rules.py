"""dnsmasq's forwarding rules: the syntax (good and bad values) and the per-domain table."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.forward.rules import (
    NXDOMAIN_OUTCOME,
    STANDARD_OUTCOME,
    AddressRule,
    DomainPolicy,
    Outcome,
    ServerRule,
    build_rules,
    parse_address,
    parse_local,
    parse_rev_server,
    parse_server,
    reverse_zones,
)
from gateway.options import Endpoint

A = Endpoint("127.0.0.1", 5300)
B = Endpoint("::1", 53)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("127.0.0.1#5300", ServerRule((), A)),
        ("::1", ServerRule((), B)),
        ("/corp.internal/127.0.0.1#5300", ServerRule(("corp.internal",), A)),
        ("/A.test/b.TEST./127.0.0.1#5300", ServerRule(("a.test", "b.test"), A)),
        ("/x.test/::1#53", ServerRule(("x.test",), B)),
        ("/x.test/#", ServerRule(("x.test",), standard=True)),
        ("/x.test/", ServerRule(("x.test",))),
    ],
)
def test_server_syntax(value: str, rule: ServerRule) -> None:
    assert parse_server(value) == rule


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty server"),
        ("not-an-ip", "does not appear to be an IPv4 or IPv6 address"),
        ("127.0.0.1#99999", "not 1-65535"),
        ("127.0.0.1#x", "not 1-65535"),
        ("/x.test", "/domain/"),
        ("//127.0.0.1", "unqualified names"),
        ("/*.x.test/127.0.0.1", "wildcard"),
        ("/x y/127.0.0.1", "characters not allowed"),
        ("/x.test/127.0.0.1@eth0", "interfaces"),
        ("/x..test/127.0.0.1", "not a valid domain name"),
    ],
)
def test_bad_server_values_say_why(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_server(value)


def test_local_and_address_syntax() -> None:
    assert parse_local("/lan/home/") == ServerRule(("lan", "home"))
    with pytest.raises(ValueError, match="/domain/"):
        parse_local("/lan/127.0.0.1")
    v4, v6 = ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("fd00::5")
    assert parse_address("/ads.test/10.1.2.3") == AddressRule(("ads.test",), (v4,))
    assert parse_address("/ads.test/fd00::5") == AddressRule(("ads.test",), (v6,))
    assert parse_address("/ads.test/").addresses == ()
    assert [str(a) for a in parse_address("/ads.test/#").addresses] == ["0.0.0.0", "::"]
    with pytest.raises(ValueError, match="not an IP address"):
        parse_address("/ads.test/nowhere")
    with pytest.raises(ValueError, match="ADDRESS"):
        parse_address("10.1.2.3")


def test_rev_server_covers_the_range_with_reverse_zones() -> None:
    assert parse_rev_server("192.168.0.0/16,127.0.0.1#5300") == ServerRule(
        ("168.192.in-addr.arpa",), A
    )
    assert parse_rev_server("10.1.2.3,127.0.0.1#5300").domains == ("3.2.1.10.in-addr.arpa",)
    twelve = parse_rev_server("172.16.0.0/12,127.0.0.1#5300").domains
    assert len(twelve) == 16 and twelve[0] == "16.172.in-addr.arpa"
    assert twelve[-1] == "31.172.in-addr.arpa"
    assert reverse_zones(ipaddress.ip_network("fd00::/8")) == ("d.f.ip6.arpa",)
    assert reverse_zones(ipaddress.ip_network("fe80::/10")) == (
        "8.e.f.ip6.arpa",
        "9.e.f.ip6.arpa",
        "a.e.f.ip6.arpa",
        "b.e.f.ip6.arpa",
    )
    for bad in ("10.0.0.0/8", "10.0.0.0/33,127.0.0.1", "0.0.0.0/0,127.0.0.1"):
        with pytest.raises(ValueError):
            parse_rev_server(bad)


def policies(*servers: str, addresses: tuple[str, ...] = ()) -> dict[str, DomainPolicy]:
    rules = build_rules([parse_server(s) for s in servers], [parse_address(a) for a in addresses])
    return {p.name.to_text(omit_final_dot=True): p for p in rules.policies}


def test_each_domain_gets_its_servers_and_sets_are_shared() -> None:
    rules = build_rules(
        [
            parse_server("192.0.2.1"),
            parse_server("/a.test/b.test/127.0.0.1#5300"),
            parse_server("/a.test/::1"),
            parse_server("/c.test/127.0.0.1#5300"),
        ],
        [],
    )
    assert rules.default_servers == (Endpoint("192.0.2.1", 53),)
    assert rules.upstream_sets == ((), (A, B), (A,))
    by_name = {p.name.to_text(omit_final_dot=True): p.other.upstreams for p in rules.policies}
    assert by_name == {"a.test": 1, "b.test": 2, "c.test": 2}


def test_the_longest_domain_decides() -> None:
    found = policies(
        "/test/127.0.0.1#5300", "/example.test/#", "/in.example.test/", "/x.in.example.test/::1"
    )
    assert found["test"].other == Outcome(upstreams=1)
    assert found["example.test"].other == STANDARD_OUTCOME  # '#': the standard servers
    assert found["in.example.test"].other == NXDOMAIN_OUTCOME  # local only
    assert found["x.in.example.test"].other == Outcome(upstreams=2)


def test_address_answers_its_family_and_the_rest_goes_on() -> None:
    found = policies(
        "/test/127.0.0.1#5300",
        addresses=("/ads.test/10.1.2.3", "/null.test/#", "/nx.test/", "/v6.ads.test/fd00::5"),
    )
    ads = found["ads.test"]
    assert ads.a == Outcome(rdata=bytes([10, 1, 2, 3]))
    assert ads.aaaa == Outcome(upstreams=1) and ads.other == Outcome(upstreams=1)
    assert ads.nxdomain_as_nodata
    v6 = found["v6.ads.test"]
    assert v6.a == ads.a  # the shorter domain's A still answers
    assert v6.aaaa == Outcome(rdata=ipaddress.ip_address("fd00::5").packed)
    null = found["null.test"]
    assert null.a.rdata == bytes(4) and null.aaaa.rdata == bytes(16)
    assert null.other == Outcome(upstreams=1)
    nx = found["nx.test"]
    assert nx.a == nx.aaaa == nx.other == NXDOMAIN_OUTCOME
    assert not found["test"].nxdomain_as_nodata


def test_outcome_by_type() -> None:
    policy = policies(addresses=("/ads.test/10.1.2.3",))["ads.test"]
    assert policy.outcome(1) is policy.a
    assert policy.outcome(28) is policy.aaaa
    assert policy.outcome(15) is policy.other
