"""The live catalog: Consul's HTTP API watched with blocking queries.

:class:`ConsulSource` keeps an immutable :class:`~gateway.catalog.Snapshot`
and swaps in a new one whole whenever what Consul says changes; the
resolver reads it with no I/O. What is watched, and why:

* ``/v1/catalog/datacenters``, polled every 30 s, and every second while
  Consul is away (it is the liveness probe; its first success wakes every
  watcher sleeping in backoff).
* per datacenter, all of them: the service list (``/v1/catalog/services``)
  and the node list (``/v1/catalog/nodes``), blocking. The service list
  settles "unknown service" (NXDOMAIN with no HTTP request, however many
  random names are asked) and tells when a new service appears; the node
  list answers ``<node>.node`` and PTR, which have no "fetch first" step.
  Two long polls per datacenter.
* per service, from its first query on (or every local one with
  ``consul_watch_all``): ``/v1/health/service/<name>``, blocking. Watches
  of services not looked up for ``consul_idle_unwatch`` seconds stop.
  Lookups are seen through the snapshot's service mapping, which the
  resolver's slow path consults; a service answered only from the
  resolver's prepared answers all that time is dropped and fetched again
  on its next query (one round trip), because dropping it swaps the
  snapshot and so clears those prepared answers.
* prepared queries: executed on demand, the result kept for its DNS TTL,
  at least ``MIN_QUERY_CACHE_S`` (Consul's default TTL of 0 would mean one
  HTTP request per DNS query).

Reads are ``stale`` (any server answers, so leader elections go
unnoticed); a reply whose ``X-Consul-LastContact`` exceeds
``consul_max_stale`` is asked again of the leader. When the local Consul
cannot be reached, the last good view keeps answering for
``consul_view_max_age`` seconds, then the catalog answers SERVFAIL (names
from static files excepted) until Consul is back.

All HTTP goes through one py-consul asyncio client: one aiohttp session
and connection pool (:mod:`gateway.consul_http`, which says why its
endpoint wrappers are not used). Each watch holds a pooled connection
during its blocking read; ``MAX_BLOCKING_READS`` says how that is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.catalog.model import Instance, Node, PreparedResult, Snapshot
from gateway.catalog.source import CatalogUnavailable
from gateway.consul.http import (
    AioConsulHTTP,
    ConsulError,
    ConsulHTTP,
    ConsulStatusError,
    ConsulTransportError,
    HTTPResult,
    UnknownDatacenter,
    decode,
    parse_address,
    status_error,
    tls_context,
)
from gateway.consul.view import (
    Backoff,
    BadResponse,
    Key,
    build_snapshot,
    datacenter_names,
    instances_from_health,
    next_index,
    nodes_from_catalog,
    prepared_result,
    read_params,
    safe_name,
    service_names,
    too_stale,
)
from gateway.metrics import Metrics
from gateway.options import Config, ConfigError

log = logging.getLogger(__name__)

# Each blocking read holds a connection for up to consul_wait. Capped below
# consul_http.MAX_CONNECTIONS so that first reads (a DNS query is waiting) and prepared
# queries always find a connection. With more service watches than slots,
# they queue for one and block at most SHARED_SLOT_WAIT_S, so the slots go
# round: a change then shows within about watches / slots x 5 s instead of
# at once (the price of HTTP/1.1 long polls; see the README on scale).
MAX_BLOCKING_READS = 120
SHARED_SLOT_WAIT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
# Consul adds up to wait/16 of jitter to a blocking query; this on top.
BLOCKING_MARGIN_S = 5.0
DATACENTERS_POLL_S = 30.0
# The datacenter list doubles as the liveness probe while Consul is away: one
# small request a second at most, and its first success wakes every watcher.
PROBE_BACKOFF_MAX_S = 1.0
MIN_QUERY_CACHE_S = 1.0
# While Consul is away, expired prepared-query results stay (last good view).
OUTAGE_RECHECK_S = 1.0
IDLE_SWEEP_MAX_S = 30.0
ACL_HINT = "the token needs service:read, node:read and query:read (deploy/consul-acl-policy.hcl)"


class _Rearm(Exception):
    """A full-length blocking read was cut short to share the slots: read again."""


# -- watcher state ------------------------------------------------------------


@dataclass(eq=False)
class _Datacenter:
    """One datacenter's lists; None until Consul has answered."""

    name: str
    names: frozenset[str] | None = None
    nodes: dict[str, Node] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass(eq=False)
