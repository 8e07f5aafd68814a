"""Consul HTTP answers turned into catalog values, and the view built from them.

Everything here takes decoded JSON or header values and returns values: no
sockets, no clock of its own, no logging. :mod:`gateway.consul` does the
HTTP, keeps the watcher state and calls these functions, so the rules
(health → Instance, layering over static files, blocking-query index and
staleness rules, backoff) are tested without a Consul.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from typing import Any

from gateway.catalog.model import (
    CRITICAL,
    MAINTENANCE,
    PASSING,
    WARNING,
    Instance,
    Node,
    PreparedResult,
    Snapshot,
    worst_status,
)

Key = tuple[str, str]  # (datacenter, lower-case name)

# Consul marks maintenance with critical checks of these IDs (agent/structs).
NODE_MAINTENANCE_CHECK = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 10.0

# Names that may go into an HTTP path: one DNS-safe label. Anything else ("/", "..",
# "%") could address another API endpoint, so it is known absent without a request.
_SAFE_NAME = re.compile(r"[a-z0-9_-]{1,255}")
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadResponse(ValueError):
    """Consul answered 200 with a body we cannot use (wrong JSON shape)."""


# -- health entries -> instances ------------------------------------------


def check_status(check: Mapping[str, Any]) -> str:
    """One check's status; maintenance checks (critical in Consul) say so."""
    check_id = str(check.get("CheckID") or "")
    if check_id == NODE_MAINTENANCE_CHECK or check_id.startswith(SERVICE_MAINTENANCE_PREFIX):
        return MAINTENANCE
    status = check.get("Status")
    # An unknown status must never make an instance look healthy.
    return status if status in (PASSING, WARNING, CRITICAL) else CRITICAL


def node_from_json(obj: Mapping[str, Any], datacenter: str) -> Node:
    """A ``Node`` object of /v1/catalog/nodes or of a health entry."""
    name = obj.get("Node")
    if not isinstance(name, str) or not name:
        raise BadResponse(f"node without a name: {obj!r:.200}")
    return Node(
        name=name,
        address=_str(obj.get("Address")),
        datacenter=(_str(obj.get("Datacenter")) or datacenter).lower(),
        meta=_str_map(obj.get("Meta")),
    )


def instance_from_entry(entry: Mapping[str, Any], datacenter: str) -> Instance:
    """One /v1/health/service (or query execute) entry: Node, Service, Checks.

    The status is the worst of all checks in the entry, which Consul
    fills with the node's checks (serfHealth, node maintenance) and this
    service's own checks.
    """
    node_obj, service = entry.get("Node"), entry.get("Service")
    if not isinstance(node_obj, Mapping) or not isinstance(service, Mapping):
        raise BadResponse(f"health entry without Node or Service: {entry!r:.200}")
    name = service.get("Service")
    if not isinstance(name, str) or not name:
        raise BadResponse(f"service without a name: {service!r:.200}")
    checks = entry.get("Checks") or []
    if not isinstance(checks, list):
        raise BadResponse("Checks is not a list")
    weights = service.get("Weights") or {}
    if not isinstance(weights, Mapping):
        raise BadResponse("Weights is not an object")
    tags = service.get("Tags") or []
    if not isinstance(tags, list):
        raise BadResponse("Tags is not a list")
    return Instance(
        service=name,
        service_id=_str(service.get("ID")) or name,
        node=node_from_json(node_obj, datacenter),
        # Empty means "the node's address": Instance.effective_address.
        address=_str(service.get("Address")),
        port=_int(service.get("Port"), 0),
        tags=tuple(str(t) for t in tags),
        meta=_str_map(service.get("Meta")),
        weight_passing=_int(weights.get("Passing"), 1),
        weight_warning=_int(weights.get("Warning"), 1),
        status=worst_status(check_status(c) for c in checks if isinstance(c, Mapping)),
    )


