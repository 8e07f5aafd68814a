"""Private ranges as pure logic: bogus-priv reverse names and the rebinding filter."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rcode
import dns.reversename
import dns.rrset
import pytest

from gateway.dns import verify, wire
from gateway.forward import private


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("5.5.16.172.in-addr.arpa", "172.16.5.5"),
        ("16.172.in-addr.arpa", "172.16.0.0"),  # a network: its first address
        ("10.in-addr.arpa", "10.0.0.0"),
        ("d.f.ip6.arpa", "fd00::"),
        (dns.reversename.from_address("2001:db8::1").to_text(), "2001:db8::1"),
        ("in-addr.arpa", None),  # no label of the address at all
        ("ip6.arpa", None),
        ("1.2.3.4.5.in-addr.arpa", None),  # five octets
        ("256.1.1.10.in-addr.arpa", None),
        ("x.16.172.in-addr.arpa", None),
        ("10.f.ip6.arpa", None),  # a nibble label is one hex digit
        ("www.example.com", None),
    ],
)
def test_reverse_name_address(name: str, address: str | None) -> None:
    found = private.reverse_name_address(wire.to_wire(name).lower())
    assert (str(found) if found is not None else None) == address


@pytest.mark.parametrize(
    ("address", "bogus"),
    [
        ("10.1.1.1", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("0.1.2.3", True),
        ("169.254.1.1", True),
        ("192.0.2.1", True),
        ("198.51.100.1", True),
        ("203.0.113.1", True),
        ("255.255.255.255", True),
        ("100.64.1.1", False),  # CGNAT: neither dnsmasq list has it (checked against it)
        ("93.184.216.34", False),
        ("fd00::1", True),
        ("fc00::1", False),
        ("fe80::1", True),
        ("fec0::1", True),
        ("2001:db8::1", True),
        ("::1", True),
        ("::", True),
        ("::ffff:192.168.1.1", True),
        ("::ffff:93.184.216.34", False),
        ("2606:4700::1", False),
    ],
)
def test_private_ranges(address: str, bogus: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert private.is_private(ip) is bogus


def reply(*records: tuple[str, str]) -> bytes:
    query = dns.message.make_query("h.example.", "A", use_edns=0)
    response = dns.message.make_response(query)
    for rdtype, value in records:
        response.answer.append(dns.rrset.from_text("h.example.", 60, "IN", rdtype, value))
    return response.to_wire()


@pytest.mark.parametrize(
    ("records", "blocked"),
    [
        ((("A", "93.184.216.34"),), False),
        ((("A", "93.184.216.34"), ("A", "192.168.1.1")), True),
        ((("AAAA", "fd00::1"),), True),
        ((("AAAA", "2606:4700::1"),), False),
        ((("TXT", '"192.168.1.1"'),), False),  # only addresses count
        ((), False),
    ],
)
def test_rebinding(records: tuple[tuple[str, str], ...], blocked: bool) -> None:
    data = reply(*records)
    assert private.rebinding(data, verify.walk_strict(data)) is blocked


def test_emptied_is_noerror_with_the_question_only() -> None:
    data = reply(("A", "10.0.0.1"))
    emptied = private.emptied(data, verify.walk_strict(data))
    msg = dns.message.from_wire(emptied)
    assert msg.rcode() == dns.rcode.NOERROR and msg.id == dns.message.from_wire(data).id
    assert (msg.answer, msg.authority, msg.additional, msg.edns) == ([], [], [], -1)
    assert msg.question[0].name.to_text() == "h.example."
