"""The forwarder against scripted upstreams on loopback sockets.

The upstreams (``tests/support/scripted.py``) answer as each test needs
(spoofed replies, truncation, silence); the real Knot upstream is exercised in
the other integration tests.
"""

from __future__ import annotations

import asyncio
import socket

import dns.flags
import dns.message
import pytest

from gateway.forward.forwarder import Forwarder
from gateway.options import Endpoint
from tests.support.scripted import ScriptedUpstream, answer_for

QUESTION = b"\x03www\x07example\x00\x00\x01\x00\x01"


async def resolve(forwarder: Forwarder, question: bytes = QUESTION) -> bytes | None:
    future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    forwarder.resolve(question, False, future.set_result)
    return await asyncio.wait_for(future, 5)


def make(*ports: int, timeout: float = 0.2, deadline: float = 1.0) -> Forwarder:
    return Forwarder(
        asyncio.get_running_loop(),
        tuple(Endpoint("127.0.0.1", p) for p in ports),
        timeout=timeout,
        deadline=deadline,
        max_inflight=100,
    )


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_answer_and_query_shape() -> None:
    async def main() -> None:
        up = ScriptedUpstream(lambda q, a, s: s.sendto(answer_for(q), a))
        await up.start()
        fwd = make(up.port)
        reply = await resolve(fwd)
        assert reply is not None and dns.message.from_wire(reply).answer
        sent = dns.message.from_wire(up.queries[0])
        assert sent.edns == 0 and sent.payload == 1232 and sent.flags & dns.flags.RD
        fwd.close()
        up.close()

    run(main())


def test_spoofed_replies_are_ignored() -> None:
    def script(query: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        good = answer_for(query)
        wrong_id = bytes([good[0] ^ 0xFF, good[1]]) + good[2:]
        other_question = answer_for(query.replace(b"\x03www", b"\x03xyz"))
        sock.sendto(wrong_id, addr)
        sock.sendto(other_question, addr)
        # From another port of the same host: not the upstream's address.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(good, addr)
        sock.sendto(answer_for(query, "192.0.2.99"), addr)

    async def main() -> None:
        up = ScriptedUpstream(script)
        await up.start()
        fwd = make(up.port)
        reply = await resolve(fwd)
        assert reply is not None
        assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.99"
        assert fwd.stats["spoofed"] == 3
        fwd.close()
        up.close()

    run(main())


def test_truncated_reply_is_retried_over_tcp() -> None:
    async def main() -> None:
        up = ScriptedUpstream(lambda q, a, s: s.sendto(answer_for(q, tc=True), a), "192.0.2.55")
        await up.start()
        fwd = make(up.port)
        reply = await resolve(fwd)
        assert reply is not None
        assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.55"
        assert fwd.stats["tcp"] == 1
        fwd.close()
        up.close()

    run(main())


def test_failover_after_timeout_and_servfail() -> None:
    async def main() -> None:
        silent = ScriptedUpstream(lambda q, a, s: None)
        failing = ScriptedUpstream(lambda q, a, s: s.sendto(q[:2] + b"\x81\x82" + q[4:], a))
        good = ScriptedUpstream(lambda q, a, s: s.sendto(answer_for(q), a))
        for up in (silent, failing, good):
            await up.start()
        fwd = make(silent.port, failing.port, good.port)
        reply = await resolve(fwd)
        assert reply is not None and dns.message.from_wire(reply).answer
        assert len(silent.queries) == 1 and len(failing.queries) == 1
        # The failing ones moved back: the next query goes to the good one first.
        await resolve(fwd, QUESTION.replace(b"www", b"ftp"))
        assert len(good.queries) == 2 and len(silent.queries) == 1
        fwd.close()
        for up in (silent, failing, good):
            up.close()

    run(main())


def test_deadline_gives_none_in_bounded_time() -> None:
    async def main() -> None:
        silent = ScriptedUpstream(lambda q, a, s: None)
        await silent.start()
        fwd = make(silent.port, timeout=0.1, deadline=0.35)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await resolve(fwd) is None
        assert loop.time() - started < 1.0
        assert len(silent.queries) >= 3  # retried within the deadline
        fwd.close()
        silent.close()

    run(main())


def test_identical_questions_share_one_upstream_query() -> None:
    async def main() -> None:
        pending: list[tuple[bytes, tuple[str, int], socket.socket]] = []
        up = ScriptedUpstream(lambda q, a, s: pending.append((q, a, s)))
        await up.start()
        fwd = make(up.port)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]
        for f in futures:
            fwd.resolve(QUESTION, False, f.set_result)
        await asyncio.sleep(0.05)
        assert len(pending) == 1
        q, a, s = pending[0]
        s.sendto(answer_for(q), a)
        results = await asyncio.gather(*futures)
        assert all(r is not None for r in results)
        fwd.close()
        up.close()

    run(main())