def instances_from_health(body: Any, datacenter: str) -> tuple[Instance, ...]:
    """The body of /v1/health/service/<name>: a list of entries."""
    if not isinstance(body, list):
        raise BadResponse("health answer is not a list")
    return tuple(instance_from_entry(e, datacenter) for e in body if isinstance(e, Mapping))


def nodes_from_catalog(body: Any, datacenter: str) -> dict[str, Node]:
    """The body of /v1/catalog/nodes, keyed by lower-case node name."""
    if not isinstance(body, list):
        raise BadResponse("node list is not a list")
    nodes = (node_from_json(n, datacenter) for n in body if isinstance(n, Mapping))
    return {node.name.lower(): node for node in nodes}


def service_names(body: Any) -> frozenset[str]:
    """The body of /v1/catalog/services ({name: [tags]}): lower-case names."""
    if not isinstance(body, Mapping):
        raise BadResponse("service list is not an object")
    return frozenset(str(name).lower() for name in body)


def datacenter_names(body: Any) -> frozenset[str]:
    """The body of /v1/catalog/datacenters."""
    if not isinstance(body, list):
        raise BadResponse("datacenter list is not a list")
    return frozenset(str(dc).lower() for dc in body)


def prepared_result(body: Any, datacenter: str) -> PreparedResult:
    """The body of /v1/query/<name>/execute.

    Consul has already dropped critical instances (and warning ones with
    OnlyPassing); the DNS TTL is the query's ``DNS.TTL`` when set.
    """
    if not isinstance(body, Mapping):
        raise BadResponse("query result is not an object")
    result_dc = (_str(body.get("Datacenter")) or datacenter).lower()
    dns = body.get("DNS") or {}
    ttl_s = parse_duration(_str(dns.get("TTL"))) if isinstance(dns, Mapping) else None
    return PreparedResult(
        instances=instances_from_health(body.get("Nodes") or [], result_dc),
        ttl=None if ttl_s is None else int(ttl_s),
        datacenter=result_dc,
    )


def parse_duration(text: str) -> float | None:
    """A Go duration ("10s", "1m30s", "500ms") in seconds; None if empty or bad."""
    text = text.strip()
    if not text:
        return None
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def safe_name(name: str) -> bool:
    """Whether a service or prepared-query name may be asked of Consul."""
    return _SAFE_NAME.fullmatch(name) is not None


# -- blocking-query rules ---------------------------------------------------


def next_index(previous: int, received: int) -> int:
    """The index the next blocking query waits on (Consul's documented rules).

    An index that went backwards means the state was reset (snapshot
    restore, a new cluster): start again with a plain read. Never block on
    0, which would return at once and spin.
    """
    if received < previous:
        return 0
    return max(received, 1)


def too_stale(last_contact_ms: int | None, max_stale_s: float) -> bool:
    """Whether a stale read lags its leader by more than we accept."""
    return last_contact_ms is not None and last_contact_ms > max_stale_s * 1000.0


def read_params(
    datacenter: str, *, index: int = 0, wait_s: float = 0.0, stale: bool = True
) -> list[tuple[str, str]]:
    """Query parameters of a read: dc, blocking index and wait, consistency."""
    params = [("dc", datacenter)]
    if index > 0:
        params += [("index", str(index)), ("wait", f"{round(wait_s * 1000)}ms")]
    if stale:
        # Any server may answer: no leader needed (leader elections).
        params.append(("stale", ""))
    return params


class Backoff:
    """Exponential backoff with jitter: 0.1 s doubling up to 10 s.

    Each delay is drawn from [d/2, d] so that watchers failing together
    (Consul restarting) do not come back in lock step.
    """

    def __init__(
        self,
        initial_s: float = BACKOFF_INITIAL_S,
        maximum_s: float = BACKOFF_MAX_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._rng = rng
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._maximum, self._initial * 2.0 ** min(self._attempt, 62))
        self._attempt += 1
        return ceiling / 2.0 + self._rng() * ceiling / 2.0

    def reset(self) -> None:
        self._attempt = 0


