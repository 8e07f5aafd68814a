"""dnsmasq's upstream modes and cache policy as flags (issue 8), with real upstreams.

``--all-servers`` (every upstream asked at once), ``--strict-order`` (the
configured order, never reordered by failures), ``--no-negcache``,
``--neg-ttl`` (negative answers without an SOA) and ``--max-ttl`` (the TTL
clients see), counted at real Knot servers and a real dnsmasq upstream.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import dns.rcode
import pytest

from gateway.forward.forwarder import Forwarder, Mode
from gateway.options import Endpoint
from harness.dnsmasq import DnsmasqServer
from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from harness.process import wait_for
from harness.zone import MISSING, WWW, WWW_TTL
from tests.support.dnsclient import query
from tests.support.scripted import ScriptedUpstream, reply_to

QUESTION = b"\x03www\x07example\x00\x00\x01\x00\x01"


@pytest.fixture(scope="module")
def two_knots() -> Iterator[tuple[KnotUpstream, KnotUpstream]]:
    with KnotUpstream() as a, KnotUpstream() as b:
        yield a, b


def asked(knots: tuple[KnotUpstream, ...], gateway: GatewayProcess, name: str) -> list[int]:
    """How many queries each Knot got while the gateway answered ``name``."""
    before = [k.query_count() for k in knots]
    assert query(gateway.host, gateway.port, name, "A").rcode() == dns.rcode.NOERROR
    return [k.query_count() - b for k, b in zip(knots, before, strict=True)]


@pytest.mark.parametrize(("flags", "expected"), [((), [1, 0]), (("--all-servers",), [1, 1])])
def test_all_servers_asks_every_upstream(
    two_knots: tuple[KnotUpstream, KnotUpstream], flags: tuple[str, ...], expected: list[int]
) -> None:
    a, b = two_knots
    with GatewayProcess("--upstream", a.address, "--upstream", b.address, *flags) as gw:
        assert asked(two_knots, gw, WWW) == expected


def test_strict_order_keeps_the_order_after_a_failure() -> None:
    """The first upstream fails once; ordered mode then prefers the second, strict does not."""

    def flaky(query: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        failing = len(first.queries) == 1
        rcode = dns.rcode.SERVFAIL if failing else dns.rcode.NOERROR
        sock.sendto(reply_to(query, *(() if failing else ("192.0.2.1",)), rcode=rcode), addr)

    first = ScriptedUpstream(flaky)
    second = ScriptedUpstream(lambda q, a, s: s.sendto(reply_to(q, "192.0.2.2"), a))

    async def ask(forwarder: Forwarder) -> bytes | None:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        forwarder.resolve(QUESTION, False, future.set_result)
        return await asyncio.wait_for(future, 5)

    async def main(mode: Mode) -> tuple[int, int]:
        first.queries.clear()
        second.queries.clear()
        await first.start()
        await second.start()
        forwarder = Forwarder(
            asyncio.get_running_loop(),
            (Endpoint("127.0.0.1", first.port), Endpoint("127.0.0.1", second.port)),
            timeout=1.0,
            deadline=3.0,
            max_inflight=10,
            mode=mode,
        )
        try:
            for _ in range(2):
                assert await ask(forwarder) is not None
        finally:
            forwarder.close()
            asyncio.get_running_loop().remove_reader(first.udp.fileno())
            asyncio.get_running_loop().remove_reader(second.udp.fileno())
        return len(first.queries), len(second.queries)

    assert asyncio.run(main(Mode.ORDERED)) == (1, 2)
    assert asyncio.run(main(Mode.STRICT)) == (2, 1)
    first.udp.close()
    second.udp.close()


@pytest.fixture(scope="module")
def knot() -> Iterator[KnotUpstream]:
    with KnotUpstream() as server:
        yield server


def knot_queries(knot: KnotUpstream, gateway: GatewayProcess, name: str, times: int) -> int:
    before = knot.query_count()
    for _ in range(times):
        query(gateway.host, gateway.port, name, "A")
    return knot.query_count() - before


@pytest.mark.parametrize(("flags", "expected"), [((), 1), (("--no-negcache",), 3)])
def test_no_negcache(knot: KnotUpstream, flags: tuple[str, ...], expected: int) -> None:
    with GatewayProcess("--upstream", knot.address, *flags) as gw:
        assert knot_queries(knot, gw, MISSING, 3) == expected
        assert knot_queries(knot, gw, WWW, 3) == 1  # positive answers are cached either way


def test_max_ttl_caps_what_clients_see(knot: KnotUpstream) -> None:
    with GatewayProcess("--upstream", knot.address, "--max-ttl", "10") as gw:
        assert WWW_TTL > 10
        first = query(gw.host, gw.port, WWW, "A")
        before = knot.query_count()
        again = query(gw.host, gw.port, WWW, "A")
        assert knot.query_count() == before  # from the cache, which keeps the real TTL
        assert [r.ttl for r in first.answer] == [10]
        assert [r.ttl for r in again.answer] == [10]


@pytest.mark.parametrize(("flags", "expected"), [((), 2), (("--neg-ttl", "60"), 1)])
def test_neg_ttl_caches_negative_answers_without_soa(flags: tuple[str, ...], expected: int) -> None:
    """dnsmasq's ``local=`` NXDOMAIN carries no SOA: cached only with --neg-ttl."""
    with (
        DnsmasqServer([], log_queries=True, extra_args=["--local=/neg.test/"]) as upstream,
        GatewayProcess("--server", f"/neg.test/127.0.0.1#{upstream.port}", *flags) as gw,
    ):
        for _ in range(2):
            msg = query(gw.host, gw.port, "x.neg.test", "A")
            assert msg.rcode() == dns.rcode.NXDOMAIN and not msg.authority
        # A last, different name: once dnsmasq has logged it, it has logged
        # every query the gateway sent before.
        query(gw.host, gw.port, "marker.neg.test", "A")
        log = wait_for(
            lambda: (
                upstream.log_text() if "query[A] marker.neg.test" in upstream.log_text() else None
            ),
            message="dnsmasq logging the marker",
        )
        assert log.count("query[A] x.neg.test") == expected


def test_zone_names_are_not_forwarded_to_a_rule_domain(knot: KnotUpstream) -> None:
    """A rule naming a zone origin is left to the zone: local data answers first."""
    with GatewayProcess(
        "--upstream", knot.address, "--server", f"/home.arpa/{knot.host}#{knot.port}"
    ) as gw:
        assert "local data (catalog or zone) answers it instead" in gw.log_text()
        # From the embedded zone (zones/home.arpa.zone); Knot would say REFUSED.
        assert query(gw.host, gw.port, "nas.home.arpa", "A").rcode() == dns.rcode.NOERROR
