"""``--log-queries``: one structured line per query, as dnsmasq's ``log-queries``.

Each line is logfmt on the logger ``gateway.queries`` (INFO, shown whatever
``--log-level`` says, since asking for it is the point)::

    query client=127.0.0.1 proto=udp name=www.example. type=A class=IN
          rcode=NOERROR answerer=forward latency_ms=0.412

``answerer`` is the one that made the answer, named as in the metrics'
answer tally: ``catalog``, ``reverse``, ``zone``, ``hosts``, ``chaos``,
``rule`` (a ``--address``/``--local`` rule), ``forward``, ``cache`` (a
forwarded answer from the cache on the fast path) or ``error`` (an error
reply such as FORMERR, REFUSED for a client outside ``--allow``). A query that gets no
reply at all is logged with ``rcode=none``. Only what the client sent and
what it got are written: the Consul token never passes through here.

Nothing of this runs when the option is off: the listeners are handed
these wrappers instead of the resolver's own functions (``transport.Gate``),
so the fast path has no "is logging on?" test per query.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable

import dns.exception
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from gateway.dns import wire
from gateway.dns.fastpath import FastAnswer
from gateway.server.access import Access
from gateway.server.resolver import Reply, Resolver

QUERY_LOGGER = "gateway.queries"
# A slow-path answer function as the listeners call it (``Resolver.answer_slow``).
SlowAnswer = Callable[[bytes, bool, Reply, Access], bool]
_MS_PER_S = 1000.0


def describe(packet: bytes) -> tuple[str, str, str]:
    """(name, type, class) of a packet's question as text; "-" where unreadable."""
    try:
        qname, end = wire.read_name(packet, wire.HEADER_LEN, allow_pointers=False)
        qtype, qclass = struct.unpack_from("!HH", packet, end)
        name = wire.name_of(qname).to_text()
    except (wire.FormatError, struct.error, dns.exception.DNSException):
        return "-", "-", "-"
    return name, dns.rdatatype.to_text(qtype), dns.rdataclass.to_text(qclass)


def rcode_text(reply: bytes | None) -> str:
    """The reply's rcode as text (header bits only: the OPT's upper bits are rare here)."""
    if reply is None or len(reply) < 4:
        return "none"
    return dns.rcode.to_text(dns.rcode.Rcode.make(reply[3] & 0x0F))


class QueryLog:
    """Wraps a resolver's fast and slow answer functions to log each query."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._log = logger or logging.getLogger(QUERY_LOGGER)
        if self._log.level == logging.NOTSET:
            self._log.setLevel(logging.INFO)

    def write(
        self,
        client: str,
        tcp: bool,
        query: bytes,
        reply: bytes | None,
        answerer: str,
        started: float,
    ) -> None:
        name, qtype, qclass = describe(query)
        self._log.info(
            "query client=%s proto=%s name=%s type=%s class=%s rcode=%s answerer=%s "
            "latency_ms=%.3f",
            client, "tcp" if tcp else "udp", name, qtype, qclass, rcode_text(reply), answerer,
            (self._clock() - started) * _MS_PER_S,
        )  # fmt: skip

    def fast_for(self, client: str, fast: FastAnswer | None) -> FastAnswer | None:
        """``fast`` for one client, logging every answer it gives (None stays None)."""
        if fast is None:
            return None
        clock = self._clock
        source = self._resolver.prepared_source

        def logged(data: bytes, tcp: bool) -> bytes | None:
            started = clock()
            reply = fast(data, tcp)
            if reply is not None:
                self.write(client, tcp, data, reply, source(data, tcp), started)
            return reply

        return logged

    def slow_for(self, client: str) -> SlowAnswer:
        """The resolver's slow path for one client, logging when the reply goes out."""
        resolver = self._resolver
        clock = self._clock

        def logged(data: bytes, tcp: bool, reply: Reply, access: Access) -> bool:
            started = clock()
            # Set once answer_slow has returned: a later reply (forwarding)
            # must not read the answerer of whichever query came after.
            decided: list[str] = []

            def send(response: bytes) -> None:
                answerer = decided[0] if decided else resolver.answered_by
                self.write(client, tcp, data, response, answerer, started)
                reply(response)

            coming = resolver.answer_slow(data, tcp, send, access)
            decided.append(resolver.answered_by)
            if not coming:
                self.write(client, tcp, data, None, resolver.answered_by, started)
            return coming

        return logged
