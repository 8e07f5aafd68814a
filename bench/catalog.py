"""The benchmark's Consul catalog: generated services, registered fast through /v1/txn.

Every instance gets its own service address (so A answers differ per instance), SRV
weights, tags, and one passing check; instances share a pool of nodes the way service
instances share machines. A few services are IPv6-only.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from harness.consul import ConsulClient

# Consul refuses transactions with more than 64 operations.
TXN_MAX_OPS = 64


@dataclass(frozen=True)
class Instance:
    service: str
    service_id: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    weight: int

    @property
    def ipv6(self) -> bool:
        return ":" in self.address


@dataclass(frozen=True)
class Service:
    name: str
    ipv6: bool
    instances: tuple[Instance, ...]

    @property
    def tags(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for inst in self.instances:
            for tag in inst.tags:
                seen[tag] = None
        return tuple(seen)


@dataclass(frozen=True)
class Catalog:
    services: tuple[Service, ...]
    nodes: tuple[tuple[str, str], ...]  # (name, address)
    checks: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.services)


def service_name(i: int) -> str:
    return f"svc-{i:05d}"


def make_catalog(
    services: int,
    instances: int,
    *,
    ipv6_services: int = 0,
    nodes: int | None = None,
    checks: bool = True,
) -> Catalog:
    """``services`` x ``instances``; the last ``ipv6_services`` services are IPv6-only.

    Nodes default to one per 20 instances (at least ``instances``, so the instances of one
    service always sit on distinct nodes).
    """
    total = services * instances
    node_count = nodes if nodes is not None else max(instances, (total + 19) // 20)
    node_count = max(node_count, instances)
    node_list = tuple(
        (f"node-{n:05d}", str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.1.0.1")) + n)))
        for n in range(node_count)
    )
    v4_base = int(ipaddress.IPv4Address("10.64.0.1"))
    v6_base = int(ipaddress.IPv6Address("fd00:bec::1"))
    out: list[Service] = []
    for s in range(services):
        name = service_name(s)
        ipv6 = s >= services - ipv6_services
        insts: list[Instance] = []
        for i in range(instances):
            k = s * instances + i
            address = (
                str(ipaddress.IPv6Address(v6_base + k))
                if ipv6
                else str(ipaddress.IPv4Address(v4_base + k))
            )
            tags = ("v1" if i % 2 == 0 else "v2",) + (("primary",) if i == 0 else ())
            insts.append(
                Instance(
                    service=name,
                    service_id=f"{name}-{i}",
                    node=node_list[k % node_count][0],
                    address=address,
                    port=20000 + (s % 40000),
                    tags=tags,
                    weight=1 + (s * 7 + i * 3) % 10,
                )
            )
        out.append(Service(name, ipv6, tuple(insts)))
    return Catalog(tuple(out), node_list, checks)


def txn_ops(catalog: Catalog, datacenter: str = "dc1") -> Iterator[dict[str, Any]]:
    """The /v1/txn operations creating ``catalog``: nodes first, then services and checks."""
    for node, address in catalog.nodes:
        yield {
            "Node": {
                "Verb": "set",
                "Node": {"Node": node, "Address": address, "Datacenter": datacenter},
            }
        }
    for svc in catalog.services:
        for inst in svc.instances:
            yield {
                "Service": {
                    "Verb": "set",
                    "Node": inst.node,
                    "Service": {
                        "ID": inst.service_id,
                        "Service": inst.service,
                        "Address": inst.address,
                        "Port": inst.port,
                        "Tags": list(inst.tags),
                        "Weights": {"Passing": inst.weight, "Warning": 1},
                        "Meta": {"bench": "1"},
                    },
                }
            }
            if catalog.checks:
                yield {
                    "Check": {
                        "Verb": "set",
                        "Check": {
                            "Node": inst.node,
                            "CheckID": f"check:{inst.service_id}",
                            "Name": f"check {inst.service_id}",
                            "Status": "passing",
                            "ServiceID": inst.service_id,
                            "ServiceName": inst.service,
                        },
                    }
                }


def _batches(ops: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for op in ops:
        batch.append(op)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def register(
    client: ConsulClient, catalog: Catalog, *, parallel: int = 8, timeout: float = 600.0
) -> float:
    """Register ``catalog`` with /v1/txn batches of 64 ops; returns the seconds it took.

    Nodes are written before any service (a service op needs its node). Batches run
    ``parallel`` at a time: Consul's raft batches concurrent applies, which is what makes
    100,000 instances take seconds rather than minutes.
    """
    start = time.monotonic()
    deadline = start + timeout
    ops = list(txn_ops(catalog, client.datacenter))
    node_ops = ops[: len(catalog.nodes)]
    rest = ops[len(catalog.nodes) :]

    def send(batch: Sequence[dict[str, Any]]) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"catalog registration took longer than {timeout:.0f}s")
        result = client.request("PUT", "/v1/txn", list(batch), timeout=60.0)
        errors = result.get("Errors") if isinstance(result, dict) else None
        if errors:
            raise RuntimeError(f"/v1/txn failed: {errors!r}"[:1000])

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for phase in (node_ops, rest):
            # list() re-raises the first failure of the phase.
            list(pool.map(send, _batches(iter(phase), TXN_MAX_OPS)))
    return time.monotonic() - start


def wait_registered(client: ConsulClient, catalog: Catalog, timeout: float = 60.0) -> None:
    """Wait until /v1/catalog/services lists every service of ``catalog``."""
    want = {s.name for s in catalog.services}
    deadline = time.monotonic() + timeout
    while True:
        have = set(client.request("GET", "/v1/catalog/services", timeout=30.0) or {})
        if want <= have:
            return
        if time.monotonic() > deadline:
            missing = sorted(want - have)
            raise TimeoutError(f"{len(missing)} services missing from the catalog: {missing[:5]}")
        time.sleep(0.2)
