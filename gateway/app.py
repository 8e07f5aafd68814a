"""Wiring, start-up and shutdown of one gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import dns.name

from gateway import metrics as m
from gateway.background import SerialJob
from gateway.cache.store import CachePolicy, ForwardCache
from gateway.catalog import static as static_catalog
from gateway.catalog.model import Snapshot
from gateway.catalog.source import CatalogSource, StaticSource
from gateway.errors import StartupError
from gateway.forward.forwarder import Forwarder, Mode, UpstreamStats
from gateway.forward.resolv import ResolvWatcher, standard_upstreams
from gateway.forward.rules import ForwardRules, build_rules
from gateway.hosts import watch as hosts_watch
from gateway.hosts.table import HostsTable
from gateway.metrics import Metrics, serve_http
from gateway.options import Config, ConfigError, Endpoint
from gateway.server import batchio, interfaces
from gateway.server.access import AccessPolicy
from gateway.server.querylog import QueryLog
from gateway.server.ratelimit import ResponseRateLimiter, UdpLimits
from gateway.server.resolver import Resolver
from gateway.server.tcp_limits import TcpLimits
from gateway.server.transport import (
    Gate,
    TcpListener,
    TcpServer,
    UdpListener,
    bind_pair,
    tune_udp,
)
from gateway.service import privileges, reload, systemd
from gateway.service.reload import ConfigSources
from gateway.service.systemd import Notifier
from gateway.zones import zone as zones

log = logging.getLogger("gateway")

# A replaced forwarder is closed this long after its --forward-deadline, by
# which every query it sent has had its answer or SERVFAIL.
RETIRE_MARGIN_S = 1.0
# Shutdown: how often the count of queries in flight is looked at, and the
# least time TCP clients get to read their last replies.
STOP_POLL_S = 0.02
TCP_CLOSE_MIN_S = 0.5
# systemd shows STATUS= in one line of `systemctl status`.
STATUS_MAX_CHARS = 200
# The signals that stop (TERM, INT) and reload (HUP) the gateway.
CONTROL_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def read_catalog(config: Config) -> Snapshot:
    """The static catalog files (``--catalog`` must be set)."""
    assert config.catalog is not None
    return static_catalog.load(config.catalog, config.datacenter, config.domains)


def read_zones(config: Config) -> dict[dns.name.Name, zones.Zone]:
    """The zone files (none without ``--zones``)."""
    if config.zones is None:
        return {}
    return zones.load_zones(config.zones, allow_include=config.zone_include)


def build_source(
    config: Config, static: Snapshot | None, watcher: socket.socket | None = None
) -> CatalogSource:
    """The catalog: static files, Consul layered over them (``static``: the ``--catalog``
    files), or (``watcher``) the shared watcher's view (``--workers`` with Consul)."""
    if watcher is not None:
        from gateway.consul.shared import SharedSource

        return SharedSource(watcher)
    if config.consul is None:
        return StaticSource(static or _empty_catalog(config))
    from gateway.consul.source import ConsulSource  # only needed (and imported) with Consul

    source: CatalogSource = ConsulSource(config, static=static)
    return source


def _reads_catalog(config: Config, watcher: socket.socket | None) -> bool:
    """Whether this process reads ``--catalog``: not a worker the shared watcher feeds."""
    return config.catalog is not None and watcher is None


def _empty_catalog(config: Config) -> Snapshot:
    return Snapshot(datacenters=frozenset({config.datacenter}))


def replace_catalog(source: CatalogSource, config: Config, static: Snapshot | None) -> None:
    """Newly read ``--catalog`` files into the running source (reload)."""
    if isinstance(source, StaticSource):
        source.replace(static or _empty_catalog(config))
        return
    from gateway.consul.source import ConsulSource  # imported only with Consul

    if isinstance(source, ConsulSource):
        source.replace_static(static)


