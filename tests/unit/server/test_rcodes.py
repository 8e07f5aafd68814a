"""The one mapping from failures to response codes, and the OPT rule."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from gateway.catalog.source import CatalogUnavailable
from gateway.dns import wire
from gateway.server import rcodes
from tests.unit.helpers import query_bytes


@pytest.mark.parametrize(
    ("exc", "rcode", "expected"),
    [
        (wire.FormatError("x"), wire.FORMERR, True),
        (rcodes.NotImplementedOpcode(), wire.NOTIMP, True),
        (rcodes.BadVersion(), wire.BADVERS, True),
        (rcodes.Refused(), wire.REFUSED, True),
        (rcodes.NotAllowed(), wire.REFUSED, True),
        (CatalogUnavailable("down"), wire.SERVFAIL, True),
        (rcodes.UpstreamFailure(), wire.SERVFAIL, True),
        (TimeoutError(), wire.SERVFAIL, True),
        (KeyError("a bug"), wire.SERVFAIL, False),
    ],
)
def test_rcode_for(exc: BaseException, rcode: int, expected: bool) -> None:
    assert rcodes.rcode_for(exc) == rcode
    assert rcodes.is_expected(exc) is expected


def test_opt_only_for_edns_clients_or_extended_rcodes() -> None:
    plain = query_bytes("x.example")
    reply = dns.message.from_wire(
        rcodes.error_reply(plain, wire.SERVFAIL, client_edns=False, payload=1232)
    )
    assert reply.edns < 0 and reply.rcode() == dns.rcode.SERVFAIL
    edns = query_bytes("x.example", edns=0)
    reply = dns.message.from_wire(
        rcodes.error_reply(edns, wire.REFUSED, client_edns=True, payload=1400)
    )
    assert reply.edns == 0 and reply.payload == 1400
    # BADVERS (16) needs the OPT's upper rcode bits even without client EDNS.
    reply = dns.message.from_wire(
        rcodes.error_reply(plain, wire.BADVERS, client_edns=False, payload=1232)
    )
    assert reply.rcode() == dns.rcode.BADVERS
    assert rcodes.error_reply(b"\x00", wire.FORMERR, client_edns=False, payload=1232) == b""


def test_responses_and_packets_without_a_header_are_dropped() -> None:
    query = query_bytes("web.service.consul")
    response = bytes([query[0], query[1], query[2] | 0x80]) + query[3:]
    assert rcodes.drop_reason(query) is None
    assert rcodes.drop_reason(response) == rcodes.DROPPED_RESPONSE
    for size in range(wire.HEADER_LEN):
        assert rcodes.drop_reason(query[:size]) == rcodes.DROPPED_SHORT
