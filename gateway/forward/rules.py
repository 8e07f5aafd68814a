"""dnsmasq's forwarding rules as values: ``--server``, ``--rev-server``, ``--local``, ``--address``.

Two halves, both without I/O:

- the syntax (:func:`parse_server`, :func:`parse_rev_server`,
  :func:`parse_local`, :func:`parse_address`), dnsmasq's own, each value
  checked and turned into a :class:`ServerRule` or :class:`AddressRule`;
- the table (:func:`build_rules`): one :class:`DomainPolicy` per domain a
  rule names, with what each kind of question under it gets already worked
  out along the shorter domains, so a query pays one longest-suffix lookup
  (the router's) and one attribute read.

dnsmasq 2.90's behaviour, checked against the real one
(``tests/integration/test_forward_policy.py``): the longest domain wins;
``address=/d/IP`` answers only questions of its address family (A or AAAA),
every other question goes on to the servers of the longest domain that has
some (or the standard servers); ``address=/d/#`` is 0.0.0.0 and ::;
``address=/d/``, ``local=/d/`` and ``server=/d/`` are NXDOMAIN for every
question (no SOA); ``server=/d/#`` sends ``d`` to the standard servers even
when a shorter domain has servers of its own. A name under an ``address=``
domain exists as far as dnsmasq is concerned: an upstream's NXDOMAIN for
any other question about it is relayed as NOERROR without records
(``DomainPolicy.nxdomain_as_nodata``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import dns.name

from gateway.dns import wire
from gateway.options import Endpoint, parse_endpoint

DEFAULT_PORT = 53
# The index of the standard servers (--upstream, --server IP, the resolv file).
STANDARD: Final = 0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ServerRule:
    """One ``--server`` (or ``--rev-server``, ``--local``) value.

    ``domains`` empty: ``upstream`` is one of the standard servers.
    Otherwise names under the domains go to ``upstream``, or to the
    standard servers (``standard``, dnsmasq's ``#``), or nowhere: answered
    from local data only, else NXDOMAIN (no upstream and not standard).
    """

    domains: tuple[str, ...]
    upstream: Endpoint | None = None
    standard: bool = False


@dataclass(frozen=True, slots=True)
class AddressRule:
    """One ``--address`` value: ``addresses`` empty means NXDOMAIN."""

    domains: tuple[str, ...]
    addresses: tuple[IPAddress, ...]


def _domain(text: str, value: str) -> str:
    name = text.strip().strip(".").lower()
    if not name:
        raise ValueError(
            f"{value!r}: an empty domain (dnsmasq's unqualified names) is not supported"
        )
    if "*" in name:
        raise ValueError(f"{value!r}: wildcard domains are not supported")
    labels = name.split(".")
    if any(not label or len(label) > 63 for label in labels) or len(name) > 253:
        raise ValueError(f"{value!r}: {text!r} is not a valid domain name")
    if not all(ch.isalnum() or ch in "-_." for ch in name):
        raise ValueError(f"{value!r}: {text!r} has characters not allowed in a domain name")
    return name


def _split_domains(value: str) -> tuple[tuple[str, ...], str]:
    """``/a/b/rest`` -> (("a", "b"), "rest"); a value without a leading slash has no domains."""
    if not value.startswith("/"):
        return (), value
    parts = value[1:].split("/")
    if len(parts) < 2:
        raise ValueError(f"{value!r}: a domain list is written /domain/[domain/]")
    return tuple(_domain(d, value) for d in parts[:-1]), parts[-1]


def _endpoint(text: str, value: str) -> Endpoint:
    """dnsmasq's ``IP[#port]``."""
    if "@" in text:
        raise ValueError(f"{value!r}: source addresses and interfaces (@) are not supported")
    host, _, port = text.partition("#")
    try:
        address = ipaddress.ip_address(host)
        endpoint = parse_endpoint(str(address), DEFAULT_PORT)
        if port:
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"port {port!r} is not 1-65535")
            endpoint = Endpoint(endpoint.host, int(port))
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return endpoint


def parse_server(value: str) -> ServerRule:
    """``IP[#port]``, ``/dom/[dom/]IP[#port]``, ``/dom/#`` or ``/dom/`` (dnsmasq's ``server=``)."""
    value = value.strip()
    domains, rest = _split_domains(value)
    if not domains:
        if not rest:
            raise ValueError("empty server")
        return ServerRule((), _endpoint(rest, value))
    if rest == "#":
        return ServerRule(domains, standard=True)
    if not rest:
        return ServerRule(domains)
    return ServerRule(domains, _endpoint(rest, value))


def parse_local(value: str) -> ServerRule:
    """``/dom/[dom/]``: names answered from local data only (dnsmasq's ``local=``)."""
    value = value.strip()
    domains, rest = _split_domains(value)
    if not domains or rest:
        raise ValueError(f"{value!r} is not /domain/[domain/]")
    return ServerRule(domains)


def parse_address(value: str) -> AddressRule:
    """``/dom/[dom/]IP``, ``/dom/#`` (0.0.0.0 and ::) or ``/dom/`` (NXDOMAIN)."""
    value = value.strip()
    domains, rest = _split_domains(value)
    if not domains:
        raise ValueError(f"{value!r} is not /domain/[domain/]ADDRESS")
    if rest == "#":
        return AddressRule(domains, (ipaddress.IPv4Address(0), ipaddress.IPv6Address(0)))
    if not rest:
        return AddressRule(domains, ())
    try:
        return AddressRule(domains, (ipaddress.ip_address(rest),))
    except ValueError:
        raise ValueError(f"{value!r}: {rest!r} is not an IP address") from None