@dataclass(frozen=True)
class Answering:
    """What one configuration answers with; a reload builds another and swaps it in.

    The catalog source and the metrics outlive it (Consul's watches are not
    rebuilt); the cache too, when its policy is unchanged.
    """

    config: Config
    resolver: Resolver
    forwarder: Forwarder | None
    cache: ForwardCache
    gate: Gate
    tcp_limits: TcpLimits
    zone_set: dict[dns.name.Name, zones.Zone]
    domain_forwarders: tuple[Forwarder, ...] = ()  # --server=/domain/... upstream sets
    resolv_watcher: ResolvWatcher | None = None  # --poll-resolv
    upstream_stats: dict[str, UpstreamStats] = field(default_factory=dict)

    @property
    def forwarders(self) -> tuple[Forwarder, ...]:
        main = (self.forwarder,) if self.forwarder is not None else ()
        return main + self.domain_forwarders

    @property
    def in_flight(self) -> int:
        """Queries whose reply is still to come (upstream queries, catalog fetches)."""
        return sum(f.inflight for f in self.forwarders) + self.resolver.in_flight

    def start(self) -> None:
        """Starts what runs beside answering (polling the resolv file)."""
        if self.resolv_watcher is not None:
            self.resolv_watcher.start()

    def close_forwarders(self) -> None:
        """Queries still out get SERVFAIL; the upstream sockets close."""
        if self.resolv_watcher is not None:
            self.resolv_watcher.close()
        for forwarder in self.forwarders:
            forwarder.close()

    def gate_for(self, host: str) -> Gate | None:
        """The gate for a UDP listener on ``host``; None for loopback-only ones.

        --log-queries: every listener takes the gate, which hands out the
        logging answer functions (no test per query when it is off).
        """
        checked = self.config.log_queries or self.gate.policy.checks_listener(host)
        return self.gate if checked else None


def _cache_policy(config: Config) -> CachePolicy:
    return CachePolicy(
        max_entries=config.cache_size,
        min_ttl=config.cache_min_ttl,
        max_ttl=config.cache_max_ttl,
        negative_max_ttl=config.cache_negative_max_ttl,
        serve_stale=config.serve_stale,
        stale_answer_ttl=config.stale_answer_ttl,
        max_bytes=config.cache_max_bytes,
        neg_ttl=config.neg_ttl,
        negcache=config.negcache,
        client_max_ttl=config.max_ttl,
    )


def build_answering(
    config: Config,
    source: CatalogSource,
    zone_set: dict[dns.name.Name, zones.Zone],
    hosts: HostsTable,
    metrics: Metrics,
    *,
    previous: Answering | None = None,
    log_it: bool = True,
) -> Answering:
    """The resolver and its parts for ``config``; ConfigError for a zone that clashes.

    ``hosts``: the hosts files' table to answer from (the hosts watch of
    ``Server`` keeps it up to date).

    ``previous``: the answering being replaced (reload), whose cache is kept
    when the cache options did not change.
    """
    loop = asyncio.get_running_loop()
    assert config.upstream is not None
    rules = forward_rules(config)
    standard = standard_upstreams(config.upstream, rules.default_servers)
    watch = config.resolv and config.poll_resolv
    # One upstream's figures, whichever forwarders ask it (per-domain upstreams),
    # kept across reloads: the counters go on, the metric family is made once.
    upstream_stats = previous.upstream_stats if previous is not None else {}
    forwarder = _forwarder(config, standard, upstream_stats) if standard or watch else None
    domain_forwarders = tuple(
        _forwarder(config, servers, upstream_stats) for servers in rules.upstream_sets[1:]
    )
    policy = _cache_policy(config)
    if previous is not None and _cache_policy(previous.config) == policy:
        cache = previous.cache
    else:
        cache = ForwardCache(policy, clock=time.monotonic)
    try:
        resolver = Resolver(
            config,
            source=source,
            zone_set=zone_set,
            forwarder=forwarder,
            cache=cache,
            metrics=metrics,
            rng=random.Random(),
            call_later=loop.call_later,
            rules=rules,
            domain_upstreams=domain_forwarders,
            hosts=hosts,
        )
    except ValueError as exc:  # a zone that is also the Consul domain
        for made in (forwarder, *domain_forwarders):
            if made is not None:
                made.close()
        raise ConfigError(f"option 'zones' ({config.zones}): {exc}") from None
    _wire_metrics(metrics, cache, forwarder, upstream_stats, families=previous is None)
    metrics.gauge("hosts_names", lambda: resolver.hosts_names)
    resolv_watcher = None
    if watch and forwarder is not None:
        resolv_watcher = ResolvWatcher(
            config.resolv_file, config.listen, rules.default_servers, forwarder.replace_upstreams
        )
        metrics.gauge("resolv_reloads", lambda: resolv_watcher.reloads if resolv_watcher else 0)
    gate = _gate(config, resolver, metrics, log_it=log_it)
    return Answering(
        config, resolver, forwarder, cache, gate, TcpLimits.from_config(config), zone_set,
        domain_forwarders, resolv_watcher, upstream_stats,
    )  # fmt: skip


