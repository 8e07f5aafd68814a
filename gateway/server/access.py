"""Who may ask what: ``--allow``, ``--allow-recursion`` and who is rate limited.

Pure values: the listen addresses and this machine's interface addresses
come in (``gateway.server.interfaces`` reads them at start), a decision per
client address goes out. The transport caches the decision per address, so
this runs once per client, not per packet.

The default for both lists is ``local`` (dnsmasq's ``local-service``):
loopback plus, for each listen address, the subnets of the interface that
holds it; a wildcard listen address (``0.0.0.0``, ``::``) takes the subnets of
every interface. Loopback clients are always allowed everything: only this
host can send from 127.0.0.0/8 or ::1, and it is the one client a gateway on
127.0.0.1 exists for.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gateway.options import LOCAL_NETWORKS, ClientNetwork, Config
from gateway.server.interfaces import InterfaceAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK_NETWORKS: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
# Response-rate limiting accounts per client block, as BIND's RRL does by
# default (ipv4-prefix-length 24, ipv6-prefix-length 56): forged sources
# spread over a block still share one account.
IPV4_BLOCK_BITS = 24
IPV6_BLOCK_BITS = 56
_IPV4_SIZE = 4
_IPV4_MAPPED = b"\x00" * 10 + b"\xff\xff"  # ::ffff:0:0/96
_LOOPBACK_V4 = 127  # 127.0.0.0/8: the first octet
_LOOPBACK_V4_SHIFT = 24


class Access(enum.IntEnum):
    """What a client may be answered."""

    NONE = 0  # outside --allow: nothing (REFUSED or dropped)
    LOCAL = 1  # catalog and zone answers; forwarded names REFUSED or dropped
    FULL = 2  # everything, forwarded answers included


class Client(NamedTuple):
    """The decision for one client address (a tuple: made per new address, read per packet)."""

    access: Access
    limited: bool  # its UDP answers pass the rate limit and the amplification bound
    block: bytes  # its /24 or /56 (packed): the rate limit's account


class NetworkSet:
    """CIDR membership by integer shifts, one set per prefix length.

    A lookup costs one set probe per distinct prefix length in the list,
    not one comparison per network.
    """

    __slots__ = ("_tables",)

    def __init__(self, networks: Iterable[Network]) -> None:
        # version -> {bits to shift away: network numbers shifted}
        self._tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for net in networks:
            shift = net.max_prefixlen - net.prefixlen
            self._tables[net.version].setdefault(shift, set()).add(
                int(net.network_address) >> shift
            )

    def __contains__(self, address: Address) -> bool:
        return self.holds(int(address), address.version)

    def holds(self, value: int, version: int) -> bool:
        """Membership of the address ``value`` (an integer) of IP ``version``."""
        # A loop, not any(): a generator costs twice as much per lookup.
        for shift, nets in self._tables[version].items():  # noqa: SIM110
            if value >> shift in nets:
                return True
        return False


def packed_address(host: str) -> bytes:
    """A socket's peer host packed (4 or 16 bytes): scope id dropped, IPv4-mapped unwrapped.

    ``inet_pton`` rather than ``ipaddress``: several times faster, and this
    runs for every new client address (a flood of forged sources included).
    """
    if ":" not in host:
        return socket.inet_pton(socket.AF_INET, host)
    packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    return packed[12:] if packed[:12] == _IPV4_MAPPED else packed


def parse_address(host: str) -> Address:
    """:func:`packed_address` as an ``ipaddress`` address."""
    return ipaddress.ip_address(packed_address(host))


def local_networks(
    listen_hosts: Iterable[str], addresses: Sequence[InterfaceAddress]
) -> tuple[Network, ...]:
    """Loopback and the subnets of the interfaces holding the listen addresses.

    A wildcard listen address means every interface. An address held by no
    interface adds nothing (the bind would have failed anyway).
    """
    indexes: set[int] = set()
    for host in listen_hosts:
        listen = ipaddress.ip_address(host)
        if listen.is_unspecified:
            indexes.update(a.index for a in addresses)
        else:
            indexes.update(a.index for a in addresses if a.interface.ip == listen)
    found = [a.interface.network for a in addresses if a.index in indexes]
    return _unique([*LOOPBACK_NETWORKS, *found])


def expand(configured: Iterable[ClientNetwork], local: Sequence[Network]) -> tuple[Network, ...]:
    """An ``--allow``-style list with the keyword ``local`` replaced by ``local``."""
    networks: list[Network] = []
    for item in configured:
        if item == LOCAL_NETWORKS:
            networks.extend(local)
        else:
            assert not isinstance(item, str)
            networks.append(item)
    return _unique(networks)


def _unique(networks: Iterable[Network]) -> tuple[Network, ...]:
    return tuple(dict.fromkeys(networks))


def block_of(packed: bytes) -> bytes:
    """The client's rate-limit block: the first 24 (IPv4) or 56 (IPv6) bits, packed."""
    if len(packed) == _IPV4_SIZE:
        return packed[: IPV4_BLOCK_BITS // 8]
    return packed[: IPV6_BLOCK_BITS // 8]


class AccessPolicy:
    """Decides per client address; see the module docstring for the rules."""

    def __init__(
        self,
        allow: Sequence[Network],
        allow_recursion: Sequence[Network],
        *,
        limits: bool,
        limit_loopback: bool,
    ) -> None:
        self.allow = tuple(allow)
        self.allow_recursion = tuple(allow_recursion)
        self._allow = NetworkSet(allow)
        self._recursion = NetworkSet(allow_recursion)
        self._limits = limits
        self._limit_loopback = limit_loopback

    @classmethod
    def from_config(cls, config: Config, addresses: Sequence[InterfaceAddress]) -> AccessPolicy:
        local = local_networks((ep.host for ep in config.listen), addresses)
        return cls(
            expand(config.allow, local),
            expand(config.allow_recursion, local),
            limits=config.rate_limit > 0 or config.max_amplification > 0,
            limit_loopback=config.limit_loopback,
        )

    def classify(self, host: str) -> Client:
        packed = packed_address(host)
        value = int.from_bytes(packed, "big")
        version = 4 if len(packed) == _IPV4_SIZE else 6
        if value >> _LOOPBACK_V4_SHIFT == _LOOPBACK_V4 if version == 4 else value == 1:
            return Client(Access.FULL, self._limits and self._limit_loopback, block_of(packed))
        if not self._allow.holds(value, version):
            access = Access.NONE
        elif self._recursion.holds(value, version):
            access = Access.FULL
        else:
            access = Access.LOCAL
        return Client(access, self._limits, block_of(packed))

    def checks_listener(self, listen_host: str) -> bool:
        """Whether packets arriving on ``listen_host`` need a decision per client.

        A listener bound to a loopback address hears only this host, which is
        always allowed and, without ``--limit-loopback``, never limited: its
        packets skip every check.
        """
        if ipaddress.ip_address(listen_host).is_loopback:
            return self._limits and self._limit_loopback
        return True

    def describe(self) -> str:
        """One line for the start-up log."""
        return (
            f"queries from {_join(self.allow)}; "
            f"forwarded answers for {_join(self.allow_recursion)}; loopback always"
        )


def _join(networks: Sequence[Network]) -> str:
    return ", ".join(str(n) for n in networks) or "nobody"
