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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


class Access(enum.IntEnum):
    """What a client may be answered."""

    NONE = 0  # outside --allow: nothing (REFUSED or dropped)
    LOCAL = 1  # catalog and zone answers; forwarded names REFUSED or dropped
    FULL = 2  # everything, forwarded answers included


@dataclass(frozen=True, slots=True)
class Client:
    """The decision for one client address."""

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
        value = int(address)
        return any((value >> s) in nets for s, nets in self._tables[address.version].items())


def parse_address(host: str) -> Address:
    """A socket's peer host as an address: scope id dropped, IPv4-mapped unwrapped."""
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


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


def block_of(address: Address) -> bytes:
    """The client's rate-limit block: the first 24 (IPv4) or 56 (IPv6) bits, packed."""
    if address.version == 4:
        return address.packed[: IPV4_BLOCK_BITS // 8]
    return address.packed[: IPV6_BLOCK_BITS // 8]


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
        address = parse_address(host)
        if address.is_loopback:
            return Client(Access.FULL, self._limits and self._limit_loopback, block_of(address))
        if address not in self._allow:
            access = Access.NONE
        elif address in self._recursion:
            access = Access.FULL
        else:
            access = Access.LOCAL
        return Client(access, self._limits, block_of(address))

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