async def serve(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    worker: int = 0,
    sources: ConfigSources | None = None,
    sockets: Sequence[socket.socket] = (),
    notifier: Notifier | None = None,
    watcher: socket.socket | None = None,
) -> None:
    """Runs until SIGTERM/SIGINT (or cancellation).

    ``sources``: how ``config`` was made, read again on SIGHUP (None:
    ``config`` stays as it is and SIGHUP reads its files again).
    ``sockets``: passed by systemd, served instead of binding ``--listen``.
    ``watcher``: connects to the process that watches Consul for every worker.
    """
    metrics = Metrics()
    files = read_files(config, with_catalog=_reads_catalog(config, watcher))
    source = build_source(config, files.catalog, watcher)
    hosts = hosts_watch.read_all(hosts_watch.paths(config), config.local_ttl)
    answering = build_answering(
        config, source, files.zone_set, hosts.table, metrics, log_it=worker == 0
    )
    tcp = TcpServer(answering.resolver, answering.tcp_limits, gate=answering.gate)
    metrics.gauge("tcp_connections", lambda: tcp.connections, "Open client TCP connections.")
    metrics.gauge(
        "tcp_queued_bytes", lambda: tcp.queued_bytes, "Reply bytes queued for TCP clients."
    )
    if hasattr(source, "register_metrics"):
        source.register_metrics(metrics)
    server = Server(answering, source, tcp, metrics, notifier or Notifier(None), worker, hosts)
    await server.run(sources, sockets, ready)


def forward_rules(config: Config) -> ForwardRules:
    """dnsmasq's rules of the configuration as one table (pure)."""
    return build_rules((*config.server, *config.rev_server, *config.local), config.address)


def _forwarder(
    config: Config, upstreams: tuple[Endpoint, ...], upstream_stats: dict[str, UpstreamStats]
) -> Forwarder:
    mode = Mode.STRICT if config.strict_order else Mode.ALL if config.all_servers else Mode.ORDERED
    return Forwarder(
        asyncio.get_running_loop(),
        upstreams,
        timeout=config.forward_timeout,
        deadline=config.forward_deadline,
        max_inflight=config.forward_max_inflight,
        mode=mode,
        upstream_stats=upstream_stats,
    )


def _gate(config: Config, resolver: Resolver, metrics: Metrics, *, log_it: bool) -> Gate:
    """Access control and UDP limits, from the options and this machine's interfaces."""
    try:
        addresses = interfaces.read_addresses()
    except OSError as exc:
        # Fail closed: `local` is then loopback only.
        log.warning("cannot read interface addresses (%s): `local` means loopback only", exc)
        addresses = []
    policy = AccessPolicy.from_config(config, addresses)
    limiter = (
        ResponseRateLimiter(
            config.rate_limit, config.rate_limit_window, config.rate_limit_slip, time.monotonic
        )
        if config.rate_limit
        else None
    )
    if log_it:
        rate = (
            f"{config.rate_limit}/s per /24 and /56 (window {config.rate_limit_window:g} s, "
            f"slip {config.rate_limit_slip})"
            if config.rate_limit
            else "off"
        )
        amplification = f"{config.max_amplification}x" if config.max_amplification else "off"
        log.info(
            "access: %s; others %s; UDP rate limit %s, amplification bound %s%s",
            policy.describe(),
            "refused" if config.refuse_action == "refuse" else "dropped",
            rate,
            amplification,
            "" if config.limit_loopback else " (not for loopback)",
        )
    if limiter is not None:
        metrics.gauge(
            "rrl_accounts", lambda: len(limiter), "Client networks the rate limiter tracks."
        )
    limits = UdpLimits(limiter, config.max_amplification, metrics.counters)
    querylog = QueryLog(resolver) if config.log_queries else None
    return Gate(
        resolver, policy, limits, drop_denied=config.refuse_action == "drop", querylog=querylog
    )


