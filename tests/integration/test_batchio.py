"""The compiled recvmmsg/sendmmsg helper on real loopback sockets (issue 11).

Its contract (``gateway/server/_batchio.c``): a bounded batch in, raw
addresses out; a batch of replies out in as few calls as the kernel allows,
every reply the kernel refuses reported with its errno while the others
still go.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from gateway.server import batchio
from harness.ports import LOOPBACK
from harness.process import wait_for
from tests.support.udp_paths import compiled_helper

LOOPBACK6 = "::1"
IP_RECVERR = 11  # linux/in.h; not in the socket module
TIMEOUT_S = 5.0
OVERSIZE = 70_000  # more than any UDP datagram can carry


@pytest.fixture
def helper() -> batchio.BatchIO:
    return compiled_helper()


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server: non-blocking, bound; client: blocking with a timeout, bound)."""
    family = request.param
    host = LOOPBACK if family == socket.AF_INET else LOOPBACK6
    server = socket.socket(family, socket.SOCK_DGRAM)
    client = socket.socket(family, socket.SOCK_DGRAM)
    with server, client:
        server.bind((host, 0))
        server.setblocking(False)
        client.bind((host, 0))
        client.settimeout(TIMEOUT_S)
        yield server, client


def receive(helper: batchio.BatchIO, sock: socket.socket, count: int) -> tuple[list[bytes], ...]:
    """Waits until ``count`` datagrams were read (a loopback send is queued at once)."""
    datagrams: list[bytes] = []
    addresses: list[bytes] = []

    def more() -> bool:
        d, a = helper.recv(sock.fileno(), min(helper.MAX_BATCH, count - len(datagrams)))
        datagrams.extend(d)
        addresses.extend(a)
        return len(datagrams) >= count

    wait_for(more, TIMEOUT_S, message=f"{count} datagrams")
    return datagrams, addresses


def test_recv_reads_at_most_count_datagrams_with_raw_sender_addresses(
    helper: batchio.BatchIO, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    assert helper.recv(server.fileno(), 4) == ([], [])  # nothing waiting: no error
    for i in range(6):
        client.sendto(b"q%d" % i, server.getsockname())
    first, addrs = receive(helper, server, 4)
    assert first == [b"q0", b"q1", b"q2", b"q3"]
    # Decoded as the socket module decodes the same sender.
    assert {batchio.decode(a) for a in addrs} == {client.getsockname()}
    rest, _ = receive(helper, server, 2)
    assert rest == [b"q4", b"q5"]
    assert helper.recv(server.fileno(), helper.MAX_BATCH) == ([], [])


def test_send_skips_none_and_the_kernel_refusing_one_reply_stops_no_other(
    helper: batchio.BatchIO, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    for i in range(3):
        client.sendto(b"q%d" % i, server.getsockname())
    _, addrs = receive(helper, server, 3)
    port_zero = addrs[0][:2] + b"\x00\x00" + addrs[0][4:]
    replies: list[bytes | None] = [b"a0", None, b"x" * OVERSIZE, b"a3", b"a4"]
    skipped, failures = helper.send(server.fileno(), replies, [*addrs[:3], port_zero, addrs[2]])
    assert skipped == 1
    # Too large for a datagram; no reply can reach port 0.
    assert failures == [(2, errno.EMSGSIZE), (3, errno.EINVAL)]
    assert [client.recvfrom(100)[0] for _ in range(2)] == [b"a0", b"a4"]
    assert helper.send(server.fileno(), [None, None], addrs[:2]) == (2, None)


def test_send_of_more_replies_than_one_call_takes(
    helper: batchio.BatchIO, pair: tuple[socket.socket, socket.socket]
) -> None:
    server, client = pair
    client.sendto(b"q", server.getsockname())
    _, (addr,) = receive(helper, server, 1)
    count = helper.MAX_BATCH * 2 + 3
    replies: list[bytes | None] = [b"r%d" % i for i in range(count)]
    assert helper.send(server.fileno(), replies, [addr] * count) == (0, None)
    assert [client.recvfrom(100)[0] for _ in range(count)] == replies


def test_icmp_errors_are_raised_by_recv_and_reported_by_send(helper: batchio.BatchIO) -> None:
    """With IP_RECVERR, a port-unreachable from an earlier reply surfaces on the socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((LOOPBACK, 0))
        server.setblocking(False)
        server.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind((LOOPBACK, 0))
            closed = gone.getsockname()
        raw = (socket.AF_INET.to_bytes(2, "little") + closed[1].to_bytes(2, "big")
               + socket.inet_aton(LOOPBACK) + bytes(8))  # fmt: skip
        assert batchio.decode(raw) == closed
        assert helper.send(server.fileno(), [b"r"], [raw]) == (0, None)

        def refused() -> bool:
            try:
                helper.recv(server.fileno(), 1)
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, TIMEOUT_S, message="the ICMP error")
        assert helper.recv(server.fileno(), 1) == ([], [])  # reported once
        assert helper.send(server.fileno(), [b"r"], [raw]) == (0, None)
        wait_for(lambda: _pending_error(server), TIMEOUT_S, message="the second ICMP error")
        assert helper.send(server.fileno(), [b"r", b"s"], [raw, raw]) == (
            0,
            [(0, errno.ECONNREFUSED)],
        )


def _pending_error(sock: socket.socket) -> bool:
    """Whether an error waits on the socket, without taking it (MSG_ERRQUEUE peek)."""
    try:
        sock.recvmsg(1, 1024, socket.MSG_ERRQUEUE | socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


def test_bad_arguments_raise_and_send_nothing(helper: batchio.BatchIO) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        fd = sock.fileno()
        for count in (0, helper.MAX_BATCH + 1):
            with pytest.raises(ValueError):
                helper.recv(fd, count)
        with pytest.raises(ValueError):
            helper.send(fd, [b"r", b"s"], [bytes(16)])
        with pytest.raises(ValueError):
            helper.send(fd, [b"r"], [bytes(200)])
        with pytest.raises(TypeError):
            helper.send(fd, ["r"], [bytes(16)])  # type: ignore[list-item]
    with pytest.raises(OSError) as raised:
        helper.recv(fd, 1)  # closed
    assert raised.value.errno == errno.EBADF
