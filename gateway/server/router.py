"""Longest-suffix routing of a name to exactly one answerer.

Names are compared in wire form, lower-cased, one label boundary at a time:
a label holding a dot (``a\\.b.example.``) is one label, never two, and each
step is one dict lookup of bytes (a query miss pays this per query).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.name

from gateway.catalog.answers import reverse_address
from gateway.dns import wire
from gateway.forward.rules import DomainPolicy


class Kind(enum.Enum):
    CATALOG = "catalog"  # under a Consul domain
    REVERSE = "reverse"  # the PTR name of an address the catalog knows
    ZONE = "zone"  # in a local zone
    HOSTS = "hosts"  # a hosts-file name or address, localhost., loopback reverse names
    FORWARD = "forward"  # everything else (``policy``: under a --server/--address domain)


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    # The domain or zone origin that matched; the root for REVERSE and FORWARD.
    name: dns.name.Name = dns.name.root
    address: str | None = None  # REVERSE: the address the name encodes
    # FORWARD under a dnsmasq rule's domain: what its questions get (None: the defaults).
    policy: DomainPolicy | None = None

    @property
    def suffix(self) -> str:
        """The matched domain as text without the final dot ("" for the root)."""
        return self.name.to_text(omit_final_dot=True) if self.name != dns.name.root else ""


FORWARD = Route(Kind.FORWARD)
HOSTS = Route(Kind.HOSTS)
# The reverse trees (RFC 1035 3.5, RFC 3596 2.5) in lower-case wire form.
_REVERSE_SUFFIXES = (b"\x07in-addr\x04arpa\x00", b"\x03ip6\x04arpa\x00")


class Router:
    """Maps names to the catalog (Consul domains), a local zone, or the forwarder.

    The longest matching suffix wins, so a zone ``svc.consul`` would take
    its names away from the catalog, and ``consul`` zone files cannot
    shadow the catalog by accident: the same suffix twice is an error.
    A reverse name no domain or zone claims goes to the catalog when the
    catalog knows the address (``knows_address``: a Consul dev agent's node
    at 127.0.0.1 is named as Consul's DNS names it); else a name goes to the
    hosts answerer when it claims it (``local``: hosts files, RFC 6761 names;
    dnsmasq answers these before forwarding, and before its ``--server``,
    ``--local`` and ``--address`` rules); else it is forwarded.

    dnsmasq's rules (``rules``: ``--server``, ``--local``, ``--address``
    domains) are FORWARD routes of their own in the same table, so the
    longest suffix decides between them and local data too. Local data
    wins: a rule for exactly a Consul domain or a zone origin is left out
    (``shadowed`` lists them), and a catalog address beats a rule's
    reverse domain.
    """

    def __init__(
        self,
        domains: Iterable[str],
        zone_origins: Iterable[dns.name.Name],
        knows_address: Callable[[str], bool] | None = None,
        rules: Iterable[DomainPolicy] = (),
        local: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._routes: dict[bytes, Route] = {}
        for domain in domains:
            name = dns.name.from_text(domain)
            self._add(name, Route(Kind.CATALOG, name))
        for origin in zone_origins:
            self._add(origin, Route(Kind.ZONE, origin))
        self.shadowed: list[dns.name.Name] = []
        for policy in rules:
            key = wire.to_wire(policy.name).lower()
            if key in self._routes:
                self.shadowed.append(policy.name)
            else:
                self._routes[key] = Route(Kind.FORWARD, policy.name, policy=policy)
        self._knows_address = knows_address
        self._local = local

    def _add(self, suffix: dns.name.Name, route: Route) -> None:
        key = wire.to_wire(suffix).lower()
        if key in self._routes:
            raise ValueError(
                f"'{suffix.to_text(omit_final_dot=True)}' is both "
                f"{self._routes[key].kind.value} and {route.kind.value}"
            )
        self._routes[key] = route

    def _suffix(self, name: bytes) -> Route | None:
        """The route of the longest suffix of a lower-case wire name in the table."""
        found = wire.longest_suffix(name, self._routes)  # the root is never a route
        return found[1] if found is not None else None

    def route(self, qname_wire: bytes) -> Route:
        """The route of an uncompressed wire name (any letter case)."""
        name = qname_wire.lower()
        found = self._suffix(name)
        if found is not None and found.kind is not Kind.FORWARD:
            return found
        if self._knows_address is not None and name.endswith(_REVERSE_SUFFIXES):
            address = reverse_address(wire.name_of(name))
            if address is not None and self._knows_address(address):
                return Route(Kind.REVERSE, address=address)
        if self._local is not None and self._local(name):
            return HOSTS
        return found or FORWARD

    def forward_route(self, qname_wire: bytes) -> Route:
        """The FORWARD route of a name past the catalog's reverse names and the
        hosts files (its rule's, if one applies): for the questions they leave
        to the upstream (a reverse name asked for another type than PTR)."""
        found = self._suffix(qname_wire.lower())
        return found if found is not None and found.kind is Kind.FORWARD else FORWARD
