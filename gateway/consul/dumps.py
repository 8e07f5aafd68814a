"""Service watches served by one blocking read per datacenter: the node dump.

A blocking read holds an HTTP/1.1 connection for up to ``consul_wait``,
and Consul accepts ``limits.http_max_conns_per_client`` (200) connections
per client address. Past the blocking-read slots
(:mod:`gateway.consul.slots`) per-service reads would take turns, and a
change would show only when its watch's turn came: about watches / slots
x 5 s (40 s at 1,000 services). So once the service watches outnumber the
slots, :class:`~gateway.consul.services.Services` stops their own reads
and each datacenter's watched services are read from one blocking read of
Consul's node dump, ``/v1/internal/ui/nodes`` (what Consul's web UI
reads): every node with its services and all its checks. Its
X-Consul-Index is the highest of Consul's node, service and check tables,
so it returns on any change to any of them (a check, a registration with
or without checks, a deregistration, tags, weights, meta, a node's
address), and :func:`~gateway.consul.decode.services_from_dump` turns it
into each service's instances as /v1/health/service/<name> gives them.

The price: every change reads the datacenter's whole catalog (1.6 MB and
about 60 ms of Consul and JSON work at 1,000 services), instead of the
one service. The README (Consul at scale) says when to raise Consul's
limit and ``consul_max_connections`` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.catalog.model import Instance
from gateway.consul.decode import services_from_dump
from gateway.consul.watch import Watcher

NODE_DUMP_PATH = "/v1/internal/ui/nodes"

ByName = dict[str, tuple[Instance, ...]]


@dataclass(eq=False)
class Dump:
    """One datacenter's dump watch; ``services`` None until Consul has answered."""

    task: asyncio.Task[None]
    services: ByName | None = None


class NodeDumps:
    """The node-dump watches, one per datacenter, and each one's latest services."""

    def __init__(
        self,
        watcher: Watcher,
        *,
        on_data: Callable[[str, ByName], None],
        on_unknown_dc: Callable[[str], None],
        on_error: Callable[[str, str], None],
    ) -> None:
        """Each callback gets the datacenter first."""
        self._watcher = watcher
        self._on_data = on_data
        self._on_unknown_dc = on_unknown_dc
        self._on_error = on_error
        self._dumps: dict[str, Dump] = {}

    def __len__(self) -> int:
        return len(self._dumps)

    def latest(self, dc: str) -> ByName | None:
        """``dc``'s services as the last dump gave them (None: not in yet)."""
        dump = self._dumps.get(dc)
        return dump.services if dump is not None else None

    def ensure(self, dc: str) -> None:
        """Reads ``dc``'s dump from now on (no-op when it already does)."""
        if dc in self._dumps:
            return

        def data(body: object) -> None:
            dump.services = services_from_dump(body, dc)
            self._on_data(dc, dump.services)

        # Not slotted: like the list watches, one per datacenter, never queued.
        task = self._watcher.start(
            NODE_DUMP_PATH,
            dc,
            on_data=data,
            on_unknown_dc=lambda: self._on_unknown_dc(dc),
            on_error=lambda reason: self._on_error(dc, reason),
            label=f"node dump of {dc}",
        )
        dump = Dump(task)
        self._dumps[dc] = dump

    def stop(self, dc: str) -> None:
        dump = self._dumps.pop(dc, None)
        if dump is not None:
            dump.task.cancel()

    def stop_all(self) -> None:
        for dc in list(self._dumps):
            self.stop(dc)
