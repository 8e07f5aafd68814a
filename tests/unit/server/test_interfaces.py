"""The rtnetlink address dump, parsed from built messages (no sockets)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from gateway.server import interfaces as nl


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\x00" * (-len(raw) % 4)


def message(kind: int, body: bytes) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body
    return raw + b"\x00" * (-len(raw) % 4)


def new_addr(family: int, prefix: int, index: int, *attrs: bytes) -> bytes:
    body = struct.pack("=BBBBI", family, prefix, 0, 0, index) + b"".join(attrs)
    return message(nl.RTM_NEWADDR, body)


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_addresses_of_both_families_then_done() -> None:
    dump = (
        new_addr(socket.AF_INET, 24, 3, attr(nl.IFA_ADDRESS, packed("10.99.0.1")),
                 attr(nl.IFA_LOCAL, packed("10.99.0.1")), attr(3, b"veth0\x00"))
        + new_addr(socket.AF_INET6, 64, 3, attr(nl.IFA_ADDRESS, packed("fd99::1")))
        + message(nl.NLMSG_DONE, struct.pack("=i", 0))
    )  # fmt: skip
    found, done = nl.parse_dump(dump)
    assert done
    assert found == [
        nl.InterfaceAddress(3, ipaddress.ip_interface("10.99.0.1/24")),
        nl.InterfaceAddress(3, ipaddress.ip_interface("fd99::1/64")),
    ]


def test_point_to_point_uses_the_local_address_not_the_peer() -> None:
    dump = new_addr(socket.AF_INET, 32, 5, attr(nl.IFA_ADDRESS, packed("192.0.2.2")),
                    attr(nl.IFA_LOCAL, packed("192.0.2.1")))  # fmt: skip
    found, done = nl.parse_dump(dump)
    assert not done  # more datagrams follow
    assert found == [nl.InterfaceAddress(5, ipaddress.ip_interface("192.0.2.1/32"))]


def test_other_families_and_malformed_records_are_skipped() -> None:
    dump = (
        new_addr(socket.AF_PACKET, 0, 2, attr(nl.IFA_ADDRESS, b"\x01" * 6))
        + new_addr(socket.AF_INET, 24, 2, attr(nl.IFA_ADDRESS, b"\x0a\x00"))  # short address
        + new_addr(socket.AF_INET, 24, 2)  # no address at all
        + message(99, b"\x00" * 8)  # another message type
    )
    assert nl.parse_dump(dump) == ([], False)
    # A length field pointing past the end stops the walk instead of looping.
    assert nl.parse_dump(struct.pack("=IHHII", 4096, nl.RTM_NEWADDR, 0, 0, 0)) == ([], False)


def test_an_error_message_raises() -> None:
    error = message(nl.NLMSG_ERROR, struct.pack("=i", -13) + b"\x00" * 16)
    with pytest.raises(OSError) as err:
        nl.parse_dump(error)
    assert err.value.errno == 13


def test_dump_request() -> None:
    request = nl.dump_request(7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, seq) == (len(request), nl.RTM_GETADDR, 7)
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_DUMP
    assert request[16] == socket.AF_UNSPEC


def test_addresses_of_an_interface_leave_out_ipv6_link_local() -> None:
    lo = socket.if_nametoindex("lo")
    known = [
        nl.InterfaceAddress(lo, ipaddress.ip_interface("127.0.0.1/8")),
        nl.InterfaceAddress(lo, ipaddress.ip_interface("::1/128")),
        nl.InterfaceAddress(lo, ipaddress.ip_interface("fe80::1/64")),
        nl.InterfaceAddress(lo + 1000, ipaddress.ip_interface("192.0.2.1/24")),
    ]
    assert nl.addresses_of("lo", known) == ["127.0.0.1", "::1"]
    with pytest.raises(ValueError, match="has no address"):
        nl.addresses_of("lo", known[2:])
