"""Hostile and slow upstreams, against the real gateway subprocess (issue 9).

Every upstream here is scripted (``tests/support/scripted.py``) on loopback UDP/TCP
sockets, served from a thread of its own while the test queries the gateway with
blocking clients. Each test is one finding of issue 9: replies that do not parse are
neither cached nor relayed (and never make the gateway raise), what a client gets fits
its size, truncation cannot cause a packet storm, a late reply to an earlier attempt
still answers, and a stale answer goes out on the client-response timer.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.rcode
import pytest

from harness.gateway import GatewayProcess, scrape_metrics
from harness.ports import LOOPBACK, free_port
from harness.process import wait_for
from tests.support.dnsclient import query
from tests.support.scripted import Script, ScriptedUpstream, TcpScript, UpstreamThread, reply_to

# Enough A records for a reply of ~29,856 bytes (16 bytes each, the name compressed).
HUGE_RECORDS = 1864
# More than fits in 512 bytes: the answer must be cut for classic clients.
LARGE_RECORDS = 40
CLIENT_QUERIES = 7
CLIENT_TIMEOUT_S = 5.0


def addresses(count: int, prefix: str = "10.9") -> list[str]:
    return [f"{prefix}.{i // 256}.{i % 256}" for i in range(count)]


def qname(query_bytes: bytes) -> str:
    return str(dns.message.from_wire(query_bytes).question[0].name).lower()


def udp_exchange(port: int, name: str, *, edns: bool, payload: int = 1232) -> bytes:
    """One raw UDP query to the gateway: the reply's bytes, whatever their size."""
    msg = dns.message.make_query(name, "A", use_edns=0 if edns else False, payload=payload)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT_S)
        sock.sendto(msg.to_wire(), (LOOPBACK, port))
        data, _ = sock.recvfrom(65535)
    return data


def no_traceback(gw: GatewayProcess) -> None:
    assert "Traceback" not in gw.log_text(), gw.log_tail()


@pytest.fixture
def metrics_port() -> int:
    return free_port()


def gateway(*upstreams: ScriptedUpstream, args: tuple[str, ...] = ()) -> GatewayProcess:
    """The gateway forwarding to ``upstreams`` in order; it answers its probe itself."""
    ups = [arg for up in upstreams for arg in ("--upstream", up.address)]
    return GatewayProcess(*ups, *args, probe_name="consul.")


