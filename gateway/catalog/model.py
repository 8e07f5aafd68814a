"""The catalog as data: nodes, service instances, prepared-query results, snapshots.

A :class:`Snapshot` is the whole view at one moment (static files, Consul, or
both layered) and is never mutated: the Consul watcher swaps in a new one
whole, so an answer never sees half an update. No I/O, no DNS encoding.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
MAINTENANCE = "maintenance"
STATUS_RANK = {PASSING: 0, WARNING: 1, CRITICAL: 2, MAINTENANCE: 3}
KINDS = ("service", "node", "query", "addr", "connect", "ingress", "virtual")
# Health endpoints besides /v1/health/service: Connect-capable instances (proxies
# and native services) and the ingress gateways that expose a service.
CONNECT = "connect"
INGRESS = "ingress"
# A cluster peer takes a datacenter's place in a key as "<peer>.peer": Consul
# datacenter names cannot hold a dot, so the two never collide.
PEER_SUFFIX = ".peer"


def peer_locality(peer: str) -> str:
    """The key's first part for names of cluster peer ``peer``."""
    return peer + PEER_SUFFIX


def peer_of(locality: str) -> str | None:
    """The peer a key's first part names, or None for a datacenter."""
    return locality[: -len(PEER_SUFFIX)] if locality.endswith(PEER_SUFFIX) else None


def worst_status(statuses: Iterable[str]) -> str:
    """Aggregated health: the worst of the checks (Consul's rule)."""
    worst = PASSING
    for status in statuses:
        if STATUS_RANK.get(status, 2) > STATUS_RANK[worst]:
            worst = status if status in STATUS_RANK else CRITICAL
    return worst


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    address: str
    datacenter: str
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Instance:
    """One service instance with its aggregated health."""

    service: str
    service_id: str
    node: Node
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    weight_passing: int = 1
    weight_warning: int = 1
    status: str = PASSING
    # Consul's virtual IP of the service a Connect instance serves
    # (tagged address "consul-virtual"), or "".
    virtual_ip: str = ""

    @property
    def effective_address(self) -> str:
        return self.address or self.node.address

    @property
    def weight(self) -> int:
        return self.weight_warning if self.status == WARNING else self.weight_passing


@dataclass(frozen=True, slots=True)
class PreparedResult:
    """A prepared query's answer: instances plus the DNS TTL it asks for."""

    instances: tuple[Instance, ...]
    ttl: int | None
    datacenter: str


@dataclass(frozen=True)
class Snapshot:
    """The catalog view at one moment. Never mutated after construction.

    ``services`` and ``nodes`` are keyed by (datacenter, lower-case name);
    a service of a cluster peer by (``peer_locality(peer)``, name).
    ``endpoints`` holds the instances of the other health endpoints by kind
    (``CONNECT``, ``INGRESS``), keyed like ``services``.
    ``complete`` says whether a service missing from ``services`` is known
    not to exist (static files, eager watch) or just not fetched yet.
    ``available`` is False while no usable view exists (Consul down at
    start, or the view older than its maximum age): answers are SERVFAIL.
    """

    services: Mapping[tuple[str, str], tuple[Instance, ...]] = field(default_factory=dict)
    nodes: Mapping[tuple[str, str], Node] = field(default_factory=dict)
    queries: Mapping[tuple[str, str], PreparedResult] = field(default_factory=dict)
    endpoints: Mapping[str, Mapping[tuple[str, str], tuple[Instance, ...]]] = field(
        default_factory=dict
    )
    datacenters: frozenset[str] = frozenset()
    complete: bool = True
    available: bool = True
    serial: int = field(default_factory=lambda: int(time.time()) & 0xFFFFFFFF)

    def reverse(self, address: str) -> list[str]:
        """Names that point at ``address``: nodes first, then services."""
        return self._reverse_index.get(address, [])

    @functools.cached_property
    def _reverse_index(self) -> dict[str, list[str]]:
        # Built on the first PTR query against this snapshot, then kept with it.
        index: dict[str, list[str]] = {}
        for (dc, _), node in self.nodes.items():
            _add(index, _canonical_ip(node.address), f"{node.name}.node.{dc}")
        for (dc, name), instances in self.services.items():
            if peer_of(dc) is not None:
                continue  # a peer's addresses are its own cluster's to name (as Consul)
            for inst in instances:
                _add(index, _canonical_ip(inst.node.address), f"{inst.node.name}.node.{dc}")
                if inst.address and inst.address != inst.node.address:
                    _add(index, _canonical_ip(inst.address), f"{name}.service.{dc}")
        return index


def _add(index: dict[str, list[str]], address: str | None, name: str) -> None:
    if address is None:
        return
    names = index.setdefault(address, [])
    if name not in names:
        names.append(name)


def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