def parse_rev_server(value: str) -> ServerRule:
    """``CIDR,IP[#port]``: the reverse zones of the range go to that server (``rev-server=``).

    A prefix that does not end on a label boundary (8 bits for IPv4, 4 for
    IPv6) covers every reverse zone of the next longer boundary, as many as
    that takes (at most 128 for IPv4, 8 for IPv6).
    """
    value = value.strip()
    network_text, comma, server = value.partition(",")
    if not comma or not server:
        raise ValueError(f"{value!r} is not CIDR,IP[#port]")
    try:
        network = ipaddress.ip_network(network_text.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if network.prefixlen == 0:
        raise ValueError(f"{value!r}: a prefix length of 0 names no reverse zone")
    return ServerRule(reverse_zones(network), _endpoint(server.strip(), value))


def reverse_zones(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[str, ...]:
    """The reverse zones (RFC 1035 3.5, RFC 3596 2.5) that together cover ``network``."""
    step = 8 if network.version == 4 else 4
    boundary = -(-network.prefixlen // step) * step
    zones = []
    for subnet in network.subnets(new_prefix=boundary):
        labels = subnet.network_address.reverse_pointer.split(".")
        # reverse_pointer names the whole address: keep the labels of the prefix.
        keep = boundary // step
        zones.append(".".join(labels[len(labels) - 2 - keep :]))
    return tuple(zones)


# -- the table ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one kind of question under a domain gets.

    Exactly one of: an address record's rdata (``rdata``), NXDOMAIN
    (``nxdomain``), or forwarding to upstream set ``upstreams``.
    """

    rdata: bytes | None = None
    nxdomain: bool = False
    upstreams: int = STANDARD


NXDOMAIN_OUTCOME = Outcome(nxdomain=True)
STANDARD_OUTCOME = Outcome()


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    """What questions under ``name`` get: A, AAAA and every other type."""

    name: dns.name.Name
    a: Outcome
    aaaa: Outcome
    other: Outcome
    # An address rule covers the name: an upstream NXDOMAIN is relayed as NODATA.
    nxdomain_as_nodata: bool = False

    def outcome(self, qtype: int) -> Outcome:
        if qtype == wire.A:
            return self.a
        if qtype == wire.AAAA:
            return self.aaaa
        return self.other


@dataclass(frozen=True, slots=True)
class ForwardRules:
    """Every rule domain's policy, and the upstream sets they forward to.

    ``upstream_sets[STANDARD]`` is empty: the standard servers are the
    forwarder's own list (they change when the resolv file does).
    """

    policies: tuple[DomainPolicy, ...]
    upstream_sets: tuple[tuple[Endpoint, ...], ...]
    default_servers: tuple[Endpoint, ...]


@dataclass
class _Domain:
    servers: list[Endpoint]
    standard: bool = False
    local: bool = False
    a: bytes | None = None
    aaaa: bytes | None = None
    nxdomain: bool = False


def build_rules(servers: Iterable[ServerRule], addresses: Iterable[AddressRule]) -> ForwardRules:
    """The per-domain policies of the rules (see the module docstring for what wins)."""
    domains: dict[str, _Domain] = {}
    default_servers: list[Endpoint] = []

    def entry(name: str) -> _Domain:
        return domains.setdefault(name, _Domain([]))

    for rule in servers:
        if not rule.domains:
            assert rule.upstream is not None
            if rule.upstream not in default_servers:
                default_servers.append(rule.upstream)
        for name in rule.domains:
            found = entry(name)
            if rule.upstream is not None:
                if rule.upstream not in found.servers:
                    found.servers.append(rule.upstream)
            elif rule.standard:
                found.standard = True
            else:
                found.local = True
    for address_rule in addresses:
        for name in address_rule.domains:
            found = entry(name)
            if not address_rule.addresses:
                found.nxdomain = True
            for address in address_rule.addresses:
                if address.version == 4:
                    found.a = address.packed
                else:
                    found.aaaa = address.packed
    sets: list[tuple[Endpoint, ...]] = [()]

    def terminal(found: _Domain) -> Outcome | None:
        """What this domain itself decides for questions no address of it answers."""
        if found.nxdomain:
            return NXDOMAIN_OUTCOME
        if found.servers:
            servers = tuple(found.servers)
            if servers not in sets:
                sets.append(servers)
            return Outcome(upstreams=sets.index(servers))
        if found.standard:
            return STANDARD_OUTCOME
        if found.local:
            return NXDOMAIN_OUTCOME
        return None

    def resolve(name: str, pick: str | None) -> Outcome:
        """Walks from ``name`` to shorter domains until one decides."""
        labels = name.split(".")
        for i in range(len(labels)):
            found = domains.get(".".join(labels[i:]))
            if found is None:
                continue
            if not found.nxdomain and pick is not None:
                rdata = getattr(found, pick)
                if rdata is not None:
                    return Outcome(rdata=rdata)
            decided = terminal(found)
            if decided is not None:
                return decided
        return STANDARD_OUTCOME

    def has_address(name: str) -> bool:
        labels = name.split(".")
        chain = (domains.get(".".join(labels[i:])) for i in range(len(labels)))
        return any(d is not None and (d.a or d.aaaa) for d in chain)

    policies = tuple(
        DomainPolicy(
            dns.name.from_text(name),
            resolve(name, "a"),
            resolve(name, "aaaa"),
            resolve(name, None),
            has_address(name),
        )
        for name in sorted(domains)
    )
    return ForwardRules(policies, tuple(sets), tuple(default_servers))
