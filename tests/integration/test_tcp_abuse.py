"""TCP clients that hold resources cannot starve the others (issue 9).

Each test runs the real gateway as a subprocess and plays the hostile
clients from this process (from several 127.x addresses where a test needs
many clients), then counts the legitimate clients that still get answers.
Nothing is timed: every assertion is a count, a size or a state.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest

from harness.process import wait_for
from tests.support.hostile import (
    TCP_QUERIES,
    MeteredGateway,
    connect_from,
    frame,
    is_closed_by_peer,
)

# A zone whose TXT answer is ~16 KB for a 32-byte query over TCP: a client
# that pipelines queries and never reads makes the gateway queue ~500 times
# what it sends.
BIG_NAME = "big.big.test."
BIG_TXT_RECORDS = 64
# Queries a non-reading client sends per connection (it stops earlier once
# the kernel buffers are full and the gateway no longer reads).
PIPELINE_BYTES = 2_000_000
PIPELINE_CONNECTIONS = 3
# Before the fix the gateway grew ~54 MB per MB of such queries; now its
# queue per connection is 256 KiB.
MAX_RSS_GROWTH = 50_000_000


def big_zone(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = "\n".join(f'big IN TXT "{i:03d}{"x" * 240}"' for i in range(BIG_TXT_RECORDS))
    (folder / "big.test.zone").write_text(
        "$ORIGIN big.test.\n$TTL 300\n"
        "@ IN SOA ns.big.test. hostmaster.big.test. 1 3600 600 86400 60\n"
        "@ IN NS ns.big.test.\nns IN A 192.0.2.53\n" + records + "\n"
    )
    return folder


def pipeline_without_reading(gw: MeteredGateway, name: str = BIG_NAME) -> socket.socket:
    """A connection that sends queries for ``name`` until nobody reads them."""
    query = dns.message.make_query(name, "TXT").to_wire()
    blob = frame(query) * (PIPELINE_BYTES // (len(query) + 2))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer: the replies pile up on the gateway's side.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((gw.host, gw.port))
    sock.settimeout(0.3)
    sent = 0
    try:
        while sent < len(blob):
            sent += sock.send(blob[sent : sent + 65536])
    except TimeoutError:
        pass  # the gateway stopped reading: the point of the test
    return sock


def settled(gw: MeteredGateway, counter: str = TCP_QUERIES) -> float:
    """Waits until ``counter`` stops moving (three equal readings); its value."""
    readings: list[float] = []

    def still() -> float | None:
        readings.append(gw.counter(counter))
        time.sleep(0.2)
        if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
            return readings[-1] or -1.0
        return None

    return max(wait_for(still, 30, interval=0, message=f"{counter} to settle"), 0.0)


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    """Client sockets a test opens; all closed at the end."""
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


def test_one_byte_connections_do_not_starve_tcp_clients(closing: list[socket.socket]) -> None:
    """600 connections that send one byte each, against a limit of 200.

    The deadline and idle timeout are long, so only shedding the oldest idle
    connection at the limit can let the legitimate clients in.
    """
    rounds, per_round, addresses = 30, 20, 50
    with MeteredGateway(
        "--tcp-max-connections", "200",
        "--tcp-message-timeout", "60", "--tcp-idle-timeout", "60",
    ) as gw:  # fmt: skip
        answered = 0
        for _ in range(rounds):
            for _ in range(per_round):
                source = f"127.0.0.{2 + len(closing) % addresses}"
                try:
                    sock = connect_from(source, (gw.host, gw.port))
                    closing.append(sock)
                    sock.send(b"\x00")
                except OSError:
                    pass  # refused: fine for the flood
            answered += gw.tcp_answers()
        assert answered == rounds
        assert all(gw.udp_answers() for _ in range(10))
        assert gw.counter("tcp_shed_idle") >= rounds * per_round - 200
        assert gw.counter("tcp_connections") <= 200


def test_one_address_cannot_hold_more_than_its_share(closing: list[socket.socket]) -> None:
    flood, cap = 30, 8
    with MeteredGateway("--tcp-max-per-client", str(cap)) as gw:
        closing.extend(connect_from("127.0.0.2", (gw.host, gw.port)) for _ in range(flood))
        assert gw.tcp_answers(source="127.0.0.3")
        refused = wait_for(
            lambda: sum(is_closed_by_peer(s) for s in closing) == flood - cap,
            10,
            message="the connections over the cap to be closed",
        )
        assert refused
        assert gw.counter("tcp_refused_per_client") == flood - cap
        assert not any(is_closed_by_peer(s) for s in closing[:cap])


def test_a_trickling_client_is_closed_by_the_message_deadline(
    closing: list[socket.socket],
) -> None:
    """One byte every 0.1 s keeps the idle timer happy, never the deadline."""
    tricklers, steps, deadline = 5, 40, 0.5  # 40 steps of 0.1 s: 8 times the deadline
    with MeteredGateway(
        "--tcp-message-timeout", str(deadline), "--tcp-idle-timeout", "60"
    ) as gw:  # fmt: skip
        closing.extend(connect_from("127.0.0.2", (gw.host, gw.port)) for _ in range(tricklers))
        for sock in closing:
            sock.send(b"\x02")  # a 512-byte message follows, one byte at a time
        still_open = set(closing)
        answered = 0
        rounds = 0
        while still_open and rounds < steps:
            rounds += 1
            time.sleep(0.1)
            for sock in list(still_open):
                try:
                    if is_closed_by_peer(sock):
                        still_open.discard(sock)
                    else:
                        sock.send(b"\x00")
                except OSError:
                    still_open.discard(sock)
            answered += gw.tcp_answers()
        assert not still_open, f"{len(still_open)} trickling clients still connected"
        assert answered == rounds
        assert gw.counter("tcp_message_timeouts") == tricklers


def test_a_client_that_never_reads_does_not_grow_memory(
    tmp_path: Path, closing: list[socket.socket]
) -> None:
    with MeteredGateway("--zones", str(big_zone(tmp_path / "zones"))) as gw:
        before = gw.rss()
        closing.extend(pipeline_without_reading(gw) for _ in range(PIPELINE_CONNECTIONS))
        handled = settled(gw)
        growth = gw.rss() - before
        print(f"RSS {before / 1e6:.1f} MB, +{growth / 1e6:.1f} MB after {handled:g} queries")
        assert growth < MAX_RSS_GROWTH
        # UDP and the other TCP clients do not feel it.
        assert all(gw.udp_answers() for _ in range(20))
        assert all(gw.tcp_answers() for _ in range(5))
        assert gw.counter("tcp_read_pauses") >= PIPELINE_CONNECTIONS


def test_a_pipelining_client_that_reads_gets_every_answer(tmp_path: Path) -> None:
    """The limits pause reading and resume it: no query is lost or answered twice."""
    count = 3000
    names = [(BIG_NAME, "TXT"), ("web.service.consul", "A"), ("nope.service.consul", "A")]
    queries = []
    for i in range(count):
        query = dns.message.make_query(*names[i % len(names)])
        query.id = i
        queries.append(frame(query.to_wire()))
    with MeteredGateway("--zones", str(big_zone(tmp_path / "zones"))) as gw:
        sock = socket.create_connection((gw.host, gw.port), timeout=10)
        with sock:
            sender = threading.Thread(target=sock.sendall, args=(b"".join(queries),))
            sender.start()
            reader = sock.makefile("rb")
            ids = []
            for _ in range(count):
                size = int.from_bytes(reader.read(2), "big")
                ids.append(int.from_bytes(reader.read(size)[:2], "big"))
            sender.join()
        assert sorted(ids) == list(range(count))
        assert gw.counter("tcp_read_pauses") >= 1


def test_queued_replies_across_connections_are_capped(
    tmp_path: Path, closing: list[socket.socket]
) -> None:
    """Six non-reading clients, 1 MiB for all: the worst readers are closed."""
    cap = 1024 * 1024
    with MeteredGateway(
        "--zones", str(big_zone(tmp_path / "zones")), "--tcp-max-queued-bytes", str(cap)
    ) as gw:  # fmt: skip
        closing.extend(pipeline_without_reading(gw) for _ in range(6))
        settled(gw)
        assert gw.counter("tcp_closed_queued") >= 1
        assert gw.counter("tcp_queued_bytes") <= cap
        assert sum(is_closed_by_peer(s) for s in closing) == gw.counter("tcp_closed_queued")
        assert all(gw.tcp_answers() for _ in range(5))


def test_unanswered_pipelined_queries_are_capped(closing: list[socket.socket]) -> None:
    """Forwarded queries to an upstream that never answers: 16 in flight, then no reading."""
    cap, sent = 16, 500
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.setblocking(False)
        port = upstream.getsockname()[1]
        with MeteredGateway(
            "--tcp-max-pipelined", str(cap),
            "--forward-timeout", "20", "--forward-deadline", "30",
            upstream=f"127.0.0.1:{port}",
        ) as gw:  # fmt: skip
            sock = connect_from("127.0.0.1", (gw.host, gw.port))
            closing.append(sock)
            sock.sendall(
                b"".join(
                    frame(dns.message.make_query(f"q{i}.example.test", "A").to_wire())
                    for i in range(sent)
                )
            )
            assert settled(gw) == cap
            forwarded = 0
            while True:
                try:
                    upstream.recv(4096)
                except BlockingIOError:
                    break
                forwarded += 1
            assert forwarded == cap
            assert gw.udp_answers()


def test_out_of_file_descriptors_idle_connections_make_room(
    closing: list[socket.socket],
) -> None:
    """The gateway under ``prlimit --nofile=64``, 150 idle connections opened."""
    flood = 150
    launcher = ["prlimit", "--nofile=64:64", sys.executable, "-m", "gateway"]
    with MeteredGateway(launcher=launcher) as gw:
        for i in range(flood):
            with contextlib.suppress(OSError):
                closing.append(connect_from(f"127.0.0.{2 + i % 10}", (gw.host, gw.port)))
        # While the flood still holds its connections: new clients get in.
        during = sum(gw.tcp_answers() for _ in range(10))
        for sock in closing:
            sock.close()
        closing.clear()
        after = wait_for(
            lambda: sum(gw.tcp_answers() for _ in range(10)) == 10 or None,
            10,
            message="TCP answers after the flood",
        )
        assert (during, after) == (10, True)
        assert gw.running
        assert gw.counter("tcp_accept_errors") >= 1
        assert gw.counter("tcp_shed_idle") >= 1
        assert "Traceback" not in gw.log_text()
