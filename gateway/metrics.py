"""Metrics: plain counters where things happen, Prometheus families at scrape time.

Counting must cost the query path nothing beyond an int increment, so
nothing here is a ``prometheus_client`` metric object (each of those takes
a lock per increment). The parts of the gateway count into plain values:

- ``Metrics.counters`` -- ``counters[name] += 1`` for events (refusals,
  rate limiting, errors, queries per transport);
- :class:`AnswerTally` -- every answer, by answerer, query type class and
  rcode: ``tally.counts[i] += 1`` with an index fixed when the answer was
  prepared (a prepared catalog/zone entry and a cached forwarded answer each
  carry theirs), so the fast path pays one list increment;
- :class:`Histogram` -- latencies observed on the slow path only;
- ``gauge`` / ``counter`` / ``family`` -- callables read at scrape time
  (sizes, Consul state, the forwarder's per-upstream figures).

At scrape time :meth:`Metrics.collect` (a ``prometheus_client`` custom
collector) turns all of it into families with ``# HELP``/``# TYPE``, the
``_total`` suffix on counters and labels, and ``generate_latest`` renders
them. :func:`serve_http` serves ``/metrics``, ``/health`` (the process
answers) and ``/ready`` (every readiness check passes; 503 otherwise).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway.ratelog import RateLimitedLog

__all__ = ["Histogram", "Metric", "Metrics", "counter_family", "gauge_family", "histogram_family"]

log = logging.getLogger(__name__)

PREFIX = "dns_gateway_"

# -- answers by answerer, query type class and rcode --------------------------

# Who produced an answer. "cache": a forwarded answer from the cache on the
# fast path; "forward": every answer of the forwarding slow path (upstream,
# slow cache hit, stale); "error": an error reply the gateway built
# (FORMERR, REFUSED, SERVFAIL, NOTIMP...) whichever answerer failed.
CATALOG = "catalog"
ZONE = "zone"
REVERSE = "reverse"
CACHE = "cache"
FORWARD = "forward"
ERROR = "error"
# A forwarding rule answered itself (dnsmasq's address=/local=: an address or NXDOMAIN).
RULE = "rule"
# The hosts files and the RFC 6761 local names; CHAOS-class questions about the server.
HOSTS = "hosts"
CHAOS = "chaos"
ANSWERERS = (CATALOG, ZONE, REVERSE, HOSTS, CHAOS, RULE, CACHE, FORWARD, ERROR)

# Query types with a label of their own; every other type is "other", so
# the label set stays bounded (answerers x 15 types x 16 rcodes).
_QTYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY",
}  # fmt: skip
OTHER_QTYPE = "other"
# Index 0 of every tally is a sink that is never exported: entries built
# without a tally index (unit tests) count there.
UNCOUNTED = 0


def qtype_class(qtype: int) -> str:
    """The ``qtype`` label of a query type."""
    return _QTYPE_NAMES.get(qtype, OTHER_QTYPE)


def rcode_name(rcode: int) -> str:
    """The ``rcode`` label: RFC 1035/6895 mnemonic, else the number."""
    return _RCODE_NAMES.get(rcode, str(rcode))


_RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS",
}  # fmt: skip


class AnswerTally:
    """Answers counted by (answerer, qtype class, rcode) in one flat list.

    ``index`` (slow path: a dict lookup) gives the slot of a label set;
    whoever answers then does ``counts[slot] += 1``. The list only grows
    (``append`` keeps its identity, so the fast path can hold it).
    """

    def __init__(self) -> None:
        self.counts: list[int] = [0]  # slot UNCOUNTED
        self._slots: dict[tuple[str, str, int], int] = {}
        self._labels: list[tuple[str, str, int]] = [("", "", 0)]

    def index(self, answerer: str, qtype: int, rcode: int) -> int:
        key = (answerer, qtype_class(qtype), rcode)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = len(self.counts)
            self._labels.append(key)
            self.counts.append(0)
        return slot

    def answerer_of(self, slot: int) -> str:
        """The answerer of a slot ("" for ``UNCOUNTED``)."""
        return self._labels[slot][0]

    def items(self) -> Iterator[tuple[tuple[str, str, int], int]]:
        """((answerer, qtype class, rcode), count) of every slot used so far."""
        counts = self.counts
        for slot in range(1, len(self._labels)):
            yield self._labels[slot], counts[slot]

    def total(self, answerer: str) -> int:
        return sum(n for (who, _, _), n in self.items() if who == answerer)


# -- histograms ------------------------------------------------------------------

# Answer latency on the slow path: from a catalog answer built in tens of
# microseconds to an upstream that takes the whole forward deadline.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)  # fmt: skip


class Histogram:
    """Bucket counts, a sum and a count in plain values: ``observe`` is a bisect
    and two additions, no lock (everything runs on one event loop)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs as Prometheus wants them, +Inf last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


