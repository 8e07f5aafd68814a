"""The datacenters Consul knows, and each one's service and node lists.

``/v1/catalog/datacenters`` is polled every 30 s, and every second while
Consul is away: it doubles as the liveness probe, and its first success
wakes every watcher sleeping in backoff. Every datacenter's service list
(``/v1/catalog/services``) and node list (``/v1/catalog/nodes``) are
watched, two long polls each: the service list settles "unknown service"
(NXDOMAIN with no HTTP request, however many random names are asked) and
tells when a service appears or leaves; the node list answers
``<node>.node`` and PTR, which have no "fetch first" step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.catalog.model import Node
from gateway.consul.decode import (
    BadResponse,
    datacenter_names,
    json_body,
    nodes_from_catalog,
    service_names,
)
from gateway.consul.http import ConsulError
from gateway.consul.liveness import Liveness
from gateway.consul.reader import Reader
from gateway.consul.snapshot import Key
from gateway.consul.watch import Backoff, Watcher

log = logging.getLogger(__name__)

DATACENTERS_POLL_S = 30.0
# While Consul is away the probe asks at most once a second: one small
# request, and its first success wakes every watcher.
PROBE_BACKOFF_MAX_S = 1.0


@dataclass(eq=False)
class DatacenterLists:
    """One datacenter's lists; None until Consul has answered."""

    name: str
    names: frozenset[str] | None = None
    nodes: dict[str, Node] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Datacenters:
    """The datacenter list and the list watches of every datacenter in it."""

    def __init__(
        self,
        *,
        local: str,
        reader: Reader,
        watcher: Watcher,
        liveness: Liveness,
        changed: Callable[[], None],
        on_names: Callable[[str, frozenset[str]], None],
        on_dropped: Callable[[str], None],
        rng: Callable[[], float],
        poll_s: float = DATACENTERS_POLL_S,
        probe_backoff_max_s: float = PROBE_BACKOFF_MAX_S,
    ) -> None:
        """``on_names`` gets each new service list of a datacenter, ``on_dropped``
        the name of a datacenter that left Consul's list."""
        self._local = local
        self._reader = reader
        self._watcher = watcher
        self._liveness = liveness
        self._changed = changed
        self._on_names = on_names
        self._on_dropped = on_dropped
        self._rng = rng
        self._poll_s = poll_s
        self._probe_backoff_max_s = probe_backoff_max_s
        self.known: frozenset[str] | None = None  # None until Consul has answered
        self._lists: dict[str, DatacenterLists] = {}
        self._nodes_cache: dict[Key, Node] | None = None

    def ready(self) -> bool:
        """Whether the first complete view is in: the datacenters and the local lists."""
        local = self._lists.get(self._local)
        return (
            self.known is not None
            and local is not None
            and local.names is not None
            and local.nodes is not None
        )

    def service_names(self) -> dict[str, frozenset[str]]:
        return {dc: lists.names for dc, lists in self._lists.items() if lists.names is not None}

    def nodes(self) -> dict[Key, Node]:
        """Every datacenter's nodes; rebuilt only when a node list changed."""
        if self._nodes_cache is None:
            self._nodes_cache = {
                (dc, name): node
                for dc, lists in self._lists.items()
                for name, node in (lists.nodes or {}).items()
            }
        return self._nodes_cache

    def __len__(self) -> int:
        return len(self._lists)

    async def probe(self) -> None:
        """Polls the datacenter list until cancelled."""
        backoff = Backoff(maximum_s=self._probe_backoff_max_s, rng=self._rng)
        while True:
            try:
                result = await self._reader.request("/v1/catalog/datacenters")
                self.set_known(datacenter_names(json_body(result)))
            except (ConsulError, BadResponse) as exc:
                log.debug("datacenter list: %s", exc)
                await self._liveness.nap(backoff.next())
                continue
            backoff.reset()
            await self._liveness.wait_for_outage(self._poll_s)

    def set_known(self, names: frozenset[str]) -> None:
        if names == self.known:
            return
        if self._local not in names:
            log.warning(
                "datacenter %r (option 'datacenter') is not one Consul knows: %s",
                self._local,
                ", ".join(sorted(names)),
            )
        self.known = names
        # Every datacenter is watched: a <node>.node.<dc> lookup has no
        # "fetch first" step, so its nodes must be known beforehand.
        for dc in names:
            self.ensure(dc)
        for dc in [dc for dc in self._lists if dc not in names and dc != self._local]:
            self._drop(dc)
        self._changed()

    def ensure(self, dc: str) -> None:
        """Watches ``dc``'s lists (the local one from the start)."""
        if dc in self._lists:
            return
        lists = DatacenterLists(dc)
        self._lists[dc] = lists
        lists.tasks = [
            self._watcher.start(
                "/v1/catalog/services",
                dc,
                on_data=lambda body: self._set_names(lists, service_names(body)),
                on_unknown_dc=lambda: self._set_names(lists, frozenset()),
                on_error=lambda reason: log.debug("services of %s: %s", dc, reason),
                label=f"services of {dc}",
            ),
            self._watcher.start(
                "/v1/catalog/nodes",
                dc,
                on_data=lambda body: self._set_nodes(lists, nodes_from_catalog(body, dc)),
                on_unknown_dc=lambda: self._set_nodes(lists, {}),
                on_error=lambda reason: log.debug("nodes of %s: %s", dc, reason),
                label=f"nodes of {dc}",
            ),
        ]

    def _drop(self, dc: str) -> None:
        lists = self._lists.pop(dc)
        for task in lists.tasks:
            task.cancel()
        self._on_dropped(dc)
        self._nodes_cache = None

    def _set_names(self, lists: DatacenterLists, names: frozenset[str]) -> None:
        if names == lists.names:
            return
        lists.names = names
        self._on_names(lists.name, names)
        self._changed()

    def _set_nodes(self, lists: DatacenterLists, nodes: dict[str, Node]) -> None:
        if nodes == lists.nodes:
            return
        lists.nodes = nodes
        self._nodes_cache = None
        self._changed()
