"""Raw socket addresses and the choice of UDP path (no sockets)."""

from __future__ import annotations

import socket
import sys

from gateway.server import batchio


def sockaddr_in(host: str, port: int) -> bytes:
    return (socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            + socket.inet_pton(socket.AF_INET, host) + bytes(8))  # fmt: skip


def sockaddr_in6(host: str, port: int, flow: int = 0, scope: int = 0) -> bytes:
    return (socket.AF_INET6.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            + flow.to_bytes(4, "big") + socket.inet_pton(socket.AF_INET6, host)
            + scope.to_bytes(4, sys.byteorder))  # fmt: skip


def test_addresses_decode_as_the_socket_module_gives_them() -> None:
    assert batchio.decode(sockaddr_in("192.0.2.7", 53000)) == ("192.0.2.7", 53000)
    assert batchio.decode(sockaddr_in6("2001:db8::1", 5353, flow=7)) == (
        "2001:db8::1", 5353, 7, 0,
    )  # fmt: skip
    # A link-local sender names its interface, as getnameinfo writes it.
    lo = socket.if_nametoindex("lo")
    assert batchio.decode(sockaddr_in6("fe80::1", 1, scope=lo)) == ("fe80::1%lo", 1, 0, lo)
    assert batchio.decode(sockaddr_in6("fe80::1", 1, scope=999_999))[0] == "fe80::1%999999"


def test_port_zero_and_host_keys_ignore_the_port() -> None:
    assert batchio.port_is_zero(sockaddr_in("192.0.2.7", 0))
    assert not batchio.port_is_zero(sockaddr_in("192.0.2.7", 256))
    for family, make in ((socket.AF_INET, sockaddr_in), (socket.AF_INET6, sockaddr_in6)):
        host = "192.0.2.7" if family == socket.AF_INET else "2001:db8::7"
        key = batchio.HOST_KEY[family]
        assert make(host, 1)[key] == make(host, 2)[key] != make(host.replace("7", "8"), 1)[key]


def test_off_chooses_the_python_loop_and_auto_the_helper_where_it_loads() -> None:
    helper, why = batchio.choose("off")
    assert helper is None and "--udp-batch off" in why
    helper, why = batchio.choose("auto")
    assert helper is batchio.load()
    assert ("recvmmsg" in why) == (helper is not None)