# -- plain counters that form labelled families ----------------------------------

# counters[name] -> (family, labels). Every other plain counter is exported
# as dns_gateway_<name>_total with its help text from COUNTER_HELP.
_GROUPED: dict[str, tuple[str, dict[str, str]]] = {
    "udp_queries": ("queries", {"transport": "udp"}),
    "tcp_queries": ("queries", {"transport": "tcp"}),
    "stale_served": ("cache_stale_answers", {"reason": "upstream_failed"}),
    "stale_on_timer": ("cache_stale_answers", {"reason": "client_timeout"}),
    "forwarded": ("cache_misses", {}),
}
_FAMILY_HELP = {
    "queries": "DNS queries received, by transport.",
    "cache_stale_answers": (
        "Expired cached answers served (RFC 8767): every upstream failed, or the "
        "client-response timer ran out."
    ),
    "cache_misses": "Forwardable questions not answered from the cache (sent upstream or joined).",
}
COUNTER_HELP = {
    "slow": "Queries that took the slow path (parsed, routed) instead of a prepared answer.",
    "formerr": "Queries that could not be parsed (answered FORMERR).",
    "internal_errors": "Bugs caught while answering (answered SERVFAIL); see the log.",
    "truncated": "Forwarded answers truncated to the client's size limit (TC set).",
    "access_refused": "Queries from clients outside --allow, answered REFUSED.",
    "access_dropped": "Queries from clients outside --allow, dropped.",
    "recursion_refused": "Forwardable queries from clients outside --allow-recursion, REFUSED.",
    "recursion_dropped": "Forwardable queries from clients outside --allow-recursion, dropped.",
    "rrl_limited": "UDP answers over the response rate limit.",
    "rrl_dropped": "UDP answers dropped by the response rate limit.",
    "rrl_slipped": "UDP answers sent truncated (TC) by the response rate limit.",
    "amplification_truncated": "UDP answers truncated by the amplification bound.",
    "cache_hits": "Forwarded answers served from the cache on the slow path.",
    "upstream_unusable": "Upstream replies the cache would not store.",
}


class Metrics:
    """The plain values (see the module doc) and the collector that exports them."""

    def __init__(self) -> None:
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.tally = AnswerTally()
        self.latency: dict[str, Histogram] = {name: Histogram() for name in ANSWERERS}
        self._gauges: dict[str, tuple[Callable[[], float], str]] = {}
        self._read_counters: dict[str, tuple[Callable[[], float], str]] = {}
        self._families: list[Callable[[], Iterable[Metric]]] = []
        self._ready: dict[str, Callable[[], bool]] = {}
        # Anyone who can reach the endpoint can scrape it as often as they like.
        self._log = RateLimitedLog(log, counts=self.counters)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- what the parts register ---------------------------------------------------

    def gauge(self, name: str, read: Callable[[], float], help: str = "") -> None:
        """``dns_gateway_<name>``: a value that goes up and down, read at scrape time."""
        self._gauges[name] = (read, help)

    def counter(self, name: str, read: Callable[[], float], help: str = "") -> None:
        """``dns_gateway_<name>_total``: a count kept elsewhere, read at scrape time."""
        self._read_counters[name] = (read, help)

    def family(self, produce: Callable[[], Iterable[Metric]]) -> None:
        """Labelled families built at scrape time (names with PREFIX)."""
        self._families.append(produce)

    def readiness(self, name: str, check: Callable[[], bool]) -> None:
        """``/ready`` answers 200 only while every check is true."""
        self._ready[name] = check

    def not_ready(self) -> list[str]:
        """The readiness checks that fail now."""
        return [name for name, check in self._ready.items() if not check()]

    # -- the collector ------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every family (``prometheus_client`` calls this on each scrape)."""
        yield from self._answers()
        yield from self._latency()
        yield from self._plain_counters()
        yield from self.registered()

    def registered(self) -> Iterator[Metric]:
        """Only what the parts registered (``gauge``, ``counter``, ``family``): the
        Consul watcher process sends these on to the workers."""
        for name, (read, help) in sorted(self._read_counters.items()):
            value = self._read(name, read)
            if value is not None:
                yield CounterMetricFamily(PREFIX + name, help or _default_help(name), value=value)
        for name, (read, help) in sorted(self._gauges.items()):
            value = self._read(name, read)
            if value is not None:
                yield GaugeMetricFamily(PREFIX + name, help or _default_help(name), value=value)
        for produce in self._families:
            try:
                yield from list(produce())
            except Exception as exc:  # a broken family must not break the endpoint
                self._log.error("family", "metric family failed", exc_info=exc)

    def _read(self, name: str, read: Callable[[], float]) -> float | None:
        try:
            return float(read())
        except Exception as exc:  # a broken gauge must not break the endpoint
            self._log.error("gauge", "metric %s failed", name, exc_info=exc)
            return None

    def _answers(self) -> Iterator[Metric]:
        responses = CounterMetricFamily(
            PREFIX + "responses",
            "DNS answers sent, by answerer, query type and rcode.",
            labels=("answerer", "qtype", "rcode"),
        )
        for (answerer, qtype, rcode), count in self.tally.items():
            responses.add_metric((answerer, qtype, rcode_name(rcode)), count)
        yield responses
        hits = self.tally.total(CACHE) + self.counters.get("cache_hits", 0)
        yield CounterMetricFamily(
            PREFIX + "cache_hits",
            "Forwardable questions answered from the cache (fast and slow path).",
            value=hits,
        )

    def _latency(self) -> Iterator[Metric]:
        yield histogram_family(
            "answer_duration_seconds",
            "Time from a query's arrival on the slow path to its answer, by answerer "
            "(prepared fast-path answers are not timed).",
            ("answerer",),
            (((answerer,), histogram) for answerer, histogram in self.latency.items()),
        )

    def _plain_counters(self) -> Iterator[Metric]:
        grouped: dict[str, CounterMetricFamily] = {}
        for family, labels in _GROUPED.values():
            if family not in grouped:
                grouped[family] = CounterMetricFamily(
                    PREFIX + family, _FAMILY_HELP[family], labels=tuple(labels)
                )
        for key, (family, labels) in _GROUPED.items():
            grouped[family].add_metric(tuple(labels.values()), self.counters.get(key, 0))
        yield from grouped.values()
        # The known ones from the start, at 0: a rate over a counter that
        # appears only with its first event would have no data before it.
        counters = self.counters
        for name in sorted(counters.keys() | COUNTER_HELP.keys()):
            if name in _GROUPED or name == "cache_hits":
                continue
            help = COUNTER_HELP.get(name) or _default_help(name)
            yield CounterMetricFamily(PREFIX + name, help, value=counters.get(name, 0))

    # -- rendering --------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        """Every sample as ``{sample_key: value}`` (tests and tools)."""
        return {
            sample_key(sample.name, sample.labels): sample.value
            for family in self.collect()
            for sample in family.samples
        }

    def render(self) -> bytes:
        """The Prometheus text exposition format (0.0.4)."""
        return generate_latest(self.registry)