def _wire_metrics(
    metrics: Metrics,
    cache: ForwardCache,
    forwarder: Forwarder | None,
    upstream_stats: dict[str, UpstreamStats],
    *,
    families: bool,
) -> None:
    """The gauges of these parts (a reload's replace the old ones by name); ``families``:
    also the per-upstream families, made once (they read ``upstream_stats`` as it grows)."""
    metrics.gauge("cache_entries", lambda: len(cache), "Forwarded answers in the cache.")
    metrics.gauge("cache_bytes", lambda: cache.bytes, "Estimated bytes of the cached answers.")
    metrics.counter(
        "cache_evictions", lambda: cache.evicted, "Cached answers evicted to stay within bounds."
    )
    if forwarder is not None:
        metrics.gauge(
            "forward_inflight", lambda: forwarder.inflight, "Questions waiting for an upstream."
        )
        for name in forwarder.stats:
            metrics.counter(f"forward_{name}", lambda n=name: forwarder.stats[n])  # type: ignore[misc]
    if families:
        metrics.family(lambda: _upstream_families(upstream_stats))


def _upstream_families(upstream_stats: dict[str, UpstreamStats]) -> list[m.Metric]:
    """Per-upstream queries, answers, failures and round-trip times."""
    stats = [upstream_stats[name] for name in sorted(upstream_stats)]
    return [
        m.counter_family(
            "upstream_queries",
            "Queries sent to each upstream, by transport.",
            ("upstream", "transport"),
            [((u.name, "udp"), u.udp_queries) for u in stats]
            + [((u.name, "tcp"), u.tcp_queries) for u in stats],
        ),
        m.counter_family(
            "upstream_answers",
            "Usable answers from each upstream.",
            ("upstream",),
            [((u.name,), u.answers) for u in stats],
        ),
        m.counter_family(
            "upstream_failures",
            "Upstream queries that gave no usable answer, by reason.",
            ("upstream", "reason"),
            [
                ((u.name, reason), count)
                for u in stats
                for reason, count in (
                    ("timeout", u.timeouts),
                    ("error_reply", u.error_replies),
                    ("malformed", u.malformed),
                    ("send_error", u.send_errors),
                )
            ],
        ),
        m.histogram_family(
            "upstream_rtt_seconds",
            "Time from sending a query to an upstream to its usable answer.",
            ("upstream",),
            [((u.name,), u.rtt) for u in stats],
        ),
    ]


def _describe_upstreams(forwarder: Forwarder | None) -> str:
    upstreams = forwarder.upstreams if forwarder is not None else ()
    return ", ".join(str(u) for u in upstreams) or "none (forwarding answers SERVFAIL)"


@dataclass(frozen=True)
class Files:
    """What a reload reads: the zones, the static catalog files' snapshot, and the
    hosts files when a reload changes which (None: the running hosts table stays)."""

    zone_set: dict[dns.name.Name, zones.Zone]
    catalog: Snapshot | None
    hosts: hosts_watch.Reading | None = None


def read_files(config: Config, with_catalog: bool) -> Files:
    """Reads every file the configuration names; raises StartupError naming a bad one."""
    return Files(read_zones(config), read_catalog(config) if with_catalog else None)


@dataclass(frozen=True)
class Bound:
    """The sockets of one listen address (either may be missing when systemd passed them)."""

    host: str
    udp: socket.socket | None
    tcp: socket.socket | None


def bind_all(config: Config, passed: Sequence[socket.socket]) -> list[Bound]:
    """The sockets to serve on: those systemd passed, else ``--listen`` bound now."""
    if not passed:
        bound: list[Bound] = []
        try:
            for ep in config.listen:
                udp, tcp = bind_pair(ep.host, ep.port, reuse_port=config.workers > 1)
                bound.append(Bound(ep.host, udp, tcp))
        except BaseException:
            for b in bound:
                for sock in (b.udp, b.tcp):
                    if sock is not None:
                        sock.close()
            raise
        return bound
    result = []
    for sock in passed:
        host = systemd.endpoint_of(sock).host
        if sock.type == socket.SOCK_DGRAM:
            tune_udp(sock)
            result.append(Bound(host, sock, None))
        else:
            result.append(Bound(host, None, sock))
    return result