@pytest.mark.parametrize("limit", [1])
def test_inflight_limit(limit: int) -> None:
    async def main() -> None:
        up = ScriptedUpstream(lambda q, a, s: None)
        await up.start()
        fwd = Forwarder(asyncio.get_running_loop(), (Endpoint("127.0.0.1", up.port),),
                        timeout=0.5, deadline=0.5, max_inflight=limit)  # fmt: skip
        first: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        fwd.resolve(QUESTION, False, first.set_result)
        assert await resolve(fwd, QUESTION.replace(b"www", b"ftp")) is None
        assert fwd.stats["overload"] == 1
        fwd.close()
        up.close()

    run(main())


def test_all_upstreams_refusing_ends_the_query_without_a_retry_storm() -> None:
    def refuse(query: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        sock.sendto(query[:2] + b"\x81\x85" + query[4:], addr)

    async def main() -> None:
        ups = [ScriptedUpstream(refuse), ScriptedUpstream(refuse)]
        for up in ups:
            await up.start()
        fwd = make(*(up.port for up in ups), timeout=0.5, deadline=2.0)
        reply = await resolve(fwd)
        assert reply is not None and reply[3] & 0x0F == 5  # REFUSED relayed
        assert [len(up.queries) for up in ups] == [1, 1]
        fwd.close()
        for up in ups:
            up.close()

    run(main())


# -- issue 9: hostile and slow upstreams ---------------------------------------------


def test_malformed_reply_fails_over_and_is_not_handed_on() -> None:
    def trailing(query: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        sock.sendto(answer_for(query) + b"\x00", addr)

    async def main() -> None:
        bad = ScriptedUpstream(trailing)
        good = ScriptedUpstream(lambda q, a, s: s.sendto(answer_for(q, "192.0.2.61"), a))
        for up in (bad, good):
            await up.start()
        fwd = make(bad.port, good.port, timeout=0.5, deadline=2.0)
        reply = await resolve(fwd)
        assert reply is not None
        assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.61"
        assert fwd.stats["malformed"] == 1 and len(bad.queries) == 1
        only_bad = make(bad.port, timeout=0.5, deadline=2.0)
        assert await resolve(only_bad) is None
        assert len(bad.queries) == 2  # answered unusably: not asked again
        for f in (fwd, only_bad):
            f.close()
        for up in (bad, good):
            up.close()

    run(main())


def test_late_reply_to_an_earlier_attempt_is_the_answer() -> None:
    def late(query: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        reply = answer_for(query, "192.0.2.62")
        asyncio.get_running_loop().call_later(0.3, sock.sendto, reply, addr)

    async def main() -> None:
        up = ScriptedUpstream(late)
        await up.start()
        fwd = make(up.port, timeout=0.2, deadline=1.0)
        reply = await resolve(fwd)
        assert reply is not None
        assert dns.message.from_wire(reply).answer[0][0].address == "192.0.2.62"
        assert fwd.stats["late_answers"] == 1 and fwd.stats["timeouts"] >= 1
        fwd.close()
        up.close()

    run(main())


def test_always_truncating_upstreams_get_udp_and_tcp_once_each() -> None:
    def tc(query: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        sock.sendto(answer_for(query, tc=True), addr)

    async def main() -> None:
        # One refuses TCP (nothing listens), one truncates over TCP too.
        ups = [
            ScriptedUpstream(tc),
            ScriptedUpstream(tc, tcp_script=lambda q: answer_for(q, tc=True)),
        ]
        for up in ups:
            await up.start()
        fwd = make(*(up.port for up in ups), timeout=0.5, deadline=2.0)
        for i in range(5):
            assert await resolve(fwd, QUESTION.replace(b"www", f"ww{i}".encode())) is None
        assert [len(up.queries) for up in ups] == [5, 5]
        assert [up.tcp_connections for up in ups] == [0, 5]
        assert fwd.stats["tcp"] == 10 and fwd.stats["timeouts"] == 0
        fwd.close()
        for up in ups:
            up.close()

    run(main())
