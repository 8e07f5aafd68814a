"""Service watches: started on a first query, stopped when idle or gone.

A service is watched (``/v1/health/service/<name>``, blocking) from its
first query on, or from the start for every local one with
``consul_watch_all``. First queries wait for the watch's first answer and
go on after the swap that holds it. A watch stops when its service leaves
Consul's list (the list answers it then), and, unless watched from the
start, when no query used it for ``consul_idle_unwatch`` seconds: a use is
a first query or a lookup on the resolver's slow path, reported through
:meth:`Services.touch`. A service answered only from the resolver's
prepared answers all that time is dropped and fetched again on its next
query (one round trip), because dropping it swaps the snapshot and so
clears those prepared answers.

How a watch reads: its own blocking read of ``/v1/health/service/<name>``
while the service watches fit in the blocking-read slots; once they
outnumber them, one node-dump read per datacenter serves them all
(:mod:`gateway.consul.dumps` says why), until they fall back to three
quarters of the slots (a margin so that a count hovering at the limit does
not switch back and forth).

The same machinery watches the mesh health endpoints: a ``Services`` made
with ``endpoint="connect"`` (or ``"ingress"``) reads
``/v1/health/<endpoint>/<name>``. Those watches are few (one per mesh name
asked), always read on their own and never from node dumps, which hold only
what ``/v1/health/service`` holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.catalog.model import Instance, peer_of
from gateway.catalog.source import CatalogUnavailable
from gateway.consul.clock import Clock, sleep
from gateway.consul.decode import instances_from_health
from gateway.consul.dumps import ByName, NodeDumps
from gateway.consul.slots import Slots
from gateway.consul.snapshot import Key
from gateway.consul.watch import Watcher

log = logging.getLogger(__name__)

SERVICE_ENDPOINT = "service"
# The idle sweep runs every quarter of consul_idle_unwatch, at most this far apart.
IDLE_SWEEP_MAX_S = 30.0
# Node dumps serve the watches until they fall to this share of the slots.
DUMPS_LEAVE_SHARE = 0.75


@dataclass(eq=False)
class ServiceWatch:
    key: Key
    eager: bool  # watched from the start (consul_watch_all): never idle
    last_used: float
    instances: tuple[Instance, ...] | None = None  # None until Consul has answered
    last_error: str | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None  # its own read; None while a node dump serves it


class Services:
    """The service watches, their first-query waiters and the idle sweep."""

    def __init__(
        self,
        *,
        local: str,
        eager: bool,
        clock: Clock,
        watcher: Watcher,
        slots: Slots,
        changed: Callable[[], None],
        release_after_swap: Callable[[Iterable[asyncio.Future[None]]], None],
        idle_unwatch_s: float,
        idle_sweep_max_s: float = IDLE_SWEEP_MAX_S,
        endpoint: str = SERVICE_ENDPOINT,
    ) -> None:
        """``changed`` says the view must be rebuilt; ``release_after_swap`` lets
        first queries go on once it has been (:class:`~gateway.consul.publish.Publisher`).
        ``endpoint`` is the health endpoint watched: ``/v1/health/<endpoint>/<name>``
        ("service", or "connect" / "ingress" for the mesh name forms)."""
        self._endpoint = endpoint
        self._local = local
        self._eager = eager
        self._clock = clock
        self._watcher = watcher
        self._slots = slots
        self._changed = changed
        self._release_after_swap = release_after_swap
        self._idle_unwatch_s = idle_unwatch_s
        self._idle_sweep_s = min(idle_unwatch_s / 4, idle_sweep_max_s)
        self._watches: dict[Key, ServiceWatch] = {}
        self._dumps = NodeDumps(
            watcher,
            on_data=self._dumped,
            on_unknown_dc=lambda dc: self._each_dumped(dc, lambda w: self._set_instances(w, ())),
            on_error=lambda dc, reason: self._each_dumped(dc, lambda w: self._failed(w, reason)),
        )
        self._dumping = False  # node dumps serve every watch
        self.first_fetches = 0

    def __len__(self) -> int:
        return len(self._watches)

    def loaded(self) -> int:
        """Watches whose first read has arrived."""
        return sum(1 for w in self._watches.values() if w.instances is not None)

    @property
    def dumping(self) -> bool:
        """Whether node dumps serve the watches (a metric)."""
        return self._dumping

    def entries(self) -> dict[Key, tuple[Instance, ...]]:
        return {k: w.instances for k, w in self._watches.items() if w.instances is not None}

    async def fetch(self, dc: str, name: str) -> None:
        """Watches the service and waits for Consul's first answer about it."""
        watch = self.ensure(dc, name, eager=False)
        watch.last_used = self._clock.now()
        if watch.instances is None:
            if watch.last_error is not None:
                # Its last request failed: fail now rather than after the
                # resolver's timeout; the watcher keeps retrying.
                raise CatalogUnavailable(f"service {name}.{dc}: {watch.last_error}")
            self.first_fetches += 1
            waiter = asyncio.get_running_loop().create_future()
            watch.waiters.append(waiter)
            await waiter
        self.touch(dc, name)  # the answer that follows is a use too

    def touch(self, datacenter: str, name: str) -> None:
        """A query used the service: it is not idle."""
        watch = self._watches.get((datacenter, name))
        if watch is not None:
            watch.last_used = self._clock.now()

    def ensure(self, dc: str, name: str, *, eager: bool) -> ServiceWatch:
        key = (dc, name)
        watch = self._watches.get(key)
        if watch is not None:
            watch.eager = watch.eager or eager
            return watch
        watch = ServiceWatch(key, eager, self._clock.now())
        self._watches[key] = watch
        if self._dumping and _dumpable(dc):
            self._from_dump(watch)
        else:
            watch.task = self._read(watch)
        self._choose_reads()
        return watch

    def _read(self, watch: ServiceWatch) -> asyncio.Task[None]:
        """The watch's own blocking reads."""
        dc, name = watch.key
        return self._watcher.start(
            f"/v1/health/{self._endpoint}/{name}",
            dc,
            on_data=lambda body: self._set_instances(watch, instances_from_health(body, dc)),
            on_unknown_dc=lambda: self._set_instances(watch, ()),
            on_error=lambda reason: self._failed(watch, reason),
            slotted=True,
            label=f"{self._endpoint} {name}.{dc}",
        )

    def _from_dump(self, watch: ServiceWatch) -> None:
        """The watch is served by its datacenter's node dump (the last one, if in)."""
        dc, name = watch.key
        self._dumps.ensure(dc)
        latest = self._dumps.latest(dc)
        if latest is not None:
            self._set_instances(watch, latest.get(name, ()))

    def _choose_reads(self) -> None:
        """Own reads within the slots, node dumps beyond (module doc)."""
        if self._endpoint != SERVICE_ENDPOINT:
            return  # own reads always; the slots count the service watches
        count = len(self._watches)
        if not self._dumping and count > self._slots.capacity:
            log.info(
                "%d service watches outnumber the %d blocking-read slots: "
                "reading node dumps (see --consul-max-connections)",
                count,
                self._slots.capacity,
            )
            self._dumping = True
            for watch in self._watches.values():
                if not _dumpable(watch.key[0]):
                    continue
                if watch.task is not None:
                    watch.task.cancel()
                    watch.task = None
                self._from_dump(watch)
        elif self._dumping and count <= self._slots.capacity * DUMPS_LEAVE_SHARE:
            log.info("%d service watches: reading each service again", count)
            self._dumping = False
            self._dumps.stop_all()
            for watch in self._watches.values():
                if watch.task is None:
                    watch.task = self._read(watch)
        self._slots.set_watches(0 if self._dumping else count)

    def _dumped(self, dc: str, services: ByName) -> None:
        self._each_dumped(
            dc, lambda watch: self._set_instances(watch, services.get(watch.key[1], ()))
        )

    def _each_dumped(self, dc: str, apply: Callable[[ServiceWatch], None]) -> None:
        for watch in list(self._watches.values()):
            if watch.key[0] == dc and watch.task is None:
                apply(watch)

    def listed(self, dc: str, names: frozenset[str]) -> None:
        """``dc``'s service list changed."""
        # A watched service that left the list is gone: the list answers it.
        for key in [k for k in self._watches if k[0] == dc and k[1] not in names]:
            self._stop(key)
        if self._eager and dc == self._local:
            for name in names:
                self.ensure(dc, name, eager=True)

    def drop_datacenter(self, dc: str) -> None:
        for key in [k for k in self._watches if k[0] == dc]:
            self._stop(key)

    def clear_errors(self) -> None:
        """Consul is back: errors are the outage's, so a first query now waits
        for the watch's retry (bounded by the first-query timeout) instead of
        failing at once."""
        for watch in self._watches.values():
            watch.last_error = None

    def _set_instances(self, watch: ServiceWatch, instances: tuple[Instance, ...]) -> None:
        watch.last_error = None
        if instances != watch.instances:
            watch.instances = instances
            self._changed()
        if watch.waiters:
            self._release_waiters(watch)

    def _failed(self, watch: ServiceWatch, reason: str) -> None:
        watch.last_error = reason
        log.debug("service %s.%s: %s", watch.key[1], watch.key[0], reason)
        for waiter in watch.waiters:
            if not waiter.done():
                waiter.set_exception(CatalogUnavailable(f"service {watch.key[1]}: {reason}"))
        watch.waiters.clear()

    def _release_waiters(self, watch: ServiceWatch) -> None:
        """The watch has data: its first queries go on after the next swap."""
        self._release_after_swap(watch.waiters)
        watch.waiters.clear()

    def _stop(self, key: Key) -> None:
        watch = self._watches.pop(key)
        if watch.task is not None:
            watch.task.cancel()
        elif not any(k[0] == key[0] for k in self._watches):
            self._dumps.stop(key[0])  # its datacenter's last watch
        self._choose_reads()
        self._changed()
        if watch.waiters:
            # Only a service that left Consul's lists is stopped while a first
            # query waits (idle ones have no waiters): the view now answers it.
            self._release_waiters(watch)

    async def sweep_idle(self) -> None:
        """Unwatches idle services every so often, until cancelled."""
        while True:
            await sleep(self._clock, self._idle_sweep_s)
            self.unwatch_idle()

    def unwatch_idle(self) -> None:
        cutoff = self._clock.now() - self._idle_unwatch_s
        for key, watch in list(self._watches.items()):
            if not watch.eager and not watch.waiters and watch.last_used < cutoff:
                log.debug("unwatching idle service %s.%s", key[1], key[0])
                self._stop(key)


def _dumpable(dc: str) -> bool:
    """Whether a node dump can serve a watch there: a cluster peer's services are
    not in the local datacenter's dump, so they are always read on their own."""
    return peer_of(dc) is None
