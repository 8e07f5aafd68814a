"""The fixed world the fuzz targets run in: a catalog, zones, clients, upstream replies.

Shared by the targets (``targets.py``, ``upstream.py``) and the seed writer
(``seeds.py``), so a seed and the target that reads it agree on what a
control byte means and which question a client asks.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gateway.cache.store import CachePolicy, ForwardCache
from gateway.catalog import static as static_catalog
from gateway.catalog.model import PASSING, WARNING, Instance, Node, Snapshot
from gateway.catalog.source import StaticSource
from gateway.dns import wire
from gateway.metrics import Metrics
from gateway.options import EMBEDDED_CATALOG, EMBEDDED_ZONES, Config
from gateway.server.resolver import Resolver
from gateway.zones import zone as zones

Done = Callable[[bytes | None], None]

DATACENTER = "dc1"
# Instances of the two large services added to the embedded catalog: "big"
# (weighted, answers beyond 1232 bytes) and "many" (past weights.MANY_RECORDS,
# the ring of prepared orderings).
BIG_INSTANCES = 60
MANY_INSTANCES = 300
# Small, so eviction (AnswerTable, ForwardCache) happens within a short run.
CACHE_ENTRIES = 64
# Byte bounds (issue 9), small too, so eviction by bytes is fuzzed as well:
# what the targets put in at start fits (~18 kB of forwarded answers, ~240 kB
# of prepared ones), the answers fuzzed inputs add soon push entries out.
CACHE_BYTES = 24 * 1024
PREPARED_BYTES = 256 * 1024
# The cache's clock when the fuzz targets populate it (seconds, arbitrary).
STORED_AT = 1000.0
# Cached upstream answers live this long (seconds) in the replies made here.
UPSTREAM_TTL = 60
# A weighted sample of A/AAAA records (Consul's a_record_limit), so sampled
# answers are fuzzed too.
A_RECORD_LIMIT = 5
CONFIG = Config(
    upstream=(),
    cache_size=CACHE_ENTRIES,
    a_record_limit=A_RECORD_LIMIT,
    prepared_max_bytes=PREPARED_BYTES,
)
MAX_UDP = CONFIG.udp_max_payload
# A TXT answer of this many records of ~200 bytes is ~2 kB: past every UDP limit.
BIG_TXT_STRINGS = 10
BIG_TXT_BYTES = 180


def _instances(service: str, count: int, *, weighted: bool) -> tuple[Instance, ...]:
    out = []
    for i in range(count):
        node = Node(f"{service}-node-{i}", f"10.{i // 250}.{i % 250}.1", DATACENTER)
        out.append(
            Instance(
                service=service,
                service_id=f"{service}-{i}",
                node=node,
                address="" if i % 3 else f"2001:db8::{i:x}",
                port=8000 + i,
                tags=("even",) if i % 2 == 0 else ("odd",),
                weight_passing=1 + i % 7 if weighted else 1,
                weight_warning=1,
                status=WARNING if i % 5 == 0 else PASSING,
            )
        )
    return tuple(out)


def snapshot() -> Snapshot:
    """The embedded catalog (zones/catalog) plus two large services."""
    embedded = static_catalog.load(EMBEDDED_CATALOG, DATACENTER)
    services = dict(embedded.services)
    nodes = dict(embedded.nodes)
    for name, count, weighted in (("big", BIG_INSTANCES, True), ("many", MANY_INSTANCES, False)):
        instances = _instances(name, count, weighted=weighted)
        services[(DATACENTER, name)] = instances
        for inst in instances:
            nodes[(DATACENTER, inst.node.name)] = inst.node
    return replace(embedded, services=services, nodes=nodes, serial=1)


def make_cache(clock: Callable[[], float]) -> ForwardCache:
    policy = CachePolicy(
        max_entries=CACHE_ENTRIES,
        min_ttl=0,
        max_ttl=86400,
        negative_max_ttl=3600,
        serve_stale=86400.0,
        stale_answer_ttl=30,
        max_bytes=CACHE_BYTES,
    )
    return ForwardCache(policy, clock)


def make_resolver(forwarder: object | None, cache: ForwardCache, *, rng_seed: int = 1) -> Resolver:
    """A resolver over :func:`snapshot` and the embedded zones (no sockets)."""
    return Resolver(
        CONFIG,
        source=StaticSource(_SNAPSHOT),
        zone_set=_ZONES,
        forwarder=forwarder,  # type: ignore[arg-type]  # an Upstreams, duck-typed
        cache=cache,
        metrics=Metrics(),
        rng=random.Random(rng_seed),
    )


_SNAPSHOT = snapshot()
_ZONES = zones.load_zones(EMBEDDED_ZONES)


@dataclass(frozen=True)
class Client:
    """A query as a client sends it; ``payload`` 0 means no EDNS."""

    name: str
    rdtype: str
    payload: int = 0
    do: bool = False
    msg_id: int = 0x1234

    def packet(self) -> bytes:
        return _packet(self)

    def question(self) -> bytes:
        """The question as the forwarder sends it: lower-case qname wire + type + class."""
        return _question(self)


# Made once per client: dnspython takes ~0.5 ms to make a query, and the
# upstream target asks for them several times per input.
@functools.cache
def _packet(client: Client) -> bytes:
    msg = dns.message.make_query(
        client.name,
        client.rdtype,
        use_edns=0 if client.payload else False,
        payload=client.payload or 512,
        want_dnssec=client.do,
    )
    msg.id = client.msg_id
    return msg.to_wire()


@functools.cache
def _question(client: Client) -> bytes:
    rdtype = int(dns.rdatatype.from_text(client.rdtype))
    return wire.to_wire(client.name.lower()) + struct.pack("!HH", rdtype, wire.CLASS_IN)


# Names the resolver answers itself (catalog, reverse, zone) and forwarded
# names, asked with several EDNS states: they populate the fast path's
# tables (fastpath target) and seed the query targets.
LOCAL_QUESTIONS = (
    ("web.service.consul.", "A"),
    ("web.service.consul.", "SRV"),
    ("_web._tcp.service.consul.", "SRV"),
    ("v2.web.service.dc1.consul.", "A"),
    ("api.service.consul.", "AAAA"),
    ("api.service.consul.", "ANY"),
    ("db.service.consul.", "A"),
    ("nothere.service.consul.", "A"),
    ("big.service.consul.", "SRV"),
    ("big.service.consul.", "A"),
    ("many.service.consul.", "A"),
    ("web-1.node.consul.", "A"),
    ("web-1.node.dc1.consul.", "TXT"),
    ("11.2.0.192.in-addr.arpa.", "PTR"),
    ("router.home.arpa.", "AAAA"),
    ("nas.home.arpa.", "A"),
    ("_ipp._tcp.home.arpa.", "SRV"),
    ("x.dev.home.arpa.", "A"),
    ("home.arpa.", "SOA"),
    ("missing.home.arpa.", "MX"),
    ("consul.", "SOA"),
)
FORWARDED_QUESTIONS = (
    ("www.example.com.", "A"),
    ("big.example.com.", "TXT"),
    ("nx.example.com.", "AAAA"),
    ("mail.example.com.", "MX"),
)
# (payload, DO): no EDNS, the 512 floor, the common 1232, above our maximum.
EDNS_STATES = ((0, False), (512, False), (1232, True), (4096, False))


def local_clients() -> list[Client]:
    return [
        Client(name, rdtype, payload, do)
        for name, rdtype in LOCAL_QUESTIONS + FORWARDED_QUESTIONS
        for payload, do in EDNS_STATES
    ]


# The clients of the upstream target, chosen by the low nibble of its first
# control byte: forwarded names only, in the EDNS states that change what a
# reply must fit (no EDNS: 512; 1232; 512 with DO; 4096 clamped to 1232).
UPSTREAM_CLIENTS = (
    Client("www.example.com.", "A"),
    Client("www.example.com.", "A", 1232),
    Client("www.example.com.", "A", 512, do=True),
    Client("big.example.com.", "TXT", 4096),
    Client("big.example.com.", "TXT"),
    Client("nx.example.com.", "AAAA", 1232),
    Client("mail.example.com.", "MX", 1400, do=True),
    Client("WwW.ExAmple.COM.", "A", 1232),
    Client("_sip._tcp.example.com.", "SRV"),
    Client("example.com.", "ANY", 1232),
)


def upstream_reply(question: bytes, do: bool, kind: str, *, msg_id: int = 0) -> bytes:
    """A well-formed reply (with EDNS, as upstreams answer the forwarder) to ``question``.

    ``kind``: "answer" (one record of the asked type, or A), "big" (a ~2 kB
    TXT answer), "cname" (a chain ending in an A record), "nxdomain" and
    "nodata" (with an SOA, so negatively cacheable), "servfail".
    """
    qname = dns.name.from_wire(question[:-4], 0)[0]
    rdtype = dns.rdatatype.RdataType.make(int.from_bytes(question[-4:-2], "big"))
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232, want_dnssec=do)
    query.id = msg_id
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    origin = dns.name.from_text("example.com.")
    soa = dns.rrset.from_text(
        origin, 300, "IN", "SOA", "ns.example.com. host.example.com. 1 7200 900 86400 120"
    )
    if kind == "answer":
        response.answer.append(_record(qname, rdtype))
    elif kind == "big":
        texts = [f'"part {i}" "{"x" * BIG_TXT_BYTES}"' for i in range(BIG_TXT_STRINGS)]
        response.answer.append(dns.rrset.from_text(qname, UPSTREAM_TTL, "IN", "TXT", *texts))
    elif kind == "cname":
        target = dns.name.from_text("target.example.com.")
        response.answer.append(
            dns.rrset.from_text(qname, UPSTREAM_TTL, "IN", "CNAME", target.to_text())
        )
        response.answer.append(dns.rrset.from_text(target, UPSTREAM_TTL, "IN", "A", "192.0.2.9"))
    elif kind == "nxdomain":
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(soa)
    elif kind == "nodata":
        response.authority.append(soa)
    elif kind == "servfail":
        response.set_rcode(dns.rcode.SERVFAIL)
    else:
        raise ValueError(kind)
    return response.to_wire(max_size=wire.TCP_LIMIT)


def _record(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
    texts = {
        dns.rdatatype.A: "192.0.2.80",
        dns.rdatatype.AAAA: "2001:db8::80",
        dns.rdatatype.MX: "10 mx.example.com.",
        dns.rdatatype.TXT: '"hello"',
        dns.rdatatype.SRV: "0 5 5060 sip.example.com.",
    }
    if rdtype in texts:
        return dns.rrset.from_text(qname, UPSTREAM_TTL, "IN", rdtype, texts[rdtype])
    return dns.rrset.from_text(qname, UPSTREAM_TTL, "IN", "A", "192.0.2.80")


REPLY_KINDS = ("answer", "big", "cname", "nxdomain", "nodata", "servfail")
