"""The edge that reads this machine's interface addresses (for ``--allow local``).

Read over rtnetlink (an ``RTM_GETADDR`` dump), the interface ``ip addr``
itself uses, with the standard library's ``AF_NETLINK`` socket. Chosen over
the alternatives because it is the only one that gives every address of both
families with its prefix length and interface in one place, without a new
dependency: parsing ``ip -j addr`` needs iproute2, which slim container
images lack; ``/proc/net/fib_trie`` has IPv4 only and does not say which
interface holds an address; the ``SIOCGIFADDR``/``SIOCGIFNETMASK`` ioctls
see one IPv4 address per interface and no IPv6. Linux only, like the rest
of the gateway (``SO_REUSEPORT``, uvloop).

:func:`parse_dump` is pure (bytes in, addresses out) and unit-tested with
built messages; :func:`read_addresses` is the only function doing I/O.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

# linux/netlink.h and linux/rtnetlink.h / if_addr.h
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type
_ALIGN = 4
# One dump reply datagram; the kernel sends at most a page-sized chunk per read.
_RECV_SIZE = 65536
_ADDRESS_SIZE = {socket.AF_INET: 4, socket.AF_INET6: 16}


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """One address on one interface, with its prefix (``10.99.0.1/24`` on index 3)."""

    index: int
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def dump_request(sequence: int = 1) -> bytes:
    """The ``RTM_GETADDR`` dump request for every address of every family."""
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR, flags, sequence, 0) + body


def parse_dump(data: bytes) -> tuple[list[InterfaceAddress], bool]:
    """The addresses in one datagram of the dump, and whether the dump is done.

    Raises OSError when the kernel answered with an error message.
    """
    found: list[InterfaceAddress] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break  # malformed: stop rather than loop
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
            raise OSError(-error, "netlink RTM_GETADDR failed")
        if kind == RTM_NEWADDR:
            address = _parse_address(data[offset + _NLMSGHDR.size : offset + length])
            if address is not None:
                found.append(address)
        offset += _align(length)
    return found, False


def _parse_address(body: bytes) -> InterfaceAddress | None:
    if len(body) < _IFADDRMSG.size:
        return None
    family, prefix, _, _, index = _IFADDRMSG.unpack_from(body)
    size = _ADDRESS_SIZE.get(family)
    if size is None:
        return None
    attrs: dict[int, bytes] = {}
    offset = _IFADDRMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        attrs[kind] = body[offset + _RTATTR.size : offset + length]
        offset += _align(length)
    # IFA_LOCAL is our own address; on point-to-point links IFA_ADDRESS is the peer's.
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or len(raw) != size:
        return None
    host = ipaddress.ip_address(raw)
    return InterfaceAddress(index, ipaddress.ip_interface(f"{host}/{prefix}"))


def read_addresses() -> list[InterfaceAddress]:
    """Every address of every interface of this network namespace; OSError if unreadable."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(dump_request())
        found: list[InterfaceAddress] = []
        while True:
            addresses, done = parse_dump(sock.recv(_RECV_SIZE))
            found.extend(addresses)
            if done:
                return found


def addresses_of(name: str, known: list[InterfaceAddress]) -> list[str]:
    """The addresses of interface ``name`` among ``known``, to listen on.

    IPv6 link-local addresses are left out: a socket bound to one needs the
    interface's scope id, and clients reach the interface on its other
    addresses. ValueError when the interface does not exist or has no
    address left (a listener on nothing would be a silent mistake).
    """
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise ValueError(f"no interface named {name!r}") from None
    found = [
        str(a.interface.ip)
        for a in known
        if a.index == index and not (a.interface.version == 6 and a.interface.ip.is_link_local)
    ]
    if not found:
        raise ValueError(f"interface {name!r} has no address to listen on")
    return found