def send(reply: Callable[[bytes], bytes]) -> Script:
    """A UDP script that answers every query with ``reply(query)``."""

    def script(q: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        sock.sendto(reply(q), addr)

    return script


# -- replies that do not parse are neither cached nor relayed -----------------------


def trailing_bytes(q: bytes) -> bytes:
    """A whole, valid reply above 512 bytes, without OPT, then bytes after the last record."""
    return reply_to(q, *addresses(LARGE_RECORDS, "10.66"), edns=False) + b"\x00\x01junk"


def test_reply_with_trailing_bytes_fails_over_and_never_enters_the_cache() -> None:
    hostile = ScriptedUpstream(send(trailing_bytes))
    good = ScriptedUpstream(send(lambda q: reply_to(q, *addresses(LARGE_RECORDS))))
    with UpstreamThread(hostile, good), gateway(hostile, good) as gw:
        for _ in range(2):  # from the upstreams, then from the cache
            big = query(gw.host, gw.port, "t1.example.", "A", payload=1232)
            assert big.rcode() == dns.rcode.NOERROR
            assert {rr.address for rr in big.answer[0]} == set(addresses(LARGE_RECORDS))
            for edns, payload in ((True, 512), (False, 512)):
                data = udp_exchange(gw.port, "t1.example.", edns=edns, payload=payload)
                msg = dns.message.from_wire(data)  # parses: no trailing bytes kept
                assert len(data) <= 512 and msg.flags & dns.flags.TC
                assert msg.rcode() == dns.rcode.NOERROR
        # One upstream query per EDNS state (part of the cache key); the hostile
        # upstream went to the back after its reply.
        assert len(hostile.queries) == 1 and len(good.queries) == 2
        no_traceback(gw)


def test_only_unparseable_replies_give_servfail_and_an_empty_cache(metrics_port: int) -> None:
    hostile = ScriptedUpstream(send(trailing_bytes))
    metrics = ("--metrics-listen", f"{LOOPBACK}:{metrics_port}")
    with UpstreamThread(hostile), gateway(hostile, args=metrics) as gw:
        for payload in (1232, 512):
            data = udp_exchange(gw.port, "t2.example.", edns=True, payload=payload)
            assert dns.message.from_wire(data).rcode() == dns.rcode.SERVFAIL
        values = scrape_metrics(f"{LOOPBACK}:{metrics_port}")
        assert values["dns_gateway_cache_entries"] == 0
        assert values["dns_gateway_forward_malformed_total"] == 2
        no_traceback(gw)


def test_what_a_client_gets_fits_its_size() -> None:
    def script(q: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        whole = reply_to(q, *addresses(HUGE_RECORDS))
        if qname(q).startswith("odd."):
            whole = whole[:-3]  # ~29,856 bytes whose last record runs past the end
        assert len(whole) > 29_000
        sock.sendto(whole, addr)

    up = ScriptedUpstream(script)
    with UpstreamThread(up), gateway(up) as gw:
        odd = udp_exchange(gw.port, "odd.example.", edns=False)
        assert len(odd) <= 512
        assert dns.message.from_wire(odd).rcode() == dns.rcode.SERVFAIL
        for edns, limit in ((True, 1232), (False, 512)):
            data = udp_exchange(gw.port, "big.example.", edns=edns)
            msg = dns.message.from_wire(data)
            assert len(data) <= limit and msg.flags & dns.flags.TC and msg.answer
        whole = query(gw.host, gw.port, "big.example.", "A", tcp=True)
        assert len(whole.answer[0]) == HUGE_RECORDS and not whole.flags & dns.flags.TC
        no_traceback(gw)


def test_tcp_reply_is_checked_like_udp() -> None:
    """TC over UDP, then over TCP the query echoed back (QR=0) or SERVFAIL: not answers."""
    echo = ScriptedUpstream(send(lambda q: reply_to(q, tc=True)), tcp_script=lambda q: q)
    failing = ScriptedUpstream(
        send(lambda q: reply_to(q, tc=True)),
        tcp_script=lambda q: reply_to(q, rcode=dns.rcode.SERVFAIL),
    )
    good = ScriptedUpstream(send(lambda q: reply_to(q, "192.0.2.33")))
    with UpstreamThread(echo, failing, good):
        with gateway(echo) as gw:
            for _ in range(2):  # nothing was cached
                reply = query(gw.host, gw.port, "echo.example.", "A")
                assert reply.rcode() == dns.rcode.SERVFAIL
        with gateway(failing, good) as gw:
            reply = query(gw.host, gw.port, "fail.example.", "A")
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer[0][0].address == "192.0.2.33"
            assert len(failing.tcp_queries) == 1


# -- truncation cannot cause a packet storm ------------------------------------------

# What the upstream does over TCP after its truncated UDP reply (None: nothing listens).
TCP_BEHAVIOURS: dict[str, TcpScript | None] = {
    "refused": None,
    "truncated": lambda q: reply_to(q, tc=True),
    "hangs up": lambda q: None,
}


@pytest.mark.parametrize("tcp", list(TCP_BEHAVIOURS))
def test_upstream_that_always_truncates_gets_a_bounded_number_of_queries(tcp: str) -> None:
    up = ScriptedUpstream(send(lambda q: reply_to(q, tc=True)), tcp_script=TCP_BEHAVIOURS[tcp])
    args = ("--forward-timeout", "0.5", "--forward-deadline", "1")
    with UpstreamThread(up), gateway(up, args=args) as gw:
        for i in range(CLIENT_QUERIES):
            reply = query(gw.host, gw.port, f"tc{i}.example.", "A", timeout=CLIENT_TIMEOUT_S)
            assert reply.rcode() == dns.rcode.SERVFAIL
        # UDP, then TCP once, then no upstream is left: one of each per client query.
        assert len(up.queries) <= CLIENT_QUERIES
        assert up.tcp_connections <= CLIENT_QUERIES
        no_traceback(gw)


# -- slow upstreams ------------------------------------------------------------------


def late(delay_s: float, reply: Callable[[bytes], bytes]) -> Script:
    """A UDP script that answers every query ``delay_s`` seconds after it arrived."""

    def script(q: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        asyncio.get_running_loop().call_later(delay_s, sock.sendto, reply(q), addr)

    return script


def test_late_reply_to_an_earlier_attempt_answers() -> None:
    """Always 2 s late with a 1 s forward timeout: the first attempt's reply is the answer."""
    up = ScriptedUpstream(late(2.0, lambda q: reply_to(q, "192.0.2.44")))
    args = ("--forward-timeout", "1", "--forward-deadline", "3")
    with UpstreamThread(up), gateway(up, args=args) as gw:
        reply = query(gw.host, gw.port, "slow.example.", "A", timeout=CLIENT_TIMEOUT_S)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0][0].address == "192.0.2.44"
        assert 1 <= len(up.queries) <= 3


class Switchable:
    """A UDP script in phases: answers at once, then frozen (silent) or late."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.sent = 0

    def __call__(self, q: bytes, addr: tuple[str, int], sock: socket.socket) -> None:
        if self.mode == "answer":
            sock.sendto(reply_to(q, "192.0.2.1", ttl=1), addr)
            self.sent += 1
        elif self.mode == "late":

            def later() -> None:
                sock.sendto(reply_to(q, "192.0.2.2", ttl=60), addr)
                self.sent += 1

            asyncio.get_running_loop().call_later(1.0, later)


STALE_ARGS = (
    "--stale-answer-client-timeout", "0.3", "--forward-timeout", "2",
    "--forward-deadline", "5", "--serve-stale", "60", "--stale-answer-ttl", "30",
)  # fmt: skip


@pytest.fixture
def expired() -> Iterator[tuple[GatewayProcess, ScriptedUpstream, Switchable]]:
    """A gateway whose cached answer (TTL 1) for stale.example. has just expired."""
    script = Switchable()
    up = ScriptedUpstream(script)
    with UpstreamThread(up), gateway(up, args=STALE_ARGS) as gw:
        first = query(gw.host, gw.port, "stale.example.", "A")
        assert first.answer[0].ttl == 1
        time.sleep(1.5)  # past the TTL (the cache counts whole seconds)
        yield gw, up, script


def test_stale_answer_on_client_timer_while_upstream_is_frozen(
    expired: tuple[GatewayProcess, ScriptedUpstream, Switchable],
) -> None:
    gw, up, script = expired
    script.mode = "frozen"
    # The forward deadline (5 s) would end in SERVFAIL; the client gives up at 3 s,
    # so only an answer on the client-response timer (0.3 s) reaches it.
    reply = query(gw.host, gw.port, "stale.example.", "A", timeout=3.0)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0].ttl == 30 and reply.answer[0][0].address == "192.0.2.1"
    assert len(up.queries) == 2


def test_stale_answer_then_the_refresh_fills_the_cache(
    expired: tuple[GatewayProcess, ScriptedUpstream, Switchable],
) -> None:
    gw, up, script = expired
    script.mode = "late"
    reply = query(gw.host, gw.port, "stale.example.", "A", timeout=CLIENT_TIMEOUT_S)
    assert reply.answer[0].ttl == 30 and reply.answer[0][0].address == "192.0.2.1"
    wait_for(lambda: script.sent == 2, timeout=CLIENT_TIMEOUT_S, message="the late reply")
    fresh = query(gw.host, gw.port, "stale.example.", "A")
    assert fresh.answer[0][0].address == "192.0.2.2" and fresh.answer[0].ttl > 30
    assert len(up.queries) == 2  # the refresh was stored: no new upstream query
