"""The live catalog: Consul's HTTP API watched with blocking queries.

:class:`ConsulSource` keeps an immutable :class:`~gateway.catalog.model.Snapshot`
and swaps in a new one whole whenever what Consul says changes; the
resolver reads it with no I/O. This module only puts the parts together
(gateway/consul/README.md maps them): what is watched and why is told by
:mod:`~gateway.consul.datacenters` (the datacenter probe and the per
datacenter lists), :mod:`~gateway.consul.services` (service watches, idle
unwatch) and :mod:`~gateway.consul.queries` (prepared queries); how a watch
reads by :mod:`~gateway.consul.watch`, :mod:`~gateway.consul.reader` and
:mod:`~gateway.consul.slots`; when the view counts as current by
:mod:`~gateway.consul.liveness`.

All HTTP goes through one py-consul asyncio client: one aiohttp session
and connection pool (:mod:`gateway.consul.http`, which says why its
endpoint wrappers are not used). All time is read from one injected
:class:`~gateway.consul.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.catalog.model import CONNECT, INGRESS, Snapshot
from gateway.consul import datacenters, queries, reader, services, slots
from gateway.consul.clock import Clock, MonotonicClock
from gateway.consul.datacenters import Datacenters
from gateway.consul.http import (
    AioConsulHTTP,
    ConsulHTTP,
    ConsulSetupError,
    parse_address,
    tls_context,
)
from gateway.consul.liveness import Liveness
from gateway.consul.publish import Publisher
from gateway.consul.queries import QueryCache
from gateway.consul.reader import Reader
from gateway.consul.services import SERVICE_ENDPOINT, Services
from gateway.consul.slots import Slots
from gateway.consul.snapshot import build_snapshot, safe_name
from gateway.consul.tasks import TaskSet
from gateway.consul.watch import Watcher
from gateway.metrics import Metric, Metrics, gauge_family
from gateway.options import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tuning:
    """Limits and periods that are not options; tests shrink them."""

    # None: from consul_max_connections (slots.blocking_slots).
    max_blocking_reads: int | None = None
    shared_slot_wait_s: float = slots.SHARED_SLOT_WAIT_S
    request_timeout_s: float = reader.REQUEST_TIMEOUT_S
    blocking_margin_s: float = reader.BLOCKING_MARGIN_S
    datacenters_poll_s: float = datacenters.DATACENTERS_POLL_S
    probe_backoff_max_s: float = datacenters.PROBE_BACKOFF_MAX_S
    min_query_cache_s: float = queries.MIN_QUERY_CACHE_S
    outage_recheck_s: float = queries.OUTAGE_RECHECK_S
    idle_sweep_max_s: float = services.IDLE_SWEEP_MAX_S


class ConsulSource:
    """A :class:`~gateway.catalog.source.CatalogSource` backed by Consul; see the module doc."""

    def __init__(
        self,
        config: Config,
        *,
        static: Snapshot | None = None,
        http: ConsulHTTP | None = None,
        clock: Clock | None = None,
        rng: Callable[[], float] = random.random,
        tuning: Tuning = Tuning(),
    ) -> None:
        if config.consul is None:
            raise ConsulSetupError("option 'consul' is required for a Consul catalog")
        self._config = config
        self._address = parse_address(config.consul)
        self._http: ConsulHTTP = (
            http
            if http is not None
            else AioConsulHTTP(
                self._address,
                token=config.consul_token,
                tls=tls_context(config, self._address),
                max_connections=config.consul_max_connections,
            )
        )
        self._static = static
        clock = clock if clock is not None else MonotonicClock()
        local = config.datacenter
        self._tasks = TaskSet()
        self._liveness = Liveness(
            clock,
            address=str(self._address),
            view_max_age_s=config.consul_view_max_age,
            ready=self._ready,
            on_back=self._consul_back,
            on_expired=self._changed,
        )
        self._reader = Reader(
            self._http,
            self._liveness,
            local=local,
            max_stale_s=config.consul_max_stale,
            token_set=bool(config.consul_token),
            request_timeout_s=tuning.request_timeout_s,
            blocking_margin_s=tuning.blocking_margin_s,
        )
        max_reads = tuning.max_blocking_reads
        if max_reads is None:
            max_reads = slots.blocking_slots(config.consul_max_connections)
        self._slots = Slots(max_reads=max_reads, shared_wait_s=tuning.shared_slot_wait_s)
        watcher = Watcher(
            self._reader,
            self._slots,
            self._tasks,
            nap=self._liveness.nap,
            wait_s=config.consul_wait,
            rng=rng,
        )

        def services(endpoint: str, eager: bool) -> Services:
            return Services(
                local=local,
                eager=eager,
                clock=clock,
                watcher=watcher,
                slots=self._slots,
                changed=self._changed,
                release_after_swap=self._release_after_swap,
                idle_unwatch_s=config.consul_idle_unwatch,
                idle_sweep_max_s=tuning.idle_sweep_max_s,
                endpoint=endpoint,
            )

        self._services = services(SERVICE_ENDPOINT, config.consul_watch_all)
        # The mesh name forms (<svc>.connect, .ingress, .virtual) watch the other
        # health endpoints the same way, always lazily: few names are asked.
        self._endpoints = {kind: services(kind, False) for kind in (CONNECT, INGRESS)}
        self._datacenters = Datacenters(
            local=local,
            reader=self._reader,
            watcher=watcher,
            liveness=self._liveness,
            changed=self._changed,
            on_names=self._listed,
            on_dropped=self._drop_datacenter,
            rng=rng,
            poll_s=tuning.datacenters_poll_s,
            probe_backoff_max_s=tuning.probe_backoff_max_s,
        )
        self._queries = QueryCache(
            reader=self._reader,
            tasks=self._tasks,
            clock=clock,
            changed=self._changed,
            consul_down=lambda: self._liveness.down,
            min_lifetime_s=tuning.min_query_cache_s,
            outage_recheck_s=tuning.outage_recheck_s,
        )
        self._publisher = Publisher(self._build, clock)
        self._publisher.on_change(self._log_swap)
        # The instance attribute shadows the method: one call less per slow-path lookup.
        self.touch = self._services.touch  # type: ignore[method-assign]

    def __repr__(self) -> str:
        token = "set" if self._config.consul_token else "none"
        return f"ConsulSource({self._address}, token={token})"

    # -- CatalogSource --------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._publisher.snapshot

    def on_change(self, callback: Callable[[], None]) -> None:
        self._publisher.on_change(callback)

    def touch(self, datacenter: str, name: str) -> None:
        """The resolver's slow path looked the service up: it is not idle.

        Replaced per instance by ``Services.touch`` (see ``__init__``).
        """
        self._services.touch(datacenter, name)

    async def start(self) -> None:
        """Starts the watchers and returns at once: Consul may well be down."""
        if self._address.scheme == "http" and (self._config.consul_ca or self._config.consul_cert):
            log.warning("consul_ca/consul_cert are ignored: %s is not https", self._address)
        self._tasks.spawn(self._datacenters.probe(), "datacenters")
        self._datacenters.ensure(self._config.datacenter)
        self._tasks.spawn(self._services.sweep_idle(), "idle unwatch")
        for kind, watches in self._endpoints.items():
            self._tasks.spawn(watches.sweep_idle(), f"idle unwatch ({kind})")
        mode = "watching all services" if self._config.consul_watch_all else "lazy"
        log.info("consul: %s, %s", self._address, mode)

    async def stop(self) -> None:
        self._queries.stop()
        self._liveness.stop()
        await self._tasks.cancel_all()
        await self._http.close()

    def replace_static(self, static: Snapshot | None) -> None:
        """Newly read ``--catalog`` files (SIGHUP): layered under Consul's view from now on."""
        self._static = static
        self._changed()

    def touch_endpoint(self, kind: str, datacenter: str, name: str) -> None:
        """A connect/ingress lookup used that watch: it is not idle."""
        watches = self._endpoints.get(kind)
        if watches is not None:
            watches.touch(datacenter, name)

    async def fetch_service(self, datacenter: str, name: str, kind: str = SERVICE_ENDPOINT) -> None:
        """Watches the service (at health endpoint ``kind``) and waits for
        Consul's first answer about it."""
        self._liveness.require_usable()
        if not safe_name(name):  # the view answers it NXDOMAIN; never a request
            return
        if kind == SERVICE_ENDPOINT:
            await self._services.fetch(datacenter, name)
            view = self._publisher.snapshot.services
        else:
            await self._endpoints[kind].fetch(datacenter, name)
            view = self._publisher.snapshot.endpoints.get(kind, {})
        if view.get((datacenter, name)) is None:
            self._publisher.flush()  # its data is in, the swap not yet: swap now

    async def fetch_query(self, datacenter: str, name: str) -> None:
        """Executes the prepared query (once for concurrent callers)."""
        self._liveness.require_usable()
        await self._queries.fetch(datacenter, name, datacenters=self._datacenters.known)
        self._publisher.flush()

    # -- state and metrics ----------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self._liveness.reachable

    def view_age(self) -> float:
        """Seconds since the view was last known current (0 while Consul answers)."""
        return self._liveness.view_age()

    @property
    def stats(self) -> dict[str, int]:
        return {name: read() for name, read in self._counters().items()}

    def _counters(self) -> dict[str, Callable[[], int]]:
        return {
            "http_requests": lambda: self._reader.requests,
            # The most requests in flight at once so far: bounded by the
            # slots, the datacenters and first queries, not by the services.
            "http_inflight_peak": lambda: self._reader.inflight_peak,
            "http_errors": lambda: self._reader.errors,
            "stale_retries": lambda: self._reader.stale_retries,
            "view_swaps": lambda: self._publisher.swaps,
            "first_fetches": lambda: self._services.first_fetches,
            "query_executions": lambda: self._queries.executions,
        }

    def register_metrics(self, metrics: Metrics) -> None:
        help = {
            "http_requests": "HTTP requests made to Consul.",
            "http_errors": "HTTP requests to Consul that failed (transport or status).",
            "stale_retries": "Stale reads asked again of the leader (too far behind).",
            "view_swaps": "Catalog views swapped in.",
            "first_fetches": "First queries of a service that waited for Consul.",
            "query_executions": "Prepared queries executed.",
        }
        # A peak only goes up, but is no count of events: a gauge.
        peaks = {"http_inflight_peak": "The most requests to Consul in flight at once so far."}
        for name, read in self._counters().items():
            if name in peaks:
                metrics.gauge(f"consul_{name}", read, peaks[name])
            else:
                metrics.counter(f"consul_{name}", read, help.get(name, ""))
        metrics.gauge(
            "consul_up", lambda: 1.0 if self.reachable else 0.0, "Whether Consul answers (1/0)."
        )
        metrics.gauge(
            "consul_view_available",
            lambda: 1.0 if self._liveness.usable() else 0.0,
            "Whether the catalog view may answer (1/0; 0 before the first view or past "
            "consul_view_max_age).",
        )
        metrics.gauge(
            "consul_view_age_seconds",
            self.view_age,
            "Seconds since the view was last known current (0 while Consul answers).",
        )
        metrics.gauge("consul_watched_services", lambda: len(self._services), "Services watched.")
        # With --consul-watch-all, equal to consul_watched_services once the
        # whole catalog is in memory.
        metrics.gauge(
            "consul_services_loaded", self._services.loaded, "Watched services Consul answered."
        )
        metrics.gauge(
            "consul_watched_datacenters", lambda: len(self._datacenters), "Datacenters watched."
        )
        metrics.gauge(
            "consul_cached_queries", lambda: len(self._queries), "Prepared-query results kept."
        )
        metrics.gauge(
            "consul_watches_waiting_for_slot",
            lambda: self._slots.waiting,
            "Watches queued for a blocking-read slot (gateway.consul.slots).",
        )
        metrics.gauge(
            "consul_http_inflight", lambda: self._reader.inflight, "Requests to Consul in flight."
        )
        metrics.gauge(
            "consul_node_dumps",
            lambda: 1.0 if self._services.dumping else 0.0,
            "1 while node dumps serve the service watches (gateway.consul.dumps).",
        )
        metrics.family(self._watch_families)
        metrics.readiness("consul first view", self._ready)

    def _watch_families(self) -> list[Metric]:
        """Watches by health endpoint and state: loaded (Consul answered) or waiting."""
        rows: list[tuple[tuple[str, str], float]] = []
        for endpoint, watches in (
            (SERVICE_ENDPOINT, self._services),
            *self._endpoints.items(),
        ):
            loaded = watches.loaded()
            rows += [((endpoint, "loaded"), loaded), ((endpoint, "waiting"), len(watches) - loaded)]
        return [
            gauge_family(
                "consul_watches",
                "Consul health watches, by endpoint (service, connect, ingress) and state.",
                ("endpoint", "state"),
                rows,
            )
        ]

    # -- wiring ---------------------------------------------------------------

    def _ready(self) -> bool:
        return self._datacenters.ready()

    def _changed(self) -> None:
        self._publisher.changed()

    def _release_after_swap(self, waiters: Iterable[asyncio.Future[None]]) -> None:
        self._publisher.release_after_swap(waiters)

    def _all_services(self) -> list[Services]:
        return [self._services, *self._endpoints.values()]

    def _listed(self, dc: str, names: frozenset[str]) -> None:
        for watches in self._all_services():
            watches.listed(dc, names)

    def _drop_datacenter(self, dc: str) -> None:
        for watches in self._all_services():
            watches.drop_datacenter(dc)

    def _consul_back(self) -> None:
        for watches in self._all_services():
            watches.clear_errors()
        self._changed()

    def _build(self) -> Snapshot:
        usable = self._liveness.usable()
        return build_snapshot(
            static=self._static,
            services=self._services.entries() if usable else {},
            names=self._datacenters.service_names() if usable else {},
            datacenters=self._datacenters.known if usable else None,
            nodes=self._datacenters.nodes() if usable else {},
            queries=self._queries.results() if usable else {},
            endpoints={
                kind: watches.entries() if usable else {}
                for kind, watches in self._endpoints.items()
            },
            # Static names keep answering while Consul's part is unusable;
            # the others are fetched, which fails: SERVFAIL.
            available=usable or self._static is not None,
        )

    def _log_swap(self) -> None:
        log.debug(
            "view swapped: available %s, %d services watched",
            self._publisher.snapshot.available,
            len(self._services),
        )