class Server:
    """One process's listeners around the current :class:`Answering`: start, reload, stop."""

    def __init__(
        self,
        answering: Answering,
        source: CatalogSource,
        tcp: TcpServer,
        metrics: Metrics,
        notifier: Notifier,
        worker: int,
        hosts: hosts_watch.Reading,
    ) -> None:
        """``hosts``: the hosts files as read for ``answering``."""
        self.answering = answering
        self.source = source
        self.tcp = tcp
        self.metrics = metrics
        self.notifier = notifier
        self.worker = worker
        self.udp: list[tuple[str, UdpListener]] = []
        self.tcp_listeners: list[TcpListener] = []
        self.endpoints: list[Endpoint] = []
        # Replaced answerings whose forwarders may still have queries out.
        self.retired: list[Answering] = []
        self._watchdog: asyncio.TimerHandle | None = None
        # /ready: listeners open and the catalog source started; no longer once stopping.
        self._serving = False
        metrics.readiness("listeners", lambda: self._serving)
        # The hosts files: their table, kept for the resolver a reload builds, and
        # their watch, which outlives reloads that keep the files and the TTL.
        self.hosts_table = hosts.table
        self.hosts = self._watch_hosts(answering.config, hosts.seen)
        # UDP I/O: batched through the compiled helper, or the Python loop. Chosen
        # once: listeners keep it across reloads (``udp_batch`` needs a restart).
        self.batch, udp_path = batchio.choose(answering.config.udp_batch)
        metrics.gauge(
            "udp_batch_io",
            lambda: 1 if self.batch is not None else 0,
            "1 when UDP is read and answered in batches (recvmmsg/sendmmsg), 0 for the Python loop",
        )
        if worker == 0:
            log.info("UDP I/O: %s", udp_path)

    @property
    def config(self) -> Config:
        return self.answering.config

    async def run(
        self,
        sources: ConfigSources | None,
        passed: Sequence[socket.socket],
        ready: asyncio.Event | None,
    ) -> None:
        """Binds, drops privileges, serves until SIGTERM/SIGINT, then stops gracefully."""
        loop = asyncio.get_running_loop()
        config = self.config
        http_servers: list[asyncio.Server] = []
        stop = asyncio.Event()
        # Without sources (in-process use) a reload keeps the configuration, rereads files.
        load = sources.load if sources is not None else lambda: config
        reloader = Reloader(load, config, self.apply, self.notifier, lambda: self.hosts.reload())
        try:
            bound = bind_all(config, passed)
            if config.metrics_listen is not None:
                # Each worker has its own counters: worker i serves them on PORT + i.
                mhost, mport = config.metrics_listen.host, config.metrics_listen.port
                mport = mport + self.worker if mport else 0
                http_servers.append(await serve_http(self.metrics, mhost, mport))
                log.info(
                    "metrics of worker %d on http://%s:%d/metrics (and /health, /ready)",
                    self.worker,
                    mhost,
                    mport,
                )
            if config.user is not None:
                # Every socket is bound and nothing has been read from one yet.
                privileges.drop(privileges.resolve(config.user, config.group))
            self._listen(bound, from_systemd=bool(passed))
            await self.source.start()
            self.answering.start()
            self.hosts.start()
            self._serving = True
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, reloader.request)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, CONTROL_SIGNALS)  # see _fork
            # Start-up objects (zones, static catalog, modules) never die: freeze
            # them out of the cyclic GC so its full passes stay short under load.
            gc.collect()
            gc.freeze()
            await self._first_view()
            self._ready(ready)
            await stop.wait()
            reloader.close()  # a SIGHUP while stopping changes nothing any more
            await self.stop()
        finally:
            reloader.close()
            self.hosts.close()
            if self._watchdog is not None:
                self._watchdog.cancel()
            for _, udp in self.udp:
                udp.close()
            for listener in self.tcp_listeners:
                listener.close()
            self.tcp.close()
            for http in http_servers:
                http.close()
            for answering in (self.answering, *self.retired):
                await answering.resolver.close()
                answering.close_forwarders()
            await self.source.stop()
            self.notifier.close()

    def _listen(self, bound: list[Bound], *, from_systemd: bool) -> None:
        how = "passed by systemd" if from_systemd else "bound"
        for b in bound:
            if b.udp is not None:
                gate = self.answering.gate_for(b.host)
                self.udp.append(
                    (b.host, UdpListener(self.answering.resolver, b.udp, gate, self.batch))
                )
            if b.tcp is not None:
                self.tcp_listeners.append(TcpListener(self.tcp, b.tcp))
            sock = b.udp or b.tcp
            assert sock is not None
            ep = systemd.endpoint_of(sock)
            if ep not in self.endpoints:
                self.endpoints.append(ep)
            if self.worker == 0:
                kinds = " and ".join(k for k, s in (("UDP", b.udp), ("TCP", b.tcp)) if s)
                log.info("listening on %s (%s, %s)", ep, kinds, how)

    async def _first_view(self) -> None:
        """With Consul: until its first view is in, or the first-query timeout passed."""
        config = self.config
        if config.consul is None or self._view_loaded():
            return
        loaded = asyncio.Event()

        def check() -> None:
            if self._view_loaded():
                loaded.set()

        self.source.on_change(check)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.consul_first_query_timeout):
                await loaded.wait()
        if not loaded.is_set():
            log.warning(
                "no Consul view after %g s: ready anyway (Consul names SERVFAIL until it comes)",
                config.consul_first_query_timeout,
            )

    def _view_loaded(self) -> bool:
        from gateway.consul.source import ConsulSource  # imported only with Consul

        if isinstance(self.source, ConsulSource):
            # Reachable: the datacenters and the local service and node lists are in.
            return self.source.reachable
        # A worker fed by the shared watcher: its first snapshot has come.
        return self.source.snapshot().available

    def _ready(self, ready: asyncio.Event | None) -> None:
        config = self.config
        if self.worker == 0:
            log.info(
                "catalog: %s; zones: %s; upstreams: %s",
                f"consul {config.consul}" if config.consul else f"static {config.catalog}",
                zones.describe(self.answering.zone_set),
                _describe_upstreams(self.answering.forwarder),
            )
            self.notifier.ready(self._status())
            if self.notifier.watchdog_s is not None:
                self._beat()
        if ready is not None:
            ready.set()

    def _status(self) -> str:
        return "serving on " + ", ".join(str(ep) for ep in self.endpoints)

    def _beat(self) -> None:
        """WATCHDOG=1 from the event loop itself: a stuck loop misses it and systemd acts."""
        assert self.notifier.watchdog_s is not None
        self.notifier.watchdog()
        self._watchdog = asyncio.get_running_loop().call_later(self.notifier.watchdog_s, self._beat)

    # -- reload ------------------------------------------------------------------------

    def apply(self, config: Config, files: Files) -> None:
        """Swaps in what ``config`` and ``files`` build; raises (nothing swapped) if they cannot."""
        previous = self.answering
        hosts = files.hosts.table if files.hosts is not None else self.hosts_table
        answering = build_answering(
            config, self.source, files.zone_set, hosts, self.metrics, previous=previous,
            log_it=self.worker == 0,
        )  # fmt: skip
        if files.hosts is not None and answering.cache is previous.cache:
            # Other hosts files: the kept cache must not answer their names from upstream.
            answering.resolver.replace_hosts(files.hosts.table)
        replace_catalog(self.source, config, files.catalog)
        for host, udp in self.udp:
            udp.use(answering.resolver, answering.gate_for(host))
        self.tcp.use(answering.resolver, answering.tcp_limits, answering.gate)
        self.answering = answering
        answering.start()
        if files.hosts is not None:
            # Other hosts files or another TTL: a watch of the new files.
            self.hosts.close()
            self.hosts_table = files.hosts.table
            self.hosts = self._watch_hosts(config, files.hosts.seen)
            self.hosts.start()
        logging.getLogger().setLevel(config.log_level.upper())
        self._retire(previous)

    def _watch_hosts(self, config: Config, seen: hosts_watch.Signature) -> hosts_watch.HostsWatch:
        return hosts_watch.HostsWatch(
            hosts_watch.paths(config), config.local_ttl, self._on_hosts, seen=seen
        )

    def _on_hosts(self, table: HostsTable) -> None:
        """A hosts file changed (or SIGHUP): the answering resolver serves its new table."""
        self.hosts_table = table
        self.answering.resolver.replace_hosts(table)

    def _retire(self, old: Answering) -> None:
        """The replaced forwarder's queries still get their answers; then it is closed."""
        if old.resolv_watcher is not None:
            old.resolv_watcher.close()  # the new answering polls the resolv file now
        self.retired.append(old)
        loop = asyncio.get_running_loop()

        def close() -> None:
            if old in self.retired:
                self.retired.remove(old)
                old.close_forwarders()

        # By its deadline every query it sent has its answer or its SERVFAIL.
        loop.call_later(old.config.forward_deadline + RETIRE_MARGIN_S, close)

    # -- stop --------------------------------------------------------------------------

    async def stop(self) -> None:
        """SIGTERM: stop reading, answer what is in flight, close TCP after its replies."""
        loop = asyncio.get_running_loop()
        config = self.config
        self._serving = False
        self.notifier.stopping("stopping: answering queries in flight")
        for _, udp in self.udp:
            udp.pause()  # the socket stays open for the replies still owed
        for listener in self.tcp_listeners:
            listener.close()
        self.tcp_listeners.clear()
        self.tcp.drain()
        owed = self._in_flight()
        log.info(
            "shutting down: listeners closed; %d queries in flight, %d TCP connections",
            owed,
            self.tcp.connections,
        )
        deadline = loop.time() + config.stop_timeout
        while self._in_flight() and loop.time() < deadline:
            await asyncio.sleep(STOP_POLL_S)
        left = self._in_flight()
        for answering in (self.answering, *self.retired):
            answering.close_forwarders()  # what is still out gets SERVFAIL now
        aborted = await self.tcp.wait_closed(max(deadline - loop.time(), TCP_CLOSE_MIN_S))
        log.info(
            "stopped: %d queries answered while stopping, %d given SERVFAIL at --stop-timeout, "
            "%d TCP connections cut",
            owed - left,
            left,
            aborted,
        )

    def _in_flight(self) -> int:
        return sum(a.in_flight for a in (self.answering, *self.retired))


