"""The request path: bytes in, bytes out, one answerer per query.

    listener -> fast path (prepared templates) -> hit: patch and reply
                                            \\-> miss: parse -> router ->
        catalog | reverse | zone -> render -> store template -> reply
        forward -> cached forwarder (cache, upstreams, serve-stale) -> reply

Failures are raised and mapped to response codes in one place
(``gateway.server.rcodes``). Nothing here touches sockets: transports hand
in the packet and a reply function, so tests drive it with plain bytes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

import dns.name

from gateway import metrics as m
from gateway.cache.cached_forwarder import CachedForwarder, CallLater, Upstreams
from gateway.cache.store import ForwardCache, key_qtype
from gateway.catalog.answers import CatalogAnswerer, NeedQuery, NeedService
from gateway.catalog.source import CatalogSource, CatalogUnavailable
from gateway.dns import codec, fastpath, wire
from gateway.dns.codec import Answer, Record
from gateway.forward import private
from gateway.forward.rules import (
    NXDOMAIN_OUTCOME,
    STANDARD,
    STANDARD_OUTCOME,
    DomainPolicy,
    ForwardRules,
    Outcome,
)
from gateway.hosts.table import HostsTable
from gateway.metrics import Metrics
from gateway.options import Config
from gateway.ratelog import RateLimitedLog
from gateway.server import rcodes
from gateway.server.access import Access
from gateway.server.chaos import CLASSES as CHAOS_CLASSES
from gateway.server.chaos import ChaosAnswerer
from gateway.server.router import Kind, Route, Router
from gateway.zones import zone as zones

log = logging.getLogger(__name__)

Reply = Callable[[bytes], None]
# At most this many catalog fetches (first queries of a service) at once.
MAX_PENDING_FETCHES = 4096
# Zone transfers are not offered.
_TRANSFER_TYPES = frozenset({wire.AXFR, wire.IXFR})
# TTL of --address answers (dnsmasq's local-ttl default: clients ask again).
ADDRESS_TTL = 0
_NXDOMAIN = Answer(wire.NXDOMAIN)


def catalog_domains(config: Config, rules: Iterable[DomainPolicy]) -> tuple[str, ...]:
    """The Consul domains the catalog answers.

    Without a live Consul (``--consul``), a rule for exactly a Consul domain
    takes it from the static catalog: ``server=/consul/127.0.0.1#8600`` is
    forwarded to Consul's DNS, as dnsmasq does. With a live Consul the
    catalog answers and the rule is shadowed (``--dnsmasq-conf`` drops such
    lines itself).
    """
    if config.consul is not None:
        return config.domains
    ruled = {policy.name for policy in rules}
    return tuple(d for d in config.domains if dns.name.from_text(d) not in ruled)


class Resolver:
    """Answers one packet at a time; see the module docstring for the path."""

    def __init__(
        self,
        config: Config,
        *,
        source: CatalogSource,
        zone_set: dict[dns.name.Name, zones.Zone],
        forwarder: Upstreams | None,
        cache: ForwardCache,
        metrics: Metrics,
        rng: random.Random | None = None,
        call_later: CallLater | None = None,
        rules: ForwardRules | None = None,
        domain_upstreams: Sequence[Upstreams] = (),
        hosts: HostsTable | None = None,
    ) -> None:
        """``call_later`` (``loop.call_later``) runs the client-response timer
        of serve-stale (``--stale-answer-client-timeout``); None: no timer.
        ``rules`` are dnsmasq's per-domain rules; ``domain_upstreams[i - 1]``
        asks upstream set ``i`` of ``rules.upstream_sets`` (set 0 is
        ``forwarder``, the standard servers). ``hosts``: the hosts files'
        table (None: the RFC 6761 names only)."""
        self._config = config
        self._rules = rules
        self._upstream_sets: tuple[Upstreams | None, ...] = (None, *domain_upstreams)
        # Names exempt from --stop-dns-rebind, as lower-case wire suffixes.
        self._rebind_ok = tuple(
            wire.to_wire(d).lower() for d in (*config.domains, *config.rebind_domain_ok)
        )
        self._source = source
        self._zones = zone_set
        self._hosts = hosts if hosts is not None else HostsTable(ttl=config.local_ttl)
        self._chaos = ChaosAnswerer(config.chaos)
        # Which answerer took the last slow-path query (the query log reads it).
        self.answered_by = ""
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._answerer = CatalogAnswerer(
            config, on_service=source.touch, on_endpoint=source.touch_endpoint
        )
        self._router = self._make_router(zone_set)
        self._local = fastpath.AnswerTable(
            max_entries=max(1024, config.cache_size), max_bytes=config.prepared_max_bytes
        )
        metrics.gauge(
            "prepared_entries", lambda: len(self._local), "Prepared catalog and zone answers held."
        )
        metrics.gauge(
            "prepared_bytes", lambda: self._local.bytes, "Estimated bytes of the prepared answers."
        )
        metrics.counter(
            "prepared_evictions",
            lambda: self._local.evicted,
            "Prepared answers evicted to stay within their bounds.",
        )
        self._max_udp = config.udp_max_payload
        self._fetches = 0
        self._tasks: set[asyncio.Task[None]] = set()
        source.on_change(_clear_while_alive(self._local))
        self._counts = metrics.counters
        self._tally = metrics.tally
        self._latency = metrics.latency
        # When the slow path took the packet being answered now (answers made
        # at once read it; those made later capture it first).
        self._started = 0.0
        # A forwarded answer stored in the cache counts its fast-path hits in
        # the tally slot of its query type and rcode.
        cache.tally_of = lambda key, template: self._tally.index(
            m.CACHE, key_qtype(key), template[3] & 0xF
        )
        self._log = RateLimitedLog(log, counts=self._counts)
        self._forward = CachedForwarder(
            cache,
            forwarder,
            payload=self._max_udp,
            counts=self._counts,
            stale_timeout=config.stale_answer_client_timeout,
            call_later=call_later,
        )
        self._key_of = fastpath.make_key_function()
        self._fast = fastpath.make_fast_answer(
            self._local, cache, self._max_udp, tally=self._tally.counts
        )
        # The instance attribute shadows the method: one call less per query.
        self.answer_fast = self._fast  # type: ignore[method-assign,assignment]
        # For clients without --allow-recursion: catalog and zone entries only.
        self.answer_fast_local = fastpath.make_local_answer(
            self._local, self._max_udp, self._tally.counts
        )
        self._drop_denied = config.refuse_action == "drop"
        self._cache = cache

    def _make_router(self, zone_set: dict[dns.name.Name, zones.Zone]) -> Router:
        def knows_address(address: str) -> bool:
            return bool(self._source.snapshot().reverse(address))

        def claims(name: bytes) -> bool:
            return self._hosts.claims(name)

        rules = self._rules.policies if self._rules is not None else ()
        router = Router(
            catalog_domains(self._config, rules), zone_set, knows_address, rules, local=claims
        )
        for name in router.shadowed:
            log.warning("rule for %s: local data (catalog or zone) answers it instead", name)
        return router

    # -- the hot path ------------------------------------------------------

    def answer_fast(self, data: bytes, tcp: bool) -> bytes | None:
        """A reply from prepared bytes, or None when the slow path must run.

        Replaced per instance by the closure from ``fastpath.make_fast_answer``
        (see ``__init__``); this method documents the contract.
        """
        return self._fast(data, tcp)

    def prepared_source(self, data: bytes, tcp: bool) -> str:
        """Which answerer made the fast path's answer to ``data`` (--log-queries).

        A prepared entry knows its answerer; anything else the fast path
        answers is a forwarded answer from the cache.
        """
        key = self._key_of(data, tcp)
        entry = self._local.get(key) if key is not None else None
        return self._tally.answerer_of(entry.tally) if entry is not None else m.CACHE

    # -- the slow path -----------------------------------------------------

    def answer_slow(
        self, data: bytes, tcp: bool, reply: Reply, access: Access = Access.FULL
    ) -> bool:
        """Parses, routes and answers; ``reply`` may be called later (forwarding).

        ``access`` is what the client may be answered (``gateway.server.access``):
        the transport decides it from the client's address.

        Returns False for a packet that gets no reply at all: responses and
        packets without a full header are counted and dropped
        (``rcodes.drop_reason``; the fast path never takes them either), and
        so are denied queries under ``--refuse-action drop``. Otherwise
        ``reply`` is called once, now or later (TCP counts on it).
        """
        self._counts["slow"] += 1
        self.answered_by = m.ERROR
        self._started = time.perf_counter()
        dropped = rcodes.drop_reason(data)
        if dropped is not None:
            self._counts[dropped] += 1
            return False
        try:
            query = wire.parse_query(data)
        except wire.FormatError as exc:
            if access is Access.NONE:
                return self._deny(data, None, reply, "access")
            if wire.opcode_of(data) != wire.OPCODE_QUERY:
                # RFC 8906 3.1.4: an unknown opcode is NOTIMP, whatever the
                # sections hold (an empty question section included).
                self._fail(data, rcodes.NotImplementedOpcode(), reply, None)
                return True
            self._counts["formerr"] += 1
            self._fail(data, exc, reply, None)
            return True
        try:
            if access is Access.NONE:
                return self._deny(data, query, reply, "access")
            return self._dispatch(data, query, tcp, reply, access)
        except Exception as exc:  # bugs answer SERVFAIL, never kill the server
            self._fail(data, exc, reply, query)
        return True

    def _deny(self, data: bytes, query: wire.Query | None, reply: Reply, what: str) -> bool:
        """A client outside --allow (``access``) or --allow-recursion (``recursion``).

        Returns whether a reply comes (``answer_slow``'s contract).
        """
        if self._drop_denied:
            self._counts[f"{what}_dropped"] += 1
            return False
        self._counts[f"{what}_refused"] += 1
        self._fail(data, rcodes.NotAllowed(), reply, query)
        return True

    def _fail(
        self,
        data: bytes,
        exc: BaseException,
        reply: Reply,
        query: wire.Query | None,
        started: float | None = None,
    ) -> None:
        if not rcodes.is_expected(exc):
            self._counts["internal_errors"] += 1
            what = f"{query.qname}/{query.qtype}" if query is not None else "a packet"
            # A bug a client can trigger at will: a traceback, but a bounded number.
            self._log.error("resolver_bug", "error answering %s", what, exc_info=exc)
        rcode = rcodes.rcode_for(exc)
        self._count(m.ERROR, query.qtype if query is not None else 0, rcode, started)
        edns = query.edns if query is not None else None
        response = rcodes.error_reply(
            data, rcode, client_edns=edns is not None, payload=self._max_udp,
            do=edns is not None and edns.do,
        )  # fmt: skip
        if response:
            reply(response)

    def _dispatch(
        self, data: bytes, query: wire.Query, tcp: bool, reply: Reply, access: Access
    ) -> bool:
        """Answers a parsed query; False when a denied one is dropped (no reply)."""
        if query.opcode != wire.OPCODE_QUERY:
            raise rcodes.NotImplementedOpcode()
        if query.edns is not None and query.edns.version > 0:
            raise rcodes.BadVersion()
        if query.qtype in _TRANSFER_TYPES:
            raise rcodes.Refused()
        if query.qclass in CHAOS_CLASSES:
            # About the server itself: never forwarded (it would name the upstream).
            self.answered_by = m.CHAOS
            answer = self._chaos.answer(query)
            key = self._checked_key(data, query, tcp)
            self._reply_local(data, query, tcp, key, answer, reply, m.CHAOS)
            return True
        # The fast path's key of this very packet, when its question is the
        # one parsed here (a zero byte inside a label would fool the key).
        key = self._checked_key(data, query, tcp)
        route = self._router.route(query.qname_wire)
        if route.kind is Kind.HOSTS or (
            # Only the PTR records of a reverse name are the catalog's; the
            # rest is the loopback zone's for a loopback address, else what
            # the upstream says (RFC 8906: never an empty NOERROR without SOA).
            route.kind is Kind.REVERSE and query.qtype not in (wire.PTR, wire.ANY)
        ):
            if query.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
                raise rcodes.Refused()
            hosts_answer = self._hosts.answer(query)
            if hosts_answer is not None:
                self.answered_by = m.HOSTS
                self._reply_local(data, query, tcp, key, hosts_answer, reply, m.HOSTS)
                return True
            # Not the hosts files' either: a reverse name, not asked for PTR.
            route = self._router.forward_route(query.qname_wire)
        self.answered_by = route.kind.value
        if route.kind is Kind.FORWARD:
            outcome = self._outcome(route, query)
            if outcome.nxdomain or outcome.rdata is not None:  # answered by a rule
                self._counts["policy_local"] += 1
                self.answered_by = m.RULE
                answer = _local_answer(query, outcome)
                self._reply_local(data, query, tcp, key, answer, reply, m.RULE)
                return True
            if access is not Access.FULL:
                return self._deny(data, query, reply, "recursion")
            nodata = route.policy is not None and route.policy.nxdomain_as_nodata
            self._forward_query(data, query, tcp, key, reply, outcome.upstreams, nodata)
            return True
        if query.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            raise rcodes.Refused()
        if route.kind is Kind.ZONE:
            answer = zones.answer(self._zones[route.name], query)
            self._reply_local(data, query, tcp, key, answer, reply, m.ZONE)
        elif route.kind is Kind.REVERSE:
            assert route.address is not None
            answer = self._answerer.answer_ptr(self._source.snapshot(), query, route.address)
            self._reply_local(data, query, tcp, key, answer, reply, m.REVERSE)
        else:
            self._catalog(data, query, tcp, key, route, reply)
        return True

    def _checked_key(self, data: bytes, query: wire.Query, tcp: bool) -> bytes | None:
        """The fast path's key of this very packet, when its question is the
        one parsed here (a zero byte inside a label would fool the key)."""
        key = self._key_of(data, tcp)
        if key is not None and len(key) + 11 != query.question_end:
            return None
        return key

    def _catalog(
        self, data: bytes, query: wire.Query, tcp: bool, key: bytes | None, route: Route,
        reply: Reply,
    ) -> None:  # fmt: skip
        outcome = self._answerer.answer(self._source.snapshot(), query, route.suffix)
        if isinstance(outcome, Answer):
            self._reply_local(data, query, tcp, key, outcome, reply, m.CATALOG)
            return
        # The view lacks this service or prepared query: fetch it (one HTTP
        # round trip, bounded), then answer from the new snapshot.
        if self._fetches >= MAX_PENDING_FETCHES:
            raise CatalogUnavailable("too many catalog fetches in flight")
        self._fetches += 1
        task = asyncio.get_running_loop().create_task(
            self._fetch_then_answer(data, query, tcp, key, route, outcome, reply, self._started)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_then_answer(
        self,
        data: bytes,
        query: wire.Query,
        tcp: bool,
        key: bytes | None,
        route: Route,
        need: NeedService | NeedQuery,
        reply: Reply,
        started: float,
    ) -> None:
        try:
            async with asyncio.timeout(self._config.consul_first_query_timeout):
                if isinstance(need, NeedService):
                    await self._source.fetch_service(need.datacenter, need.name, need.kind)
                else:
                    await self._source.fetch_query(need.datacenter, need.name)
            outcome = self._answerer.answer(self._source.snapshot(), query, route.suffix)
            if not isinstance(outcome, Answer):
                raise CatalogUnavailable(f"{need} still unknown after fetching")
            self.answered_by = m.CATALOG  # other queries were answered meanwhile
            self._reply_local(data, query, tcp, key, outcome, reply, m.CATALOG, started)
        except Exception as exc:
            self._fail(data, exc, reply, query, started)
        finally:
            self._fetches -= 1

    def _reply_local(
        self,
        data: bytes,
        query: wire.Query,
        tcp: bool,
        key: bytes | None,
        answer: Answer,
        reply: Reply,
        answerer: str,
        started: float | None = None,
    ) -> None:
        tally = self._tally.index(answerer, query.qtype, answer.rcode)
        entry = fastpath.Entry(
            _question(query),
            answer,
            edns=query.edns,
            payload=self._max_udp,
            rng=self._rng,
            tally=tally,
        )
        if key is not None:
            self._local.put(key, entry)
        self._tally.counts[tally] += 1
        self._observe(answerer, started)
        template = entry.pick(self._limit(query, tcp))
        reply(fastpath.patch(template, data, query.question_end))

    def _count(self, answerer: str, qtype: int, rcode: int, started: float | None) -> None:
        """One slow-path answer: its tally slot and its latency."""
        self._tally.counts[self._tally.index(answerer, qtype, rcode)] += 1
        self._observe(answerer, started)

    def _observe(self, answerer: str, started: float | None) -> None:
        began = self._started if started is None else started
        self._latency[answerer].observe(time.perf_counter() - began)

    def _limit(self, query: wire.Query, tcp: bool) -> int:
        if tcp:
            return wire.TCP_LIMIT
        if query.edns is None:
            return wire.CLASSIC_UDP_LIMIT
        return min(query.edns.payload, self._max_udp)

    # -- forwarding --------------------------------------------------------

    def _outcome(self, route: Route, query: wire.Query) -> Outcome:
        """What dnsmasq's rules make of a forwarded name (cache misses only)."""
        if route.policy is not None:
            if query.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
                return route.policy.other  # addresses are class IN data
            return route.policy.outcome(query.qtype)
        config = self._config
        if (
            config.domain_needed
            and query.qtype in (wire.A, wire.AAAA)
            and _single_label(query.qname_wire)
        ):
            return NXDOMAIN_OUTCOME
        if config.bogus_priv and query.qtype == wire.PTR:
            address = private.reverse_name_address(query.qname_wire.lower())
            if address is not None and private.is_private(address):
                return NXDOMAIN_OUTCOME
        return STANDARD_OUTCOME

    def _rebind_checked(self, qname_wire: bytes) -> bool:
        """Whether ``--stop-dns-rebind`` applies to this name (not an exempt domain)."""
        if not self._config.stop_dns_rebind:
            return False
        name = qname_wire.lower()
        return not any(
            name == ok or (name.endswith(ok) and _at_label(name, ok)) for ok in self._rebind_ok
        )

    def _forward_query(
        self,
        data: bytes,
        query: wire.Query,
        tcp: bool,
        key: bytes | None,
        reply: Reply,
        upstreams: int = STANDARD,
        nxdomain_as_nodata: bool = False,
    ) -> None:
        started = self._started

        def done(template: bytes | None) -> None:
            # Called from the forwarder's callback: whatever happens here must
            # end in a reply, never in an exception the client would not see.
            try:
                if template is None:
                    raise rcodes.UpstreamFailure()
                limit = self._limit(query, tcp)
                if len(template) > limit:
                    template = codec.truncate(template, limit)
                    self._counts["truncated"] += 1
                self._count(m.FORWARD, query.qtype, template[3] & 0xF, started)
                reply(fastpath.patch(template, data, query.question_end))
            except Exception as exc:
                self._fail(data, exc, reply, query, started)

        self._forward.answer(
            key,
            _question(query),
            query.edns,
            done,
            via=self._upstream_sets[upstreams],
            check_rebind=self._rebind_checked(query.qname_wire),
            nxdomain_as_nodata=nxdomain_as_nodata,
        )

    @property
    def hosts_names(self) -> int:
        """Names the hosts files give (a metric)."""
        return len(self._hosts)

    def replace_hosts(self, table: HostsTable) -> None:
        """Serves a new hosts table (a file changed, SIGHUP).

        Prepared answers go (they may be hosts answers), and so do cached
        forwarded answers for names the new table claims: the fast path
        looks in the cache, which would go on answering a name just added
        to a hosts file with the upstream's records until their TTL ran out.
        """
        self._hosts = table
        self._local.clear()
        dropped = self._cache.drop_names(table.claims)
        if dropped:
            log.info("hosts files changed: %d cached forwarded answers dropped", dropped)

    def replace_zones(self, zone_set: dict[dns.name.Name, zones.Zone]) -> None:
        """Serves a new set of local zones (reload); ValueError if one clashes."""
        router = self._make_router(zone_set)
        self._zones = zone_set
        self._router = router
        self._local.clear()

    @property
    def in_flight(self) -> int:
        """Catalog fetches under way: queries whose reply is still to come."""
        return self._fetches

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _clear_while_alive(table: fastpath.AnswerTable) -> Callable[[], None]:
    """``table.clear`` without keeping the table alive.

    The catalog source outlives resolvers (a reload builds a new one and
    keeps the source); a dead table's callback is a no-op closure.
    """
    ref = weakref.ref(table)

    def clear() -> None:
        alive = ref()
        if alive is not None:
            alive.clear()

    return clear


def _single_label(qname_wire: bytes) -> bool:
    """A name without a dot (one label), e.g. ``nas.``: dnsmasq's domain-needed."""
    return len(qname_wire) > 1 and qname_wire[0] + 2 == len(qname_wire)


def _at_label(name: bytes, suffix: bytes) -> bool:
    """Whether ``suffix`` starts at a label boundary of ``name`` (both lower-case wire)."""
    pos = 0
    cut = len(name) - len(suffix)
    while pos < cut:
        pos += 1 + name[pos]
    return pos == cut


def _local_answer(query: wire.Query, outcome: Outcome) -> Answer:
    """The answer of an outcome that is not forwarded (``--address``, ``--local``, ...)."""
    if outcome.nxdomain or outcome.rdata is None:
        return _NXDOMAIN
    rtype = wire.A if len(outcome.rdata) == 4 else wire.AAAA
    record = Record(query.qname_wire.lower(), rtype, ADDRESS_TTL, outcome.rdata)
    return Answer(wire.NOERROR, answer=(record,))


def _question(query: wire.Query) -> bytes:
    """The question as templates and the forwarder key it: lower-case name."""
    return query.qname_wire.lower() + struct.pack("!HH", query.qtype, query.qclass)
