"""Longest-suffix routing, label by label, reverse names included."""

from __future__ import annotations

import dns.name
import dns.reversename
import pytest

from gateway.dns import wire
from gateway.forward.rules import build_rules, parse_server
from gateway.server.router import Kind, Router


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


ROUTER = Router(
    ["consul"],
    [name("b.example"), name("svc.consul"), name("2.0.192.in-addr.arpa")],
    knows_address=lambda address: address in {"198.51.100.7", "2001:db8::7"},
)


@pytest.mark.parametrize(
    ("qname", "kind", "suffix"),
    [
        ("web.service.consul", Kind.CATALOG, "consul"),
        ("consul", Kind.CATALOG, "consul"),
        ("WEB.Service.CONSUL", Kind.CATALOG, "consul"),
        ("x.svc.consul", Kind.ZONE, "svc.consul"),  # the longer suffix wins
        ("a.b.example", Kind.ZONE, "b.example"),
        ("www.example.com", Kind.FORWARD, ""),
        (".", Kind.FORWARD, ""),
        # A label holding a dot is one label: not under b.example, nor consul.
        (r"a\.b.example", Kind.FORWARD, ""),
        (r"web.service\.consul", Kind.FORWARD, ""),
        ("5.2.0.192.in-addr.arpa", Kind.ZONE, "2.0.192.in-addr.arpa"),  # a zone beats the catalog
        ("7.100.51.198.in-addr.arpa", Kind.REVERSE, ""),
        ("8.100.51.198.in-addr.arpa", Kind.FORWARD, ""),  # an address the catalog does not know
        ("100.51.198.in-addr.arpa", Kind.FORWARD, ""),  # a network, not an address
    ],
)
def test_routes(qname: str, kind: Kind, suffix: str) -> None:
    route = ROUTER.route(wire.to_wire(qname))
    assert (route.kind, route.suffix) == (kind, suffix)


def test_reverse_route_carries_the_address() -> None:
    route = ROUTER.route(wire.to_wire(dns.reversename.from_address("2001:db8::7")))
    assert route.kind is Kind.REVERSE and route.address == "2001:db8::7"
    assert ROUTER.route(wire.to_wire("7.100.51.198.in-addr.ARPA")).address == "198.51.100.7"


def test_the_same_suffix_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="'consul' is both catalog and zone"):
        Router(["consul"], [name("consul")])


def test_hosts_names_come_after_domains_zones_and_the_catalogs_reverse_names() -> None:
    from gateway.hosts.parse import parse
    from gateway.hosts.table import HostsTable

    lines, _ = parse("198.51.100.7 printer\n192.0.2.5 x.b.example\n", "test")
    table = HostsTable(lines)
    router = Router(
        ["consul"],
        [name("b.example")],
        knows_address=lambda address: address == "198.51.100.7",
        local=table.claims,
    )

    def kind(text: str) -> Kind:
        return router.route(wire.to_wire(text)).kind

    assert kind("PRINTER.") is Kind.HOSTS
    assert kind("localhost.") is Kind.HOSTS and kind("a.localhost.") is Kind.HOSTS
    assert kind("1.0.0.127.in-addr.arpa.") is Kind.HOSTS
    assert kind("7.100.51.198.in-addr.arpa.") is Kind.REVERSE  # the catalog's address first
    assert kind("x.b.example.") is Kind.ZONE  # a zone keeps its names
    assert kind("www.example.com.") is Kind.FORWARD


def test_rule_domains_route_by_the_longest_suffix() -> None:
    rules = build_rules(
        [
            parse_server("/example/127.0.0.1#5300"),
            parse_server("/in.b.example/::1"),
            parse_server("/consul/127.0.0.1#8600"),  # the catalog's domain: the catalog wins
            parse_server("/100.51.198.in-addr.arpa/127.0.0.1#5300"),
        ],
        [],
    )
    router = Router(
        ["consul"], [name("b.example")], lambda address: address == "198.51.100.7", rules.policies
    )
    assert router.shadowed == [name("consul")]
    by_rule = router.route(wire.to_wire("www.EXAMPLE"))
    assert by_rule.kind is Kind.FORWARD and by_rule.suffix == "example"
    assert by_rule.policy is not None and by_rule.policy.other.upstreams == 1
    assert router.route(wire.to_wire("a.b.example")).kind is Kind.ZONE  # longer than the rule
    deeper = router.route(wire.to_wire("x.in.b.example"))  # longer than the zone
    assert deeper.kind is Kind.FORWARD and deeper.suffix == "in.b.example"
    assert router.route(wire.to_wire("web.service.consul")).kind is Kind.CATALOG
    # A catalog address beats a rule's reverse domain; other addresses follow the rule.
    assert router.route(wire.to_wire("7.100.51.198.in-addr.arpa")).kind is Kind.REVERSE
    other = router.route(wire.to_wire("8.100.51.198.in-addr.arpa"))
    assert other.kind is Kind.FORWARD and other.policy is not None
    assert router.route(wire.to_wire("www.example.com")).policy is None
