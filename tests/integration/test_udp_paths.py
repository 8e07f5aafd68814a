"""Which UDP path runs, and the batched reader's own behaviour (issue 11).

The gateway reads UDP with recvmmsg/sendmmsg where the compiled helper is
built (``--udp-batch auto``) and one recvfrom/sendto at a time otherwise; a
start-up line and the ``udp_batch_io`` gauge say which. The DNS behaviour of
both paths is tested by the modules whose gateways run once per path (the
``udp_batch`` fixture): test_gateway_dns.py (answers, truncation, bad
packets), test_hostile_packets.py, test_not_open_resolver.py (access control
and limits). Here: the batched reader in this process on real sockets, where
a bug in one datagram, slow-path hand-over and the limits can be arranged.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.rcode
import pytest

from gateway.server import batchio
from gateway.server.access import AccessPolicy
from gateway.server.ratelimit import ResponseRateLimiter, UdpLimits
from gateway.server.transport import UDP_BATCH, Gate, UdpListener
from harness.ports import LOOPBACK
from tests.support.hostile import MeteredGateway
from tests.support.udp_paths import MODES, compiled_helper, expected_batch_io
from tests.unit.server.test_resolver import make

QUERIES = 200
TIMEOUT_S = 5.0
POLL_S = 0.01
# Deliberately tight: most of a burst of identical answers is limited.
RRL_RATE = 5
RRL_SLIP = 2


@pytest.mark.parametrize("mode", MODES)
def test_the_log_and_a_gauge_say_which_udp_path_runs(mode: str) -> None:
    expected = expected_batch_io(mode)
    with MeteredGateway("--udp-batch", mode) as gw:
        for _ in range(QUERIES):
            assert gw.udp_answers("consul.")
        assert gw.counter("udp_batch_io") == expected
        line = next(li for li in gw.log_text().splitlines() if "UDP I/O: " in li)
        assert ("recvmmsg/sendmmsg" in line) == bool(expected), line
        assert gw.counter('queries_total{transport="udp"}') >= QUERIES
        # One batch per wake-up: at least one per query sent one at a time.
        batches = gw.counter("udp_batches")
        assert batches >= QUERIES if expected else batches == 0


async def _until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not done():
            await asyncio.sleep(POLL_S)


def _run(test: Callable[[socket.socket, socket.socket], Awaitable[None]]) -> None:
    """``test(server, client)`` on a loopback pair, inside an event loop."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind((LOOPBACK, 0))
            server.setblocking(False)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind((LOOPBACK, 0))
                client.setblocking(False)
                await test(server, client)

    asyncio.run(main())


def _drain(client: socket.socket) -> list[dns.message.Message]:
    replies: list[dns.message.Message] = []
    while True:
        try:
            data = client.recv(65535)
        except BlockingIOError:
            return replies
        replies.append(dns.message.from_wire(data))


def test_a_bug_on_one_datagram_costs_only_that_one_and_slow_queries_are_answered() -> None:
    helper = compiled_helper()
    soa = dns.message.make_query("consul.", "SOA").to_wire()
    bug = dns.message.make_query("bug.consul.", "A").to_wire()
    # First asked: the slow path answers (from the catalog), then it is a template.
    slow = dns.message.make_query("web.service.consul.", "A").to_wire()

    async def test(server: socket.socket, client: socket.socket) -> None:
        resolver, _, _ = make()
        resolver.answer_fast(soa, False) or resolver.answer_slow(soa, False, lambda _: None)
        listener = UdpListener(resolver, server, batch=helper)
        fast = listener._fast

        def buggy(data: bytes, tcp: bool) -> bytes | None:
            if data == bug:
                raise RuntimeError("a bug")
            return fast(data, tcp)

        listener._fast = buggy
        counts = resolver.metrics.counters
        try:
            # Sent before the loop runs: one recvmmsg reads all five.
            for packet in (soa, bug, slow, soa, soa):
                client.sendto(packet, server.getsockname())
            await _until(lambda: counts["udp_queries"] == 5)
            replies: list[dns.message.Message] = []
            await _until(lambda: len(replies.__iadd__(_drain(client))) >= 4)
        finally:
            listener.close()
        assert counts["udp_batches"] == 1
        assert counts["internal_errors"] == 1 and counts["slow"] == 2  # the SOA, then web
        assert sorted(str(r.question[0].name) for r in replies) == [
            "consul.", "consul.", "consul.", "web.service.consul.",
        ]  # fmt: skip
        assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in replies)

    _run(test)