class Reloader:
    """SIGHUP: the whole configuration again, all or nothing.

    The sources (flags, the ``--config`` file, the environment) and every
    file they name are read and parsed in a thread, so answers go on
    meanwhile (a 100,000-record zone takes seconds to parse); the result is
    built and swapped in on the event loop, between two packets, so no
    query is lost. A bad file or option is logged with its name (and line)
    and the configuration being served stays as it was (dnsmasq and CoreDNS
    behave alike). Options that need a restart keep their old values and
    are named in the log (``gateway.service.reload``). A SIGHUP during a
    reload asks for one more reload after it, as the files may have changed
    after it read them.
    """

    def __init__(
        self,
        load: Callable[[], Config],
        config: Config,
        apply: Callable[[Config, Files], None],
        notifier: Notifier,
        reread_hosts: Callable[[], None] | None = None,
    ) -> None:
        """``load``: the configuration as its sources say now (``ConfigSources.load``).
        ``reread_hosts``: reads the hosts files again, on its own (``Server.hosts``)."""
        self._load = load
        self._config = config
        self._apply = apply
        self._notifier = notifier
        self._reread_hosts = reread_hosts
        self._job = SerialJob(
            lambda: prepare(self._load, self._config), self._finish, "reload",
            starting=self._starting,
        )  # fmt: skip

    def request(self) -> None:
        """Starts a reload, or queues one after the reload under way."""
        if self._reread_hosts is not None:
            # On its own: a bad zone file or option must not hold back the hosts files.
            self._reread_hosts()
        self._job.request()

    def _starting(self) -> None:
        log.info("reloading files and configuration")
        self._notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def _finish(self, future: asyncio.Future[Prepared]) -> None:
        try:
            prepared = future.result()
            self._apply(prepared.config, prepared.files)
        except (StartupError, ValueError) as exc:  # a bad option, file, or a zone clash
            log.error("reload failed, still serving the previous configuration: %s", exc)
            self._notifier.ready(f"reload failed: {exc}"[:STATUS_MAX_CHARS])
        except Exception:  # a bug: still keep serving what we have
            log.exception("reload failed, still serving the previous configuration")
            self._notifier.ready("reload failed")
        else:
            changed = reload.changed(self._config, prepared.config)
            self._config = prepared.config
            if prepared.restart:
                log.warning(
                    "reload: changing %s needs a restart; still using the old value%s",
                    ", ".join(f"'{name}'" for name in prepared.restart),
                    "s" if len(prepared.restart) > 1 else "",
                )
            log.info(
                "reloaded: options changed: %s; zones %s",
                ", ".join(changed) or "none",
                zones.describe(prepared.files.zone_set),
            )
            self._notifier.ready("reloaded")

    def close(self) -> None:
        """No more reloads; one under way finishes in its thread and is dropped."""
        self._job.close()


