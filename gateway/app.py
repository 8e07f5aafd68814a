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
from collections.abc import Callable
from dataclasses import dataclass

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
from gateway.metrics import Metrics, serve_http
from gateway.options import Config, ConfigError, Endpoint
from gateway.server import batchio, interfaces
from gateway.server.access import AccessPolicy
from gateway.server.querylog import QueryLog
from gateway.server.ratelimit import ResponseRateLimiter, UdpLimits
from gateway.server.resolver import Resolver
from gateway.server.tcp_limits import TcpLimits
from gateway.server.transport import Gate, TcpListener, TcpServer, UdpListener, open_listeners
from gateway.zones import zone as zones

log = logging.getLogger("gateway")


def read_catalog(config: Config) -> Snapshot:
    """The static catalog files (``--catalog`` must be set)."""
    assert config.catalog is not None
    return static_catalog.load(config.catalog, config.datacenter, config.domains)


def read_zones(config: Config) -> dict[dns.name.Name, zones.Zone]:
    """The zone files (none without ``--zones``)."""
    if config.zones is None:
        return {}
    return zones.load_zones(config.zones, allow_include=config.zone_include)


def build_source(config: Config, watcher: socket.socket | None = None) -> CatalogSource:
    """The catalog: static files, Consul, or (``watcher``) the shared watcher's view."""
    if watcher is not None:
        from gateway.consul.shared import SharedSource

        return SharedSource(watcher)
    static = (
        read_catalog(config)
        if config.catalog is not None
        else Snapshot(datacenters=frozenset({config.datacenter}))
    )
    if config.consul is None:
        return StaticSource(static)
    from gateway.consul.source import ConsulSource  # only needed (and imported) with Consul

    source: CatalogSource = ConsulSource(
        config, static=static if config.catalog is not None else None
    )
    return source


async def serve(
    config: Config,
    *,
    ready: asyncio.Event | None = None,
    worker: int = 0,
    watcher: socket.socket | None = None,
) -> None:
    """Runs until SIGTERM/SIGINT (or cancellation); ``watcher`` connects to the
    process that watches Consul for every worker."""
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    source = build_source(config, watcher)
    zone_set = read_zones(config)
    assert config.upstream is not None
    rules = forward_rules(config)
    standard = standard_upstreams(config.upstream, rules.default_servers)
    watch = config.resolv and config.poll_resolv
    # One upstream's figures, whichever forwarders ask it (per-domain upstreams).
    upstream_stats: dict[str, UpstreamStats] = {}
    forwarder = _forwarder(config, standard, upstream_stats) if standard or watch else None
    domain_forwarders = [
        _forwarder(config, servers, upstream_stats) for servers in rules.upstream_sets[1:]
    ]
    cache = ForwardCache(
        CachePolicy(
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
        ),
        clock=time.monotonic,
    )
    hosts = hosts_watch.HostsWatch(
        hosts_watch.paths(config), config.local_ttl, lambda table: resolver.replace_hosts(table)
    )
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
            hosts=hosts.initial(),
        )
    except ValueError as exc:  # a zone that is also the Consul domain
        raise ConfigError(f"option 'zones' ({config.zones}): {exc}") from None
    _wire_metrics(metrics, cache, forwarder, upstream_stats)
    metrics.gauge("hosts_names", lambda: resolver.hosts_names)
    resolv_watcher = None
    if watch and forwarder is not None:
        resolv_watcher = ResolvWatcher(
            config.resolv_file, config.listen, rules.default_servers, forwarder.replace_upstreams
        )
        metrics.gauge("resolv_reloads", lambda: resolv_watcher.reloads if resolv_watcher else 0)
    gate = _gate(config, resolver, metrics, log_it=worker == 0)
    tcp = TcpServer(resolver, TcpLimits.from_config(config), gate=gate)
    metrics.gauge("tcp_connections", lambda: tcp.connections, "Open client TCP connections.")
    metrics.gauge(
        "tcp_queued_bytes", lambda: tcp.queued_bytes, "Reply bytes queued for TCP clients."
    )
    if hasattr(source, "register_metrics"):
        source.register_metrics(metrics)
    if resolv_watcher is not None:
        resolv_watcher.start()
    try:
        await _run(config, resolver, source, forwarder, tcp, gate, zone_set, hosts, worker, ready)
    finally:
        hosts.close()
        if resolv_watcher is not None:
            resolv_watcher.close()
        for domain_forwarder in domain_forwarders:
            domain_forwarder.close()


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
) -> None:
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