def test_the_checked_batched_reader_applies_the_rate_limit_and_drops_count() -> None:
    """Loopback clients limited too: every answer passes the limiter; none is lost track of."""
    helper = compiled_helper()
    soa = dns.message.make_query("consul.", "SOA").to_wire()
    count = UDP_BATCH  # one batch

    async def test(server: socket.socket, client: socket.socket) -> None:
        resolver, _, _ = make()
        policy = AccessPolicy([], [], limits=True, limit_loopback=True)
        limiter = ResponseRateLimiter(RRL_RATE, 15.0, RRL_SLIP, lambda: 0.0)
        counts = resolver.metrics.counters
        gate = Gate(resolver, policy, UdpLimits(limiter, 0, counts), drop_denied=False)
        listener = UdpListener(resolver, server, gate, helper)
        try:
            for _ in range(count):
                client.sendto(soa, server.getsockname())
            await _until(lambda: counts["udp_queries"] == count)
            replies: list[dns.message.Message] = []
            expected = count - counts["rrl_dropped"]
            await _until(lambda: len(replies.__iadd__(_drain(client))) >= expected)
        finally:
            listener.close()
        slipped = [r for r in replies if r.flags & dns.flags.TC]
        assert counts["rrl_slipped"] == len(slipped) > 0
        assert counts["rrl_dropped"] > 0
        assert len(replies) + counts["rrl_dropped"] == count
        assert len(gate.raw_peers) == 1  # one client host, whatever its port

    _run(test)


def test_the_python_loop_still_runs_without_the_helper() -> None:
    """The fallback: no batch helper given, the same answers through recvfrom/sendto."""
    soa = dns.message.make_query("consul.", "SOA").to_wire()

    async def test(server: socket.socket, client: socket.socket) -> None:
        resolver, _, _ = make()
        listener = UdpListener(resolver, server)
        counts = resolver.metrics.counters
        try:
            for _ in range(5):
                client.sendto(soa, server.getsockname())
            await _until(lambda: counts["udp_queries"] == 5)
            replies: list[dns.message.Message] = []
            await _until(lambda: len(replies.__iadd__(_drain(client))) >= 5)
        finally:
            listener.close()
        assert counts["udp_batches"] == 0 and len(replies) == 5

    _run(test)


class _RefusingSends:
    """The compiled helper for reads; its sends report the kernel errors given, in turn."""

    def __init__(self, helper: batchio.BatchIO, errors: list[int]) -> None:
        self.MAX_BATCH = helper.MAX_BATCH
        self.recv = helper.recv
        self._errors = errors

    def send(
        self, fd: int, replies: list[bytes | None], addresses: list[bytes], /
    ) -> tuple[int, list[tuple[int, int]] | None]:
        sent = [i for i, r in enumerate(replies) if r is not None]
        failures = [(i, self._errors[n % len(self._errors)]) for n, i in enumerate(sent)]
        return len(replies) - len(sent), failures or None


def test_refused_batch_sends_are_counted_by_kind_and_logged_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full socket buffer drops (udp_send_dropped); any other refusal is an error."""
    helper = _RefusingSends(compiled_helper(), [errno.EAGAIN, errno.EMSGSIZE, errno.ECONNREFUSED])
    soa = dns.message.make_query("consul.", "SOA").to_wire()
    count = 6

    async def test(server: socket.socket, client: socket.socket) -> None:
        resolver, _, _ = make()
        resolver.answer_slow(soa, False, lambda _: None)  # the SOA is a template now
        listener = UdpListener(resolver, server, batch=helper)
        counts = resolver.metrics.counters
        try:
            for _ in range(count):
                client.sendto(soa, server.getsockname())
            await _until(lambda: counts["udp_queries"] == count)
        finally:
            listener.close()
        assert counts["udp_send_dropped"] == 2
        assert counts["udp_send_errors"] == 4
        assert counts["internal_errors"] == 0

    with caplog.at_level(logging.WARNING, logger="gateway"):
        _run(test)
    assert caplog.records and not any(r.exc_info for r in caplog.records)
    assert str(LOOPBACK) in caplog.records[0].getMessage()