@dataclass(frozen=True)
class Prepared:
    """A reload's reading done: the configuration to serve, its files, what needs a restart."""

    config: Config
    files: Files
    restart: tuple[str, ...]


def prepare(load: Callable[[], Config], current: Config) -> Prepared:
    """Reads the configuration and its files again (in the reload thread); raises if bad.

    The hosts files are read here only when the options name other files or
    another TTL (the running hosts watch rereads its own files on SIGHUP).
    """
    config, restart = reload.settle(current, load())
    files = read_files(config, with_catalog=config.catalog is not None)
    if not hosts_watch.same_files(current, config):
        files = replace(
            files, hosts=hosts_watch.read_all(hosts_watch.paths(config), config.local_ttl)
        )
    return Prepared(config, files, restart)


@dataclass(frozen=True)
class Launch:
    """What the command line found besides the configuration (see ``gateway.__main__``)."""

    sources: ConfigSources | None = None
    sockets: tuple[socket.socket, ...] = ()  # passed by systemd
    notifier: Notifier | None = None


def run(
    config: Config, worker: int = 0, launch: Launch = Launch(), watcher: socket.socket | None = None
) -> None:
    """Runs one process's event loop (uvloop when available)."""
    import uvloop

    # Only the first worker talks to systemd (the unit says NotifyAccess=all).
    notifier = launch.notifier if worker == 0 else None
    uvloop.run(
        serve(
            config, worker=worker, sources=launch.sources, sockets=launch.sockets,
            notifier=notifier, watcher=watcher,
        )
    )  # fmt: skip


