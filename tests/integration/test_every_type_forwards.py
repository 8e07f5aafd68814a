"""Forwarding is type-agnostic: a sweep of query types through the gateway to Knot.

Issue 8: replies to types 65-90 (HTTPS, 65, which browsers ask on every page
load) were thrown away as spoofed, because the reply's type bytes were
lower-cased with the name; the client got SERVFAIL after the forward deadline.
"""

from __future__ import annotations

import dns.rdatatype

from harness import zone
from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from tests.support.dnsclient import query

# Meta types a server answers with an error of its own (EDNS, transfers, TSIG, TKEY).
META_TYPES = frozenset({41, 249, 250, 251, 252, 253, 254})
SWEEP = [t for t in range(1, 301) if t not in META_TYPES] + [32768, 32769, 65280, 65534]


def test_a_sweep_of_types_gets_the_upstreams_answers(
    knot: KnotUpstream, gateway: GatewayProcess
) -> None:
    differing = []
    for value in SWEEP:
        rdtype = dns.rdatatype.RdataType.make(value)
        direct = query(knot.host, knot.port, zone.WWW, rdtype)
        relayed = query(gateway.host, gateway.port, zone.WWW, rdtype)
        if (relayed.rcode(), sorted(map(str, relayed.answer))) != (
            direct.rcode(),
            sorted(map(str, direct.answer)),
        ):
            differing.append((value, relayed.rcode(), direct.rcode()))
    assert differing == []
