"""The request path: bytes in, bytes out, one answerer per query.

    listener -> fast path (prepared templates) -> hit: patch and reply
                                            \\-> miss: parse -> router ->
        catalog | zone -> render -> store template -> reply
        forward -> cache wrapper -> forwarder (callback) -> store -> reply

Failures are mapped to response codes in exactly one place,
:func:`rcode_for`. Nothing here touches sockets: transports hand in the
packet and a reply function, so tests drive it with plain bytes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable
from typing import Protocol

from gateway.cache.store import ForwardCache, make_template
from gateway.catalog import answers as catalog
from gateway.catalog.answers import CatalogAnswerer, NeedQuery, NeedService
from gateway.catalog.source import CatalogSource, CatalogUnavailable
from gateway.dns import codec, fastpath, wire
from gateway.dns.codec import Answer
from gateway.metrics import Metrics
from gateway.options import Config
from gateway.server.router import Kind, Router
from gateway.zones import zone as zones

log = logging.getLogger(__name__)

Reply = Callable[[bytes], None]
# At most this many catalog fetches (first queries of a service) at once.
MAX_PENDING_FETCHES = 4096
# Zone transfers are not offered.
_TRANSFER_TYPES = frozenset({251, 252})


class ForwardClient(Protocol):
    """What the resolver needs of a forwarder (gateway.forwarder.Forwarder)."""

    def resolve(self, question: bytes, do: bool, done: Callable[[bytes | None], None]) -> None:
        """Sends ``question`` upstream; ``done`` gets the response or None."""


class NotImplementedOpcode(Exception):
    """Opcodes other than QUERY (RFC 1035 4.1.1: NOTIMP)."""


class BadVersion(Exception):
    """EDNS version above 0 (RFC 6891 6.1.3: BADVERS)."""


class Refused(Exception):
    """A question we will not answer (zone transfers, odd classes)."""


class UpstreamFailure(Exception):
    """Every upstream failed and nothing stale was left."""


def rcode_for(exc: BaseException) -> int:
    """The one mapping from failures to response codes."""
    if isinstance(exc, wire.FormatError):
        return wire.FORMERR
    if isinstance(exc, NotImplementedOpcode):
        return wire.NOTIMP
    if isinstance(exc, BadVersion):
        return wire.BADVERS
    if isinstance(exc, Refused):
        return wire.REFUSED
    # CatalogUnavailable, UpstreamFailure, timeouts and bugs alike.
    return wire.SERVFAIL


class Resolver:
    """Answers one packet at a time; see the module docstring for the path."""

    def __init__(
        self,
        config: Config,
        *,
        source: CatalogSource,
        zone_set: dict[str, zones.Zone],
        forwarder: ForwardClient | None,
        cache: ForwardCache,
        metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._source = source
        self._zones = zone_set
        self._forwarder = forwarder
        self._cache = cache
        self.metrics = metrics
        self._rng = rng or random.Random()
        self._answerer = CatalogAnswerer(config, on_service=source.touch)
        self._router = Router(config.domains, zone_set)
        self._local = fastpath.AnswerTable(max_entries=max(1024, config.cache_size))
        self._max_udp = config.udp_max_payload
        self._fetches = 0
        self._tasks: set[asyncio.Task[None]] = set()
        source.on_change(self._local.clear)
        self._counts = metrics.counters
        self._fast = fastpath.make_fast_answer(self._local, cache, self._max_udp)
        # The instance attribute shadows the method: one call less per query.
        self.answer_fast = self._fast  # type: ignore[method-assign,assignment]

    # -- the hot path ------------------------------------------------------

    def answer_fast(self, data: bytes, tcp: bool) -> bytes | None:
        """A reply from prepared bytes, or None when the slow path must run.

        Replaced per instance by the closure from ``fastpath.make_fast_answer``
        (see ``__init__``); this method documents the contract.
        """
        return self._fast(data, tcp)

    # -- the slow path -----------------------------------------------------

    def answer_slow(self, data: bytes, tcp: bool, reply: Reply) -> None:
        """Parses, routes and answers; ``reply`` may be called later (forwarding)."""
        self._counts["slow"] += 1
        try:
            query = wire.parse_query(data)
        except wire.FormatError as exc:
            self._counts["formerr"] += 1
            self._fail(data, exc, reply, None)
            return
        try:
            self._dispatch(data, query, tcp, reply)
        except Exception as exc:  # bugs answer SERVFAIL, never kill the server
            if not isinstance(
                exc, NotImplementedOpcode | BadVersion | Refused | CatalogUnavailable
            ):
                self._counts["internal_errors"] += 1
                log.exception("error answering %s/%d", query.qname, query.qtype)
            self._fail(data, exc, reply, query)

    def _fail(
        self, data: bytes, exc: BaseException, reply: Reply, query: wire.Query | None
    ) -> None:
        rcode = rcode_for(exc)
        self._counts[f"rcode_{rcode}"] += 1
        edns = query.edns if query is not None else None
        response = wire.error_response(
            data, rcode, edns_payload=self._max_udp if (edns is not None or rcode > 15) else None
        )
        if response:
            reply(response)

    def _dispatch(self, data: bytes, query: wire.Query, tcp: bool, reply: Reply) -> None:
        if query.opcode != wire.OPCODE_QUERY:
            raise NotImplementedOpcode()
        if query.edns is not None and query.edns.version > 0:
            raise BadVersion()
        if query.qtype in _TRANSFER_TYPES:
            raise Refused()
        route = self._router.route(query.qname)
        if route.kind is Kind.FORWARD:
            ptr = self._reverse(query)
            if ptr is not None:
                self._reply_local(data, query, tcp, ptr, reply)
                return
            self._forward(data, query, tcp, reply)
            return
        if query.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            raise Refused()
        if route.kind is Kind.ZONE:
            self._reply_local(
                data, query, tcp, zones.answer(self._zones[route.suffix], query), reply
            )
            return
        self._catalog(data, query, tcp, route.suffix, reply)

    def _reverse(self, query: wire.Query) -> Answer | None:
        if not query.qname.endswith(("in-addr.arpa", "ip6.arpa")):
            return None
        address = catalog.reverse_address(query.qname)
        if address is None:
            return None
        return self._answerer.answer_ptr(self._source.snapshot(), query, address)

    def _catalog(
        self, data: bytes, query: wire.Query, tcp: bool, domain: str, reply: Reply
    ) -> None:
        outcome = self._answerer.answer(self._source.snapshot(), query, domain)
        if isinstance(outcome, Answer):
            self._reply_local(data, query, tcp, outcome, reply)
            return
        # The view lacks this service or prepared query: fetch it (one HTTP
        # round trip, bounded), then answer from the new snapshot.
        if self._fetches >= MAX_PENDING_FETCHES:
            raise CatalogUnavailable("too many catalog fetches in flight")
        self._fetches += 1
        task = asyncio.get_running_loop().create_task(
            self._fetch_then_answer(data, query, tcp, domain, outcome, reply)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_then_answer(
        self,
        data: bytes,
        query: wire.Query,
        tcp: bool,
        domain: str,
        need: NeedService | NeedQuery,
        reply: Reply,
    ) -> None:
        try:
            async with asyncio.timeout(self._config.consul_first_query_timeout):
                if isinstance(need, NeedService):
                    await self._source.fetch_service(need.datacenter, need.name)
                else:
                    await self._source.fetch_query(need.datacenter, need.name)
            outcome = self._answerer.answer(self._source.snapshot(), query, domain)
            if not isinstance(outcome, Answer):
                raise CatalogUnavailable(f"{need} still unknown after fetching")
            self._reply_local(data, query, tcp, outcome, reply)
        except Exception as exc:
            if not isinstance(exc, CatalogUnavailable | TimeoutError):
                log.exception("catalog fetch for %s failed", query.qname)
            self._fail(data, exc, reply, query)
        finally:
            self._fetches -= 1

    def _reply_local(
        self, data: bytes, query: wire.Query, tcp: bool, answer: Answer, reply: Reply
    ) -> None:
        question = query.qname_wire.lower() + struct.pack("!HH", query.qtype, query.qclass)
        entry = fastpath.Entry(
            question, answer, edns=query.edns, payload=self._max_udp, rng=self._rng
        )
        qk = fastpath.question_key(data)
        # Only keys the fast path would compute for this very question, and
        # never SERVFAIL (a passing state, not data).
        if (
            qk is not None
            and qk.question_end == query.question_end
            and answer.rcode != wire.SERVFAIL
        ):
            self._local.put(qk.key, entry)
        self._counts[f"rcode_{answer.rcode}"] += 1
        template = entry.pick(self._limit(query, tcp))
        reply(fastpath.patch(template, data, query.question_end))

    def _finish(self, template: bytes, data: bytes, query: wire.Query, tcp: bool) -> bytes:
        """A forwarded (cached or fresh) template cut to size and patched."""
        limit = self._limit(query, tcp)
        if len(template) > limit:
            template = codec.truncate(template, limit)
            self._counts["truncated"] += 1
        return fastpath.patch(template, data, query.question_end)

    def _limit(self, query: wire.Query, tcp: bool) -> int:
        if tcp:
            return wire.TCP_LIMIT
        if query.edns is None:
            return wire.CLASSIC_UDP_LIMIT
        return min(query.edns.payload, self._max_udp)

    # -- forwarding --------------------------------------------------------

    def _forward(self, data: bytes, query: wire.Query, tcp: bool, reply: Reply) -> None:
        qk = fastpath.question_key(data)
        key = qk.key if qk is not None and qk.question_end == query.question_end else None
        if key is not None:
            cached = self._cache.fresh(key)
            if cached is not None:
                self._counts["cache_hits"] += 1
                reply(self._finish(cached, data, query, tcp))
                return
        if self._forwarder is None:
            self._serve_stale_or_fail(data, query, tcp, key, reply)
            return
        self._counts["forwarded"] += 1
        question = query.qname_wire.lower() + struct.pack("!HH", query.qtype, query.qclass)
        do = query.edns.do if query.edns is not None else False

        def done(response: bytes | None) -> None:
            if response is None:
                self._serve_stale_or_fail(data, query, tcp, key, reply)
                return
            if response[3] & 0x0F in (wire.SERVFAIL, wire.REFUSED):
                # Every upstream refused or failed: RFC 8767 prefers a stale answer.
                stale = self._cache.stale(key) if key is not None else None
                if stale is not None:
                    self._counts["stale_served"] += 1
                    reply(self._finish(stale, data, query, tcp))
                    return
            made = make_template(response, client_edns=query.edns, payload=self._max_udp)
            if made is None:
                # Unusual upstream message: relay it once, uncached.
                reply(data[:2] + response[2:])
                return
            template, layout = made
            if key is not None:
                self._cache.put(key, template, layout)
            reply(self._finish(template, data, query, tcp))

        self._forwarder.resolve(question, do, done)

    def _serve_stale_or_fail(
        self, data: bytes, query: wire.Query, tcp: bool, key: bytes | None, reply: Reply
    ) -> None:
        stale = self._cache.stale(key) if key is not None else None
        if stale is not None:
            self._counts["stale_served"] += 1
            reply(self._finish(stale, data, query, tcp))
            return
        self._fail(data, UpstreamFailure(), reply, query)

    def replace_zones(self, zone_set: dict[str, zones.Zone]) -> None:
        """Serves a new set of local zones (reload); ValueError if one clashes."""
        router = Router(self._config.domains, zone_set)
        self._zones = zone_set
        self._router = router
        self._local.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
