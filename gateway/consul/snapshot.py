"""The snapshot of a Consul-backed catalog: Consul's parts layered over static files.

Pure data and pure functions: :func:`build_snapshot` takes what the watcher
holds and returns an immutable :class:`~gateway.catalog.model.Snapshot`
whose lookups call nothing back. Which services are still being asked for
(idle unwatch) is told to the source explicitly
(:meth:`~gateway.consul.source.ConsulSource.touch`), not seen through here.
"""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterator, Mapping, ValuesView

from gateway.catalog.model import Instance, Node, PreparedResult, Snapshot, peer_of

Key = tuple[str, str]  # (datacenter, lower-case name)

# Names that may go into an HTTP path: one DNS-safe label. Anything else ("/", "..",
# "%") could address another API endpoint, so it is known absent without a request.
_SAFE_NAME = re.compile(r"[a-z0-9_-]{1,255}")


def safe_name(name: str) -> bool:
    """Whether a service or prepared-query name may be asked of Consul."""
    return _SAFE_NAME.fullmatch(name) is not None


class ServiceView(Mapping[Key, tuple[Instance, ...]]):
    """``Snapshot.services`` of a Consul-backed view. Immutable once built.

    A lookup of (dc, name) gives, in this order: Consul's instances when it
    has any (Consul wins); the static layer's; Consul's empty answer for a
    watched name; ``()`` -- known absent, so NXDOMAIN without any HTTP --
    when the name is not a DNS-safe label, the datacenter is unknown to
    Consul or its service list lacks the name; otherwise nothing (KeyError /
    None), and the answerer asks the source to fetch the service.

    Iteration covers only entries that hold instances (watched and static
    services), which is what the reverse (PTR) index walks.
    """

    __slots__ = ("_datacenters", "_entries", "_names")

    def __init__(
        self,
        entries: Mapping[Key, tuple[Instance, ...]],
        names: Mapping[str, frozenset[str]],
        datacenters: frozenset[str] | None,
    ) -> None:
        self._entries = entries
        self._names = names
        self._datacenters = datacenters

    def get(  # type: ignore[override]
        self, key: Key, default: tuple[Instance, ...] | None = None
    ) -> tuple[Instance, ...] | None:
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
        # A peer is not in the datacenter list: a service of an unknown peer
        # is asked of Consul, which answers it empty.
        peer = peer_of(dc)
        if peer is not None and not safe_name(peer):
            return True
        if self._datacenters is not None and dc not in self._datacenters and peer is None:
            return True
        names = self._names.get(dc)
        return names is not None and name not in names

    def __iter__(self) -> Iterator[Key]:
        return iter(self._entries)

    # The parts it is built from (gateway.consul.shared sends their changes).
    @property
    def entries(self) -> Mapping[Key, tuple[Instance, ...]]:
        return self._entries

    @property
    def names(self) -> Mapping[str, frozenset[str]]:
        return self._names

    @property
    def datacenters(self) -> frozenset[str] | None:
        return self._datacenters

    # The plain dict's views: the reverse index walks every entry.
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
    endpoints: Mapping[str, Mapping[Key, tuple[Instance, ...]]] | None = None,
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
        services=ServiceView(layer_services(services, base.services), dict(names), datacenters),
        nodes=merged_nodes,
        queries=dict(queries),
        # Connect and ingress instances settle unknown names as services do.
        endpoints={
            kind: ServiceView(
                layer_services(entries, base.endpoints.get(kind, {})), dict(names), datacenters
            )
            for kind, entries in (endpoints or {}).items()
        },
        datacenters=(datacenters or frozenset()) | base.datacenters,
        complete=False,
        available=available,
    )