class _ServiceWatch:
    key: Key
    eager: bool
    last_used: float
    instances: tuple[Instance, ...] | None = None
    last_error: str | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _CachedQuery:
    result: PreparedResult
    expires: float


STAT_NAMES = (
    "http_requests",
    "http_errors",
    "stale_retries",
    "view_swaps",
    "first_fetches",
    "query_executions",
)


class ConsulSource:
    """A :class:`~gateway.source.CatalogSource` backed by Consul; see the module doc."""

    def __init__(
        self,
        config: Config,
        *,
        static: Snapshot | None = None,
        http: ConsulHTTP | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if config.consul is None:
            raise ConfigError("option 'consul' is required for a Consul catalog")
        self._config = config
        self._address = parse_address(config.consul)
        self._http: ConsulHTTP = (
            http
            if http is not None
            else AioConsulHTTP(
                self._address, token=config.consul_token, tls=tls_context(config, self._address)
            )
        )
        self._static = static
        self._clock = clock
        self._rng = rng
        self._local = config.datacenter
        self._callbacks: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._datacenters: frozenset[str] | None = None
        self._dcs: dict[str, _Datacenter] = {}
        self._services: dict[Key, _ServiceWatch] = {}
        self._queries: dict[Key, _CachedQuery] = {}
        self._query_fetches: dict[Key, asyncio.Task[None]] = {}
        self._nodes_cache: dict[Key, Node] | None = None
        self._query_timer: asyncio.TimerHandle | None = None
        self._age_timer: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._probe_now = asyncio.Event()
        self._blocking_slots = asyncio.Semaphore(MAX_BLOCKING_READS)
        self._released: list[asyncio.Future[None]] = []
        self._next_flush_at = 0.0
        self._slot_waiters = 0
        self._long_reads: set[asyncio.Task[HTTPResult]] = set()
        self._started_at = clock()
        self._down_since: float | None = None
        self._denied_logged = False
        self._filtered_logged = False
        self._dirty = False
        self._flush_scheduled = False
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self._snapshot = self._build()

    def __repr__(self) -> str:
        token = "set" if self._config.consul_token else "none"
        return f"ConsulSource({self._address}, token={token})"

    # -- CatalogSource --------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Starts the watchers and returns at once: Consul may well be down."""
        self._loop = asyncio.get_running_loop()
        if self._address.scheme == "http" and (self._config.consul_ca or self._config.consul_cert):
            log.warning("consul_ca/consul_cert are ignored: %s is not https", self._address)
        self._spawn(self._datacenters_loop(), "datacenters")
        self._ensure_datacenter(self._local)
        self._spawn(self._janitor(), "idle unwatch")
        log.info(
            "consul: %s, %s", self._address, "watching all services" if self._eager else "lazy"
        )

    async def stop(self) -> None:
        for handle in (self._query_timer, self._age_timer):
            if handle is not None:
                handle.cancel()
        tasks = list(self._tasks) + list(self._query_fetches.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.close()

    async def fetch_service(self, datacenter: str, name: str) -> None:
        """Watches the service and waits for Consul's first answer about it."""
        self._require_usable()
        if not safe_name(name):  # the view answers it NXDOMAIN; never a request
            return
        watch = self._ensure_service(datacenter, name, eager=False)
        watch.last_used = self._clock()
        if watch.instances is None:
            if watch.last_error is not None:
                # Its last request failed: fail now rather than after the
                # resolver's timeout; the watcher keeps retrying.
                raise CatalogUnavailable(f"service {name}.{datacenter}: {watch.last_error}")
            self.stats["first_fetches"] += 1
            waiter = self._running_loop().create_future()
            watch.waiters.append(waiter)
            await waiter
        if self._snapshot.services.get((datacenter, name)) is None:
            self._flush()  # its data is in, the swap not yet: swap now

    async def fetch_query(self, datacenter: str, name: str) -> None:
        """Executes the prepared query (once for concurrent callers)."""
        self._require_usable()
        key = (datacenter, name)
        known = self._datacenters
        if not safe_name(name) or (known is not None and datacenter not in known):
            self._store_query(key, PreparedResult((), None, datacenter), MIN_QUERY_CACHE_S)
            self._flush()
            return
        task = self._query_fetches.get(key)
        if task is None:
            task = self._running_loop().create_task(self._execute_query(datacenter, name))
            self._query_fetches[key] = task
            task.add_done_callback(functools.partial(self._query_done, key))
        # Shielded: one caller's timeout must not cancel the others' fetch.
        await asyncio.shield(task)
        self._flush()

    # -- metrics --------------------------------------------------------------

    def register_metrics(self, metrics: Metrics) -> None:
        for name in STAT_NAMES:
            metrics.gauge(f"consul_{name}", lambda n=name: self.stats[n])  # type: ignore[misc]
        metrics.gauge("consul_up", lambda: 1.0 if self.reachable else 0.0)
        metrics.gauge("consul_view_available", lambda: 1.0 if self._usable() else 0.0)
        metrics.gauge("consul_view_age_seconds", self.view_age)
        metrics.gauge("consul_watched_services", lambda: len(self._services))
        # Watches whose first read has arrived: with --consul-watch-all, equal
        # to consul_watched_services once the whole catalog is in memory.
        metrics.gauge(
            "consul_services_loaded",
            lambda: sum(1 for w in self._services.values() if w.instances is not None),
        )
        metrics.gauge("consul_watched_datacenters", lambda: len(self._dcs))
        metrics.gauge("consul_cached_queries", lambda: len(self._queries))
        # Watches queued for a blocking-read slot (see MAX_BLOCKING_READS).
        metrics.gauge("consul_watches_waiting_for_slot", lambda: self._slot_waiters)

    @property
    def reachable(self) -> bool:
        return self._ready() and self._down_since is None

    def view_age(self) -> float:
        """Seconds since the view was last known current (0 while Consul answers)."""
        if not self._ready():
            return self._clock() - self._started_at
        if self._down_since is None:
            return 0.0
        return self._clock() - self._down_since

    # -- the view ---------------------------------------------------------------

    @property
    def _eager(self) -> bool:
        return self._config.consul_watch_all

    def _ready(self) -> bool:
        local = self._dcs.get(self._local)
        return (
            self._datacenters is not None
            and local is not None
            and local.names is not None
            and local.nodes is not None
        )

    def _usable(self) -> bool:
        if not self._ready():
            return False
        if self._down_since is None:
            return True
        return self._clock() - self._down_since <= self._config.consul_view_max_age

    def _require_usable(self) -> None:
        if self._usable():
            return
        if not self._ready():
            raise CatalogUnavailable(f"Consul at {self._address} not reached yet")
        raise CatalogUnavailable(f"Consul view older than {self._config.consul_view_max_age:g}s")

    def _build(self) -> Snapshot:
        usable = self._usable()
        return build_snapshot(
            static=self._static,
            services=self._service_entries() if usable else {},
            names=self._names() if usable else {},
            datacenters=self._datacenters if usable else None,
            nodes=self._all_nodes() if usable else {},
            queries={k: q.result for k, q in self._queries.items()} if usable else {},
            # Static names keep answering while Consul's part is unusable;
            # the others are fetched, which fails: SERVFAIL.
            available=usable or self._static is not None,
            on_lookup=self._touch,
        )

    def _service_entries(self) -> dict[Key, tuple[Instance, ...]]:
        return {k: w.instances for k, w in self._services.items() if w.instances is not None}

    def _names(self) -> dict[str, frozenset[str]]:
        return {dc: s.names for dc, s in self._dcs.items() if s.names is not None}

    def _all_nodes(self) -> dict[Key, Node]:
        if self._nodes_cache is None:
            self._nodes_cache = {
                (dc, name): node
                for dc, state in self._dcs.items()
                for name, node in (state.nodes or {}).items()
            }
        return self._nodes_cache

    def _touch(self, key: Key) -> None:
        """Called by the snapshot on every service lookup (idle unwatch)."""
        watch = self._services.get(key)
        if watch is not None:
            watch.last_used = self._clock()

    def _changed(self) -> None:
        """Something in the view changed: swap once this loop iteration is done."""
        self._dirty = True
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """One swap for everything that changed meanwhile.

        A swap rebuilds the whole view (O(services)); when many changes come
        at once (thousands of first queries, a big registration) swaps are
        spaced by twice the time the last one took, so rebuilding never takes
        more than a third of the loop, and a small catalog still swaps at once.
        """
        if self._flush_scheduled or self._loop is None:
            return
        self._flush_scheduled = True
        delay = self._next_flush_at - self._loop.time()
        if delay > 0:
            self._loop.call_later(delay, self._scheduled_flush)
        else:
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        if self._dirty:
            self._dirty = False
            started = time.perf_counter()
            self._snapshot = self._build()
            spent = time.perf_counter() - started
            if self._loop is not None:
                self._next_flush_at = self._loop.time() + 2 * spent
            self.stats["view_swaps"] += 1
            log.debug(
                "view swapped: available %s, %d services watched",
                self._snapshot.available,
                len(self._services),
            )
            for callback in self._callbacks:
                try:
                    callback()
                except Exception:  # one broken listener must not stop the others
                    log.exception("catalog change callback failed")
        # First queries waiting for a service read the new snapshot next.
        released, self._released = self._released, []
        for waiter in released:
            if not waiter.done():
                waiter.set_result(None)

    def _release_waiters(self, watch: _ServiceWatch) -> None:
        """The watch has data: its first queries go on after the next swap."""
        self._released.extend(watch.waiters)
        watch.waiters.clear()
        self._schedule_flush()

    # -- liveness ---------------------------------------------------------------

    def _mark_up(self) -> None:
        if self._down_since is None:
            return
        log.info("Consul at %s reachable again after %.1fs", self._address, self.view_age())
        self._down_since = None
        if self._age_timer is not None:
            self._age_timer.cancel()
            self._age_timer = None
        # Watchers sleeping in backoff retry now, so the view is current again
        # within a round trip rather than within the longest backoff. Their
        # errors are from the outage: a first query now waits for that retry
        # (bounded by the first-query timeout) instead of failing at once.
        for watch in self._services.values():
            watch.last_error = None
        self._wakeup.set()
        self._wakeup = asyncio.Event()
        self._changed()

    def _mark_down(self, reason: str) -> None:
        if self._down_since is not None:
            return
        self._down_since = self._clock()
        self._probe_now.set()  # the probe retries every second until Consul is back
        if not self._ready():
            log.warning("Consul at %s not reachable (%s); retrying", self._address, reason)
            return
        log.warning(
            "Consul at %s not reachable (%s): answering from the last good view for up to %gs",
            self._address,
            reason,
            self._config.consul_view_max_age,
        )
        self._age_timer = self._running_loop().call_later(
            self._config.consul_view_max_age + 0.01, self._view_expired
        )

    def _view_expired(self) -> None:
        self._age_timer = None
        if self._down_since is not None:
            log.error(
                "Consul away for %.1fs, longer than consul_view_max_age: catalog answers SERVFAIL",
                self.view_age(),
            )
            self._changed()

    async def _nap(self, delay_s: float) -> None:
        """Sleeps ``delay_s``, or less if Consul comes back meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._wakeup.wait()

    # -- HTTP -------------------------------------------------------------------

    async def _request(
        self, path: str, params: list[tuple[str, str]], timeout_s: float, *, local: bool
    ) -> HTTPResult:
        """One GET; ``local`` requests also tell whether Consul is reachable.

        Failures of remote-datacenter requests say nothing about the local
        agent, so they never make the local view go stale.
        """
        self.stats["http_requests"] += 1
        try:
            result = await self._http.get(path, params, timeout_s)
        except ConsulTransportError as exc:
            self.stats["http_errors"] += 1
            if local:
                self._mark_down(str(exc))
            raise
        log.debug(
            "GET %s %s: %d, index %s, %d bytes",
            path,
            params,
            result.status,
            result.index,
            len(result.body),
        )
        if result.status == 200:
            self._mark_up()
            self._check_acl_filtering(path, result)
            return result
        self.stats["http_errors"] += 1
        error = status_error(result.status, result.body)
        if result.status < 500 or isinstance(error, UnknownDatacenter):
            self._mark_up()  # Consul answered: it is there
        elif local:
            self._mark_down(str(error))
        if result.status == 403 and not self._denied_logged:
            self._denied_logged = True
            log.error("Consul denied %s: %s", path, ACL_HINT)
        raise error

    def _check_acl_filtering(self, path: str, result: HTTPResult) -> None:
        """Silent ACL filtering looks like "no such service": say so, once."""
        if self._filtered_logged:
            return
        if result.filtered:
            self._filtered_logged = True
            log.warning("Consul filtered the answer to %s by ACLs: %s", path, ACL_HINT)
        elif result.default_deny and not self._config.consul_token:
            self._filtered_logged = True
            log.warning("Consul's default ACL policy is deny and no token is set: %s", ACL_HINT)

    async def _read(
        self, path: str, dc: str, *, index: int = 0, slotted: bool = False
    ) -> HTTPResult:
        """A stale read, blocking when ``index``; ``slotted`` ones take a slot first.

        Service watches are slotted; the few per-datacenter list watches are
        not, so they never queue behind service watches.
        """
        if not index:
            return await self._read_once(path, dc, index=0, wait=0.0)
        if not slotted:
            return await self._read_once(path, dc, index=index, wait=self._config.consul_wait)
        self._slot_waiters += 1
        try:
            await self._blocking_slots.acquire()
        finally:
            self._slot_waiters -= 1
        try:
            if len(self._services) > MAX_BLOCKING_READS:
                wait = min(self._config.consul_wait, SHARED_SLOT_WAIT_S)
                return await self._read_once(path, dc, index=index, wait=wait)
            return await self._long_read(path, dc, index)
        finally:
            self._blocking_slots.release()

    async def _long_read(self, path: str, dc: str, index: int) -> HTTPResult:
        """A blocking read of the full consul_wait, which _share_slots may cut short."""
        wait = self._config.consul_wait
        read = self._running_loop().create_task(self._read_once(path, dc, index=index, wait=wait))
        self._long_reads.add(read)
        try:
            return await read
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if read.cancelled() and current is not None and not current.cancelling():
                raise _Rearm() from None  # cut short, not stopped
            raise
        finally:
            self._long_reads.discard(read)

    def _share_slots(self) -> None:
        """More watches than slots now: full-length reads give way once.

        Otherwise the watches queued behind them would wait a whole
        consul_wait before the slots start going round.
        """
        for read in list(self._long_reads):
            read.cancel()

    async def _read_once(self, path: str, dc: str, *, index: int, wait: float) -> HTTPResult:
        """One read; one more of the leader when the answer is too stale."""
        timeout = wait + wait / 16 + BLOCKING_MARGIN_S if index else REQUEST_TIMEOUT_S
        local = dc == self._local
        result = await self._request(
            path, read_params(dc, index=index, wait_s=wait), timeout, local=local
        )
        if too_stale(result.last_contact_ms, self._config.consul_max_stale):
            self.stats["stale_retries"] += 1
            params = read_params(dc, index=index, wait_s=wait, stale=False)
            result = await self._request(path, params, timeout, local=local)
        return result

    async def _watch(
        self,
        path: str,
        dc: str,
        *,
        on_data: Callable[[Any], None],
        on_unknown_dc: Callable[[], None],
        on_error: Callable[[str], None],
        slotted: bool = False,
    ) -> None:
        """Blocking queries on ``path``, one after the other, until cancelled."""
        index = 0
        backoff = Backoff(rng=self._rng)
        while True:
            try:
                result = await self._read(path, dc, index=index, slotted=slotted)
                # Same index: the wait ran out with nothing new; skip parsing.
                if index == 0 or result.index != index:
                    on_data(decode(result))
                seen = result.index or 0
                # Not kept across the next blocking read: bodies are ~1 KB per
                # instance, and thousands of watches wait at once.
                del result
            except _Rearm:
                continue  # same index, shorter wait
            except UnknownDatacenter:
                on_unknown_dc()
            except (ConsulError, BadResponse) as exc:
                on_error(str(exc))
            except Exception as exc:  # a bug must not freeze this part of the view
                log.exception("watching %s failed", path)
                on_error(f"internal error: {exc!r}")
            else:
                backoff.reset()
                index = next_index(index, seen)
                continue
            # After any failure start over with a plain read: a restarted
            # cluster's index can be lower than ours, and blocking on ours
            # would hold the first fresh answer back for a whole wait.
            index = 0
            await self._nap(backoff.next())

    # -- datacenters --------------------------------------------------------------

    async def _datacenters_loop(self) -> None:
        backoff = Backoff(maximum_s=PROBE_BACKOFF_MAX_S, rng=self._rng)
        while True:
            try:
                result = await self._request(
                    "/v1/catalog/datacenters", [], REQUEST_TIMEOUT_S, local=True
                )
                self._set_datacenters(datacenter_names(decode(result)))
            except (ConsulError, BadResponse) as exc:
                log.debug("datacenter list: %s", exc)
                await self._nap(backoff.next())
                continue
            backoff.reset()
            self._probe_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DATACENTERS_POLL_S):
                    await self._probe_now.wait()

    def _set_datacenters(self, names: frozenset[str]) -> None:
        if names == self._datacenters:
            return
        if self._local not in names:
            log.warning(
                "datacenter %r (option 'datacenter') is not one Consul knows: %s",
                self._local,
                ", ".join(sorted(names)),
            )
        self._datacenters = names
        # Every datacenter is watched: a <node>.node.<dc> lookup has no
        # "fetch first" step, so its nodes must be known beforehand.
        for dc in names:
            self._ensure_datacenter(dc)
        for dc in [dc for dc in self._dcs if dc not in names and dc != self._local]:
            self._drop_datacenter(dc)
        self._changed()

    def _ensure_datacenter(self, dc: str) -> None:
        if dc in self._dcs:
            return
        state = _Datacenter(dc)
        self._dcs[dc] = state
        state.tasks = [
            self._spawn(
                self._watch(
                    "/v1/catalog/services",
                    dc,
                    on_data=lambda body: self._set_names(state, service_names(body)),
                    on_unknown_dc=lambda: self._set_names(state, frozenset()),
                    on_error=lambda reason: log.debug("services of %s: %s", dc, reason),
                ),
                f"services of {dc}",
            ),
            self._spawn(
                self._watch(
                    "/v1/catalog/nodes",
                    dc,
                    on_data=lambda body: self._set_nodes(state, nodes_from_catalog(body, dc)),
                    on_unknown_dc=lambda: self._set_nodes(state, {}),
                    on_error=lambda reason: log.debug("nodes of %s: %s", dc, reason),
                ),
                f"nodes of {dc}",
            ),
        ]

    def _drop_datacenter(self, dc: str) -> None:
        state = self._dcs.pop(dc)
        for task in state.tasks:
            task.cancel()
        for key in [k for k in self._services if k[0] == dc]:
            self._stop_service(key)
        self._nodes_cache = None

    def _set_names(self, state: _Datacenter, names: frozenset[str]) -> None:
        if names == state.names:
            return
        state.names = names
        # A watched service that left the list is gone: the list answers it.
        for key in [k for k in self._services if k[0] == state.name and k[1] not in names]:
            self._stop_service(key)
        if self._eager and state.name == self._local:
            for name in names:
                self._ensure_service(state.name, name, eager=True)
        self._changed()

    def _set_nodes(self, state: _Datacenter, nodes: dict[str, Node]) -> None:
        if nodes == state.nodes:
            return
        state.nodes = nodes
        self._nodes_cache = None
        self._changed()

    # -- services -----------------------------------------------------------------

    def _ensure_service(self, dc: str, name: str, *, eager: bool) -> _ServiceWatch:
        key = (dc, name)
        watch = self._services.get(key)
        if watch is not None:
            watch.eager = watch.eager or eager
            return watch
        watch = _ServiceWatch(key, eager, self._clock())
        self._services[key] = watch
        if len(self._services) > MAX_BLOCKING_READS and self._long_reads:
            self._share_slots()
        watch.task = self._spawn(
            self._watch(
                f"/v1/health/service/{name}",
                dc,
                on_data=lambda body: self._set_instances(watch, instances_from_health(body, dc)),
                on_unknown_dc=lambda: self._set_instances(watch, ()),
                on_error=lambda reason: self._service_failed(watch, reason),
                slotted=True,
            ),
            f"service {name}.{dc}",
        )
        return watch

    def _set_instances(self, watch: _ServiceWatch, instances: tuple[Instance, ...]) -> None:
        watch.last_error = None
        if instances != watch.instances:
            watch.instances = instances
            self._changed()
        if watch.waiters:
            self._release_waiters(watch)

    def _service_failed(self, watch: _ServiceWatch, reason: str) -> None:
        watch.last_error = reason
        log.debug("service %s.%s: %s", watch.key[1], watch.key[0], reason)
        self._fail_waiters(watch, reason)

    def _fail_waiters(self, watch: _ServiceWatch, reason: str) -> None:
        for waiter in watch.waiters:
            if not waiter.done():
                waiter.set_exception(CatalogUnavailable(f"service {watch.key[1]}: {reason}"))
        watch.waiters.clear()

    def _stop_service(self, key: Key) -> None:
        watch = self._services.pop(key)
        if watch.task is not None:
            watch.task.cancel()
        self._changed()
        if watch.waiters:
            # Only a service that left Consul's lists is stopped while a first
            # query waits (idle ones have no waiters): the view now answers it.
            self._release_waiters(watch)

    async def _janitor(self) -> None:
        period = min(self._config.consul_idle_unwatch / 4, IDLE_SWEEP_MAX_S)
        while True:
            await asyncio.sleep(period)
            self._unwatch_idle()

    def _unwatch_idle(self) -> None:
        cutoff = self._clock() - self._config.consul_idle_unwatch
        for key, watch in list(self._services.items()):
            if not watch.eager and not watch.waiters and watch.last_used < cutoff:
                log.debug("unwatching idle service %s.%s", key[1], key[0])
                self._stop_service(key)

    # -- prepared queries ---------------------------------------------------------

    async def _execute_query(self, dc: str, name: str) -> None:
        self.stats["query_executions"] += 1
        lifetime = MIN_QUERY_CACHE_S
        try:
            result = await self._read(f"/v1/query/{name}/execute", dc)
            prepared = prepared_result(decode(result), dc)
            lifetime = max(float(prepared.ttl or 0), MIN_QUERY_CACHE_S)
        except UnknownDatacenter:
            prepared = PreparedResult((), None, dc)
        except ConsulStatusError as exc:
            if exc.status != 404:  # 404: no such query, NXDOMAIN
                raise CatalogUnavailable(f"prepared query {name}: {exc}") from None
            prepared = PreparedResult((), None, dc)
        except (ConsulError, BadResponse) as exc:
            raise CatalogUnavailable(f"prepared query {name}: {exc}") from None
        self._store_query((dc, name), prepared, lifetime)

    def _store_query(self, key: Key, result: PreparedResult, lifetime_s: float) -> None:
        self._queries[key] = _CachedQuery(result, self._clock() + lifetime_s)
        self._schedule_query_expiry()
        self._changed()

    def _query_done(self, key: Key, task: asyncio.Task[None]) -> None:
        self._query_fetches.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: the callers got it through the shield

    def _schedule_query_expiry(self) -> None:
        if self._query_timer is not None:
            self._query_timer.cancel()
            self._query_timer = None
        if not self._queries:
            return
        soonest = min(q.expires for q in self._queries.values())
        delay = max(0.0, soonest - self._clock())
        self._query_timer = self._running_loop().call_later(delay, self._expire_queries)

    def _expire_queries(self) -> None:
        self._query_timer = None
        if self._down_since is not None:
            # Consul is away: keep the results (last good view) until it is back.
            self._query_timer = self._running_loop().call_later(
                OUTAGE_RECHECK_S, self._expire_queries
            )
            return
        now = self._clock()
        expired = [k for k, q in self._queries.items() if q.expires <= now]
        for key in expired:
            del self._queries[key]
        if expired:
            self._changed()
        self._schedule_query_expiry()

    # -- tasks --------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _spawn(self, coro: Coroutine[Any, Any, None], label: str) -> asyncio.Task[None]:
        task = self._running_loop().create_task(coro, name=f"consul {label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