async def _run(
    config: Config,
    resolver: Resolver,
    source: CatalogSource,
    forwarder: Forwarder | None,
    tcp: TcpServer,
    gate: Gate,
    zone_set: dict[dns.name.Name, zones.Zone],
    hosts: hosts_watch.HostsWatch,
    worker: int,
    ready: asyncio.Event | None,
) -> None:
    """Opens the listeners, runs until a signal, and closes everything."""
    loop = asyncio.get_running_loop()
    metrics = resolver.metrics
    assert config.upstream is not None
    listeners: list[UdpListener | TcpListener] = []
    servers = []
    reloader = Reloader(config, resolver, source, hosts)
    batch, udp_path = batchio.choose(config.udp_batch)
    metrics.gauge(
        "udp_batch_io",
        lambda: 1 if batch is not None else 0,
        "1 when UDP is read and answered in batches (recvmmsg/sendmmsg), 0 for the Python loop.",
    )
    if worker == 0:
        log.info("UDP I/O: %s", udp_path)
    # /ready: the DNS listeners are open and the catalog source has started.
    started = asyncio.Event()
    metrics.readiness("listeners", started.is_set)
    try:
        for ep in config.listen:
            # --log-queries: every listener takes the gate, which hands out the
            # logging answer functions (no test per query when it is off).
            checked = config.log_queries or gate.policy.checks_listener(ep.host)
            gated = gate if checked else None
            listeners.extend(
                await open_listeners(
                    resolver,
                    ep.host,
                    ep.port,
                    tcp=tcp,
                    reuse_port=config.workers > 1,
                    gate=gated,
                    batch=batch,
                )
            )
            if worker == 0:
                log.info("listening on %s (UDP and TCP)", ep)
        if config.metrics_listen is not None:
            # Each worker has its own counters: worker i serves them on PORT + i.
            mhost, mport = config.metrics_listen.host, config.metrics_listen.port
            mport = mport + worker if mport else 0
            servers.append(await serve_http(metrics, mhost, mport))
            log.info(
                "metrics of worker %d on http://%s:%d/metrics (and /health, /ready)",
                worker,
                mhost,
                mport,
            )
        await source.start()
        hosts.start()
        started.set()
        if worker == 0:
            log.info(
                "catalog: %s; zones: %s; upstreams: %s",
                f"consul {config.consul}" if config.consul else f"static {config.catalog}",
                zones.describe(zone_set),
                _describe_upstreams(forwarder),
            )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
        # Start-up objects (zones, static catalog, modules) never die: freeze
        # them out of the cyclic GC so its full passes stay short under load.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down")
    finally:
        reloader.close()
        for listener in listeners:
            listener.close()
        tcp.close()
        for server in servers:
            server.close()
        await resolver.close()
        await source.stop()
        if forwarder is not None:
            forwarder.close()


def _describe_upstreams(forwarder: Forwarder | None) -> str:
    upstreams = forwarder.upstreams if forwarder is not None else ()
    return ", ".join(str(u) for u in upstreams) or "none (forwarding answers SERVFAIL)"


@dataclass(frozen=True)
class Files:
    """What a reload reads: the zones and, for a static catalog, its snapshot."""

    zone_set: dict[dns.name.Name, zones.Zone]
    catalog: Snapshot | None


def read_files(config: Config, with_catalog: bool) -> Files:
    """Reads every file a reload serves; raises StartupError naming a bad one."""
    return Files(read_zones(config), read_catalog(config) if with_catalog else None)


class Reloader:
    """SIGHUP: read zone files (and static catalog files) again, and the hosts files.

    The files are read and parsed in a thread, so answers go on meanwhile
    (a 100,000-record zone takes seconds to parse); the result is swapped in
    on the event loop. All or nothing: a file with an error is logged with
    its name and the data being served stays as it was (dnsmasq and CoreDNS
    behave alike). A SIGHUP during a reload asks for one more reload after
    it, as the files may have changed after it read them. With --consul,
    static catalog files are read at start only.
    """

    def __init__(
        self,
        config: Config,
        resolver: Resolver,
        source: CatalogSource,
        hosts: hosts_watch.HostsWatch | None = None,
    ) -> None:
        self._config = config
        self._hosts = hosts
        self._resolver = resolver
        self._source = source
        self._with_catalog = isinstance(source, StaticSource) and config.catalog is not None
        self._job = SerialJob(
            lambda: read_files(self._config, self._with_catalog), self._finish, "reload"
        )

    def request(self) -> None:
        """Starts a reload, or queues one after the reload under way."""
        if self._hosts is not None:
            self._hosts.reload()  # on its own: a bad zone file must not hold back hosts
        if self._job.request():
            log.info("reloading files")

    def _finish(self, future: asyncio.Future[Files]) -> None:
        try:
            files = future.result()
            self._resolver.replace_zones(files.zone_set)
        except (StartupError, ValueError) as exc:  # a bad zone or catalog file, a zone clash
            log.error("reload failed, still serving the previous files: %s", exc)
        except Exception:  # a bug: still keep serving what we have
            log.exception("reload failed, still serving the previous files")
        else:
            if files.catalog is not None and isinstance(self._source, StaticSource):
                self._source.replace(files.catalog)
            log.info("reloaded: zones %s", zones.describe(files.zone_set))

    def close(self) -> None:
        """No more reloads; one under way finishes in its thread and is dropped."""
        self._job.close()


def run(config: Config, worker: int = 0, watcher: socket.socket | None = None) -> None:
    """Runs one process's event loop (uvloop when available)."""
    import uvloop

    uvloop.run(serve(config, worker=worker, watcher=watcher))


async def watch_for_workers(config: Config, socks: list[socket.socket]) -> None:
    """The watcher process: one Consul source for every worker, until SIGTERM/SIGINT."""
    from gateway.consul.shared import SourceHub

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reloads the workers' files; with Consul, catalog files are read at start only.
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    metrics = Metrics()
    source = build_source(config)
    if hasattr(source, "register_metrics"):
        source.register_metrics(metrics)
    log.info("consul watcher serving %d workers", len(socks))
    await SourceHub(source, metrics).serve(socks, stop)


def _fork(name: str, body: Callable[[], None]) -> int:
    """A child process running ``body``; exits 1 when it raises."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:
            log.exception("%s failed", name)
            code = 1
        finally:
            os._exit(code)
    return pid


def run_workers(config: Config) -> int:
    """``--workers N``: N processes share the ports with SO_REUSEPORT.

    The kernel spreads UDP datagrams and TCP connections over them; each
    worker keeps its own cache. With Consul, one more process watches it
    for all of them and sends each new view to every worker
    (gateway/consul/shared.py), so Consul sees one client whatever N is.
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
            run(config, worker, own)

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