# -- the view ---------------------------------------------------------------


class ServiceView(Mapping[Key, tuple[Instance, ...]]):
    """``Snapshot.services`` of a Consul-backed view. Immutable once built.

    A lookup of (dc, name) gives, in this order: Consul's instances when it
    has any (Consul wins); the static layer's; Consul's empty answer for a
    watched name; ``()`` -- known absent, so NXDOMAIN without any HTTP --
    when the name is not a DNS-safe label, the datacenter is unknown to
    Consul or its service list lacks the name; otherwise nothing (KeyError /
    None), and the answerer asks the source to fetch the service.

    Iteration covers only entries that hold instances (watched and static
    services), which is what the reverse (PTR) index walks. ``on_lookup``
    lets the source see which watched services are still being asked for
    (idle unwatch); it is called on ``get`` and ``[]``.
    """

    __slots__ = ("_datacenters", "_entries", "_names", "_on_lookup")

    def __init__(
        self,
        entries: Mapping[Key, tuple[Instance, ...]],
        names: Mapping[str, frozenset[str]],
        datacenters: frozenset[str] | None,
        on_lookup: Callable[[Key], None] | None = None,
    ) -> None:
        self._entries = entries
        self._names = names
        self._datacenters = datacenters
        self._on_lookup = on_lookup

    def get(  # type: ignore[override]
        self, key: Key, default: tuple[Instance, ...] | None = None
    ) -> tuple[Instance, ...] | None:
        if self._on_lookup is not None:
            self._on_lookup(key)
        found = self._entries.get(key)
        if found is not None:
            return found
        if self._known_absent(key):
            return ()
        return default

    def __getitem__(self, key: Key) -> tuple[Instance, ...]:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def _known_absent(self, key: Key) -> bool:
        dc, name = key
        if not safe_name(name):
            return True
        if self._datacenters is not None and dc not in self._datacenters:
            return True
        names = self._names.get(dc)
        return names is not None and name not in names

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    # Walks (the reverse index) are not lookups: no on_lookup calls.
    def items(self) -> ItemsView[Key, tuple[Instance, ...]]:
        return self._entries.items()

    def values(self) -> ValuesView[tuple[Instance, ...]]:
        return self._entries.values()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"ServiceView({len(self._entries)} services, {len(self._names)} datacenters)"


def layer_services(
    consul: Mapping[Key, tuple[Instance, ...]],
    static: Mapping[Key, tuple[Instance, ...]],
) -> dict[Key, tuple[Instance, ...]]:
    """Consul wins for a service it has instances of; static files fill the rest."""
    merged = dict(static)
    for key, instances in consul.items():
        if instances or key not in merged:
            merged[key] = instances
    return merged


def build_snapshot(
    *,
    static: Snapshot | None,
    services: Mapping[Key, tuple[Instance, ...]],
    names: Mapping[str, frozenset[str]],
    datacenters: frozenset[str] | None,
    nodes: Mapping[Key, Node],
    queries: Mapping[Key, PreparedResult],
    available: bool,
    on_lookup: Callable[[Key], None] | None = None,
) -> Snapshot:
    """One immutable view: Consul's parts layered over the static snapshot.

    ``complete`` stays False: a name Consul's lists do not settle is
    fetched on its first query, and prepared queries are always executed
    on demand (a complete view would answer them NXDOMAIN).
    """
    base = static if static is not None else Snapshot()
    merged_nodes = dict(base.nodes)
    merged_nodes.update(nodes)
    return Snapshot(
        services=ServiceView(
            layer_services(services, base.services),
            dict(names),
            datacenters,
            on_lookup,
        ),
        nodes=merged_nodes,
        queries=dict(queries),
        datacenters=(datacenters or frozenset()) | base.datacenters,
        complete=False,
        available=available,
    )