async def watch_for_workers(config: Config, socks: list[socket.socket]) -> None:
    """The watcher process: one Consul source for every worker, until SIGTERM/SIGINT."""
    from gateway.consul.shared import SourceHub

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reloads the workers' files; with Consul, catalog files are read at start only.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CONTROL_SIGNALS)  # see _fork
    metrics = Metrics()
    source = build_source(config, read_catalog(config) if config.catalog is not None else None)
    if hasattr(source, "register_metrics"):
        source.register_metrics(metrics)
    log.info("consul watcher serving %d workers", len(socks))
    await SourceHub(source, metrics).serve(socks, stop)


def _fork(name: str, body: Callable[[], None]) -> int:
    """A child process running ``body``; exits 1 when it raises."""
    pid = os.fork()
    if pid == 0:
        # Until its event loop handles them, a child holds the signals the
        # parent forwards: SIGTERM or SIGHUP while it starts would otherwise
        # kill it (their default action) and the gateway would exit 1.
        signal.pthread_sigmask(signal.SIG_BLOCK, CONTROL_SIGNALS)
        code = 0
        try:
            body()
        except BaseException:
            log.exception("%s failed", name)
            code = 1
        finally:
            os._exit(code)
    return pid


def run_workers(config: Config, launch: Launch = Launch()) -> int:
    """``--workers N``: N processes share the ports with SO_REUSEPORT.

    The kernel spreads UDP datagrams and TCP connections over them; each
    worker keeps its own cache. With Consul, one more process watches it
    for all of them and sends each new view to every worker
    (gateway/consul/shared.py), so Consul sees one client whatever N is.
    Sockets passed by systemd are shared as they are.
    """
    import uvloop

    pairs = [socket.socketpair() for _ in range(config.workers)] if config.consul else []

    def only(keep: list[socket.socket]) -> None:
        """A child keeps its own ends of the socket pairs and closes the others."""
        for pair in pairs:
            for sock in pair:
                if sock not in keep:
                    sock.close()

    children: list[int] = []
    if pairs:
        # Imported before the fork, so the watcher starts at once: the
        # workers answer Consul names SERVFAIL until its first snapshot.
        import gateway.consul.source  # noqa: F401

        def watch() -> None:
            ends = [pair[0] for pair in pairs]
            only(ends)
            uvloop.run(watch_for_workers(config, ends))

        children.append(_fork("consul watcher", watch))
    for worker in range(config.workers):

        def answer(worker: int = worker) -> None:
            own = pairs[worker][1] if pairs else None
            only([own] if own is not None else [])
            run(config, worker, launch, own)

        children.append(_fork(f"worker {worker}", answer))
    only([])

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or (1 if code else 0)
    sys.stdout.flush()
    return status