def counter_family(
    name: str, help: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> CounterMetricFamily:
    """``dns_gateway_<name>_total`` with one sample per (label values, count) row."""
    return _filled(CounterMetricFamily(PREFIX + name, help, labels=labels), rows)


def gauge_family(
    name: str, help: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]
) -> GaugeMetricFamily:
    """``dns_gateway_<name>`` with one sample per (label values, value) row."""
    return _filled(GaugeMetricFamily(PREFIX + name, help, labels=labels), rows)


_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


def _filled(family: _Family, rows: Iterable[tuple[Sequence[str], float]]) -> _Family:
    for values, value in rows:
        family.add_metric(values, value)
    return family


def histogram_family(
    name: str, help: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], Histogram]]
) -> HistogramMetricFamily:
    """``dns_gateway_<name>`` histograms, one per (label values, histogram) row."""
    family = HistogramMetricFamily(PREFIX + name, help, labels=labels)
    for values, histogram in rows:
        family.add_metric(values, histogram.buckets(), histogram.sum)
    return family


def sample_key(name: str, labels: dict[str, str]) -> str:
    """``name{a="x",b="y"}`` without PREFIX, labels sorted: one sample's key."""
    short = name.removeprefix(PREFIX)
    if not labels:
        return short
    return short + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _default_help(name: str) -> str:
    return name.replace("_", " ").capitalize() + "."


# -- the HTTP endpoint ---------------------------------------------------------------

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HTTP_READ_TIMEOUT_S = 5.0
# The request line and headers of a scrape; anything longer is not one.
MAX_REQUEST_BYTES = 8192


def respond(metrics: Metrics, request_line: bytes) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request line: no I/O, tested alone."""
    parts = request_line.split()
    if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
        return 405, "text/plain", b"only GET\n"
    path = parts[1].split(b"?", 1)[0]
    if path == b"/metrics":
        return 200, CONTENT_TYPE, metrics.render()
    if path == b"/health":
        # The event loop ran this: the process is alive and not stuck.
        return 200, "text/plain", b"ok\n"
    if path == b"/ready":
        failing = metrics.not_ready()
        if failing:
            return 503, "text/plain", ("not ready: " + ", ".join(failing) + "\n").encode()
        return 200, "text/plain", b"ready\n"
    return 404, "text/plain", b"/metrics, /health, /ready\n"


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def serve_http(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """``/metrics``, ``/health`` and ``/ready`` over HTTP/1.0, one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HTTP_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = respond(metrics, head[: head.find(b"\r\n")])
            head_only = head.startswith(b"HEAD ")
            writer.write(
                f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + (b"" if head_only else body)
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_BYTES)
