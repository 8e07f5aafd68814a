"""Consul names answered from an immutable catalog snapshot.

The snapshot is the whole view (static files, Consul, or both layered); the
Consul watcher swaps in a new one whole, so an answer never sees half an
update. :class:`CatalogAnswerer` turns (snapshot, query) into an
:class:`~gateway.codec.Answer` with no I/O, or says which service or
prepared query it still has to learn about (the resolver fetches it and
asks again).

Name forms follow Consul's DNS interface (agent/dns.go in v1.16):
``<svc>.service``, ``<tag>.<svc>.service``, ``_<svc>._<tag|tcp|udp>.service``,
``<node>.node``, ``<query>.query``, ``<hex>.addr``, each with an optional
datacenter (``.<dc>`` or ``.<dc>.dc``), under the domain or the alt domain;
``[<tag>.]<svc>.connect`` and ``[<tag>.]<svc>.ingress`` (Connect-capable
instances, ingress gateways) with an optional datacenter;
``<svc>.virtual[.<peer>]`` (the virtual IP); ``<svc>.service.<peer>.peer``
(a cluster peer's instances). The Enterprise labels ``<ns>.ns`` and
``<partition>.ap`` are accepted with CE's only values, ``default``; any
other namespace or partition does not exist here (NXDOMAIN).
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.reversename

from gateway.catalog.model import (
    CONNECT,
    INGRESS,
    KINDS,
    PASSING,
    STATUS_RANK,
    WARNING,
    Instance,
    Node,
    Snapshot,
    peer_locality,
    peer_of,
)
from gateway.catalog.source import CatalogUnavailable
from gateway.dns import wire
from gateway.dns.codec import Answer, Record
from gateway.options import Config


@dataclass(frozen=True, slots=True)
class NeedService:
    """The view has not fetched this service yet: fetch, then ask again.

    ``kind`` is the health endpoint: "service", ``CONNECT`` or ``INGRESS``;
    ``datacenter`` may name a cluster peer (``peer_locality``).
    """

    datacenter: str
    name: str
    kind: str = "service"


@dataclass(frozen=True, slots=True)
class NeedQuery:
    """A prepared query must be executed (or re-executed), then ask again."""

    datacenter: str
    name: str


Outcome = Answer | NeedService | NeedQuery
# The apex NS target, ``ns.<domain>`` (Consul's own name for it).
NS_LABEL = "ns"


# Consul CE has one namespace and one partition, both called this.
CE_DEFAULT = "default"
# The Enterprise locality labels, in the order they may appear.
_ENTERPRISE_LABELS = ("ns", "ap")

_IPV4_REVERSE = dns.name.from_text("in-addr.arpa.")
_IPV6_REVERSE = dns.name.from_text("ip6.arpa.")


def reverse_address(qname: dns.name.Name) -> str | None:
    """The IP address a full PTR name encodes (in-addr.arpa / ip6.arpa), or None.

    Only whole addresses (4 labels, 32 nibbles): a shorter name is a
    network, which the catalog holds no names for.
    """
    if qname.is_subdomain(_IPV4_REVERSE):
        whole = len(qname) == len(_IPV4_REVERSE) + 4
    elif qname.is_subdomain(_IPV6_REVERSE):
        whole = len(qname) == len(_IPV6_REVERSE) + 32
    else:
        return None
    if not whole:
        return None
    try:
        return str(ipaddress.ip_address(dns.reversename.to_address(qname)))
    except (dns.exception.DNSException, ValueError):
        return None


class CatalogAnswerer:
    """Answers names under the Consul domain(s) from a snapshot. No I/O."""

    def __init__(
        self,
        config: Config,
        *,
        on_service: Callable[[str, str], None] | None = None,
        on_endpoint: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self._config = config
        # Told (datacenter, name) of every service looked up: CatalogSource.touch;
        # (kind, datacenter, name) of every connect/ingress one: touch_endpoint.
        self._on_service = on_service
        self._on_endpoint = on_endpoint

    def soa(self, domain: str, serial: int) -> Record:
        c = self._config
        rdata = (
            wire.to_wire(f"ns.{domain}")
            + wire.to_wire(f"hostmaster.{domain}")
            + struct.pack("!IIIII", serial, c.soa_refresh, c.soa_retry, c.soa_expire, c.soa_min_ttl)
        )
        return Record(wire.to_wire(domain), wire.SOA, c.soa_min_ttl, rdata)

    def _negative(self, rcode: int, domain: str, snap: Snapshot) -> Answer:
        return Answer(rcode, authority=(self.soa(domain, snap.serial),))

    def answer(self, snap: Snapshot, query: wire.Query, domain: str) -> Outcome:
        """The answer for ``query``, whose name ends in ``domain``."""
        rel = _labels_below(query.qname, domain)
        if not rel:
            return self._apex(snap, query, domain)
        if rel == [NS_LABEL]:
            return self._ns_host(snap, query, domain)
        if not snap.available:
            raise CatalogUnavailable("no usable catalog view (Consul away too long)")
        kind_at = -1
        for i in range(len(rel) - 1, -1, -1):
            if rel[i] in KINDS:
                kind_at = i
                break
        if kind_at < 0:
            return self._negative(wire.NXDOMAIN, domain, snap)
        kind, head, tail = rel[kind_at], rel[:kind_at], rel[kind_at + 1 :]
        if kind == "virtual":
            return self._virtual(snap, query, domain, head, tail)
        dc = self._locality(tail, peers=kind == "service")
        if dc is None:
            return self._negative(wire.NXDOMAIN, domain, snap)
        if kind == "service":
            return self._service(snap, query, domain, dc, head)
        if kind in (CONNECT, INGRESS):
            return self._endpoint(snap, query, domain, kind, dc, head)
        if kind == "node":
            return self._node(snap, query, domain, dc, head)
        if kind == "addr":
            return self._addr(snap, query, domain, head)
        return self._prepared(snap, query, domain, dc, head)

    def answer_ptr(self, snap: Snapshot, query: wire.Query, address: str) -> Answer:
        """PTR for an address the catalog knows (the router checked it does)."""
        names = snap.reverse(address)
        if query.qtype not in (wire.PTR, wire.ANY):
            return Answer(wire.NOERROR)
        domain = self._config.domain
        owner = query.qname_wire.lower()
        ttl = self._config.node_ttl
        records = tuple(Record(owner, wire.PTR, ttl, wire.to_wire(f"{n}.{domain}")) for n in names)
        return Answer(wire.NOERROR, answer=records)

    def _locality(self, tail: list[str], *, peers: bool = False) -> str | None:
        """The datacenter (or, with ``peers``, ``peer_locality``) the labels
        right of the kind name, or None when they name nothing here.

        Forms: nothing, ``<dc>``, ``<dc>.dc``, ``<peer>.peer``, each after an
        optional ``<ns>.ns`` and ``<partition>.ap`` that must be CE's defaults.
        """
        labels = _strip_enterprise(tail)
        if labels is None:
            return None
        if not labels:
            return self._config.datacenter
        if len(labels) == 1 and len(labels) == len(tail):
            return labels[0]  # the bare <dc> form takes no ns/ap labels
        if len(labels) == 2 and labels[1] == "dc":
            return labels[0]
        if peers and len(labels) == 2 and labels[1] == "peer":
            return peer_locality(labels[0])
        return None

    def _apex(self, snap: Snapshot, query: wire.Query, domain: str) -> Answer:
        owner = wire.to_wire(domain)
        soa = self.soa(domain, snap.serial)
        ns = Record(owner, wire.NS, self._config.soa_min_ttl, wire.to_wire(f"{NS_LABEL}.{domain}"))
        if query.qtype == wire.SOA:
            return Answer(wire.NOERROR, answer=(soa,))
        if query.qtype == wire.NS:
            return Answer(wire.NOERROR, answer=(ns,), additional=self._ns_addresses(domain))
        if query.qtype == wire.ANY:
            return Answer(wire.NOERROR, answer=(soa, ns))
        return Answer(wire.NOERROR, authority=(soa,))

    def _ns_addresses(self, domain: str, qtype: int = wire.ANY) -> tuple[Record, ...]:
        """A/AAAA of ``ns.<domain>``: the addresses the gateway listens on.

        The apex NS names this host, so a resolver that follows it reaches
        the gateway (RFC 8906: the NS target must resolve). A wildcard
        listener (0.0.0.0, ::) stands for its family's loopback address.
        """
        owner = wire.to_wire(f"{NS_LABEL}.{domain}")
        records: list[Record] = []
        for ep in self._config.listen:
            try:
                ip = ipaddress.ip_address(ep.host)
            except ValueError:  # an interface name not resolved (tests building a Config)
                continue
            if ip.is_unspecified:
                ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
            rtype = wire.A if ip.version == 4 else wire.AAAA
            record = Record(owner, rtype, self._config.soa_min_ttl, ip.packed)
            if qtype in (rtype, wire.ANY) and record not in records:
                records.append(record)
        return tuple(records)

    def _ns_host(self, snap: Snapshot, query: wire.Query, domain: str) -> Answer:
        records = self._ns_addresses(domain, query.qtype)
        if records:
            return Answer(wire.NOERROR, answer=records)
        return self._negative(wire.NOERROR, domain, snap)

    def _service(
        self, snap: Snapshot, query: wire.Query, domain: str, dc: str, head: list[str]
    ) -> Outcome:
        if len(head) == 1:
            name, tag = head[0], None
        elif len(head) == 2 and head[0].startswith("_") and head[1].startswith("_"):
            # RFC 2782 form: _service._proto; Consul takes _tcp as "any tag"
            # and anything else, _udp included, as a tag.
            name, tag = head[0][1:], head[1][1:]
            if tag == "tcp":
                tag = None
        elif len(head) == 2:
            tag, name = head
        else:
            return self._negative(wire.NXDOMAIN, domain, snap)
        instances = snap.services.get((dc, name))
        if self._on_service is not None:
            self._on_service(dc, name)
        if instances is None:
            if not snap.complete:
                return NeedService(dc, name)
            return self._negative(wire.NXDOMAIN, domain, snap)
        healthy = self.healthy(instances, tag)
        if not healthy:
            return self._negative(wire.NXDOMAIN, domain, snap)
        return self._instances_answer(
            query, domain, dc, healthy, self._config.ttl_for_service(name), snap
        )

    def _endpoint(
        self, snap: Snapshot, query: wire.Query, domain: str, kind: str, dc: str, head: list[str]
    ) -> Outcome:
        """``[<tag>.]<svc>.connect`` / ``.ingress``: answered like a service from
        that health endpoint's instances (Connect proxies and native services,
        or the ingress gateways exposing the service). No RFC 2782 form, as in
        Consul."""
        if len(head) == 1:
            name, tag = head[0], None
        elif len(head) == 2:
            tag, name = head
        else:
            return self._negative(wire.NXDOMAIN, domain, snap)
        found = self._endpoint_instances(snap, kind, dc, name)
        if found is None:
            return NeedService(dc, name, kind)
        healthy = self.healthy(found, tag)
        if not healthy:
            return self._negative(wire.NXDOMAIN, domain, snap)
        return self._instances_answer(
            query, domain, dc, healthy, self._config.ttl_for_service(name), snap
        )

    def _endpoint_instances(
        self, snap: Snapshot, kind: str, dc: str, name: str
    ) -> tuple[Instance, ...] | None:
        """The kind's instances of (dc, name); None: fetch them first."""
        found = snap.endpoints.get(kind, {}).get((dc, name))
        if self._on_endpoint is not None:
            self._on_endpoint(kind, dc, name)
        if found is None and snap.complete:
            return ()  # a static catalog holds no Connect data
        return found

    def _virtual(
        self, snap: Snapshot, query: wire.Query, domain: str, head: list[str], tail: list[str]
    ) -> Outcome:
        """``<svc>.virtual[.<peer>]``: the service's virtual IP (Consul 1.11+), read
        from the ``consul-virtual`` tagged address of its Connect instances.

        Consul takes the last label before ``virtual`` as the service and any
        single label after it as a peer. Virtual IPs are allocated per
        datacenter, so ``.<dc>.dc`` answers only for the local one. No virtual
        IP (not a Connect service, or unknown): NODATA, as Consul's NOERROR.
        """
        labels = _strip_enterprise(tail)
        if not head or labels is None:
            return self._negative(wire.NXDOMAIN, domain, snap)
        local = self._config.datacenter
        if not labels or labels == [local, "dc"]:
            where: str | None = local
        elif (len(labels) == 1 and len(tail) == 1) or labels[1:] == ["peer"]:
            where = peer_locality(labels[0])
        elif len(labels) == 2 and labels[1] == "dc":
            where = None  # another datacenter's virtual IPs are not ours to give
        else:
            return self._negative(wire.NXDOMAIN, domain, snap)
        name = head[-1]
        found: tuple[Instance, ...] = ()
        if where is not None:
            fetched = self._endpoint_instances(snap, CONNECT, where, name)
            if fetched is None:
                return NeedService(where, name, CONNECT)
            found = fetched
        vip = next((inst.virtual_ip for inst in found if inst.virtual_ip), "")
        rtype, rdata = address_rdata(vip) if vip else (0, b"")
        if query.qtype not in (rtype, wire.ANY) or rtype not in (wire.A, wire.AAAA):
            return self._negative(wire.NOERROR, domain, snap)
        owner = query.qname_wire.lower()
        ttl = self._config.ttl_for_service(name)
        return Answer(wire.NOERROR, answer=(Record(owner, rtype, ttl, rdata),))

    def healthy(self, instances: Iterable[Instance], tag: str | None) -> list[Instance]:
        """Instances Consul would return: never critical or in maintenance."""
        worst_ok = WARNING if not self._config.only_passing else PASSING
        limit = STATUS_RANK[worst_ok]
        out = []
        for inst in instances:
            if STATUS_RANK.get(inst.status, 2) > limit:
                continue
            if tag is not None and not any(t.lower() == tag for t in inst.tags):
                continue
            out.append(inst)
        return out

    def _instances_answer(
        self,
        query: wire.Query,
        domain: str,
        dc: str,
        instances: list[Instance],
        ttl: int,
        snap: Snapshot,
    ) -> Answer:
        owner = query.qname_wire.lower()
        qtype = query.qtype
        if qtype == wire.SRV:
            return self._srv(owner, domain, dc, instances, ttl)
        wanted = {wire.A: (wire.A,), wire.AAAA: (wire.AAAA,), wire.ANY: (wire.A, wire.AAAA)}.get(
            qtype, ()
        )
        records: list[Record] = []
        weights: list[float] = []
        seen: dict[bytes, int] = {}
        for inst in instances:
            rtype, rdata = address_rdata(inst.effective_address)
            if rtype == wire.CNAME:
                # A hostname address: Consul answers with a CNAME to it.
                if qtype in (wire.A, wire.AAAA, wire.ANY):
                    records.append(Record(owner, wire.CNAME, ttl, rdata))
                    weights.append(float(inst.weight))
                continue
            if rtype not in wanted:
                continue
            # Two instances on one address are one record; their weights add.
            at = seen.get(rdata)
            if at is not None:
                weights[at] += inst.weight
                continue
            seen[rdata] = len(records)
            records.append(Record(owner, rtype, ttl, rdata))
            weights.append(float(inst.weight))
        if not records:
            return self._negative(wire.NOERROR, domain, snap)
        sample = self._config.a_record_limit if qtype in (wire.A, wire.AAAA, wire.ANY) else 0
        return Answer(wire.NOERROR, answer=tuple(records), weights=tuple(weights), sample=sample)

    def _srv(
        self, owner: bytes, domain: str, dc: str, instances: list[Instance], ttl: int
    ) -> Answer:
        records: list[Record] = []
        weights: list[float] = []
        extra: list[Record] = []
        glued: set[bytes] = set()
        for inst in instances:
            target, glue = self._srv_target(inst, domain, dc, ttl)
            rdata = struct.pack("!HHH", 1, inst.weight, inst.port) + target
            records.append(Record(owner, wire.SRV, ttl, rdata))
            weights.append(float(inst.weight))
            if target in glued:
                continue
            glued.add(target)
            extra.extend(glue)
            if self._config.node_meta_txt and target.startswith(_node_label(inst, dc, domain)):
                extra.extend(self._meta_txt(target, inst.node, ttl))
        return Answer(
            wire.NOERROR, answer=tuple(records), additional=tuple(extra), weights=tuple(weights)
        )

    def _srv_target(
        self, inst: Instance, domain: str, dc: str, ttl: int
    ) -> tuple[bytes, list[Record]]:
        address = inst.effective_address
        rtype, rdata = address_rdata(address)
        if rtype == wire.CNAME:
            return rdata, []
        if inst.address and inst.address != inst.node.address:
            # A peer's addr names carry no datacenter (as Consul writes them).
            where = f"{dc}." if peer_of(dc) is None else ""
            target = wire.to_wire(f"{encode_addr(address)}.addr.{where}{domain}")
        else:
            target = wire.to_wire(f"{inst.node.name}.node.{dc}.{domain}".lower())
        return target, [Record(target, rtype, ttl, rdata)]

    def _meta_txt(self, owner: bytes, node: Node, ttl: int) -> list[Record]:
        return [
            # RFC 1464 attribute form, "key=" for an empty value, as Consul writes it.
            Record(owner, wire.TXT, ttl, txt_rdata(f"{k}={v}"))
            for k, v in sorted(node.meta.items())
        ]

    def _node(
        self, snap: Snapshot, query: wire.Query, domain: str, dc: str, head: list[str]
    ) -> Answer:
        if len(head) != 1:
            return self._negative(wire.NXDOMAIN, domain, snap)
        node = snap.nodes.get((dc, head[0]))
        if node is None:
            return self._negative(wire.NXDOMAIN, domain, snap)
        owner = query.qname_wire.lower()
        ttl = self._config.node_ttl
        rtype, rdata = address_rdata(node.address)
        answer: list[Record] = []
        extra: list[Record] = []
        if query.qtype in (rtype, wire.ANY) or rtype == wire.CNAME:
            answer.append(Record(owner, rtype, ttl, rdata))
        meta = self._meta_txt(owner, node, ttl)
        if query.qtype in (wire.TXT, wire.ANY):
            answer.extend(meta)
        elif answer and self._config.node_meta_txt:
            extra.extend(meta)
        if not answer:
            return self._negative(wire.NOERROR, domain, snap)
        return Answer(wire.NOERROR, answer=tuple(answer), additional=tuple(extra))

    def _addr(self, snap: Snapshot, query: wire.Query, domain: str, head: list[str]) -> Answer:
        if len(head) != 1:
            return self._negative(wire.NXDOMAIN, domain, snap)
        address = decode_addr(head[0])
        if address is None:
            return self._negative(wire.NXDOMAIN, domain, snap)
        rtype, rdata = address_rdata(address)
        if query.qtype not in (rtype, wire.ANY):
            return self._negative(wire.NOERROR, domain, snap)
        owner = query.qname_wire.lower()
        return Answer(wire.NOERROR, answer=(Record(owner, rtype, self._config.node_ttl, rdata),))

    def _prepared(
        self, snap: Snapshot, query: wire.Query, domain: str, dc: str, head: list[str]
    ) -> Outcome:
        if len(head) == 1:
            name = head[0]
        elif len(head) == 2 and head[0].startswith("_") and head[1].startswith("_"):
            name = head[0][1:]
        else:
            return self._negative(wire.NXDOMAIN, domain, snap)
        result = snap.queries.get((dc, name))
        if result is None:
            if snap.complete:
                return self._negative(wire.NXDOMAIN, domain, snap)
            return NeedQuery(dc, name)
        if not result.instances:
            return self._negative(wire.NXDOMAIN, domain, snap)
        ttl = result.ttl if result.ttl is not None else self._config.ttl_for_service(name)
        return self._instances_answer(
            query, domain, result.datacenter, list(result.instances), ttl, snap
        )


@functools.lru_cache(maxsize=16)
def _domain_name(domain: str) -> dns.name.Name:
    return dns.name.from_text(domain)


def _labels_below(qname: dns.name.Name, domain: str) -> list[str]:
    """The labels of ``qname`` left of ``domain``, as text (a label may hold a dot)."""
    relative = qname.relativize(_domain_name(domain))
    # Non-ASCII bytes never match a Consul name; backslash escapes keep them apart.
    return [label.decode("ascii", "backslashreplace") for label in relative.labels]


def _strip_enterprise(tail: list[str]) -> list[str] | None:
    """``tail`` without leading ``<ns>.ns`` / ``<partition>.ap`` pairs (in that
    order, each at most once); None when one names other than CE's default."""
    allowed = list(_ENTERPRISE_LABELS)
    while len(tail) >= 2 and tail[1] in allowed:
        if tail[0] != CE_DEFAULT:
            return None
        del allowed[: allowed.index(tail[1]) + 1]
        tail = tail[2:]
    return tail


def _node_label(inst: Instance, dc: str, domain: str) -> bytes:
    return wire.to_wire(f"{inst.node.name}.node.{dc}.{domain}".lower())[:-1]


def address_rdata(address: str) -> tuple[int, bytes]:
    """(A, 4 bytes) / (AAAA, 16 bytes) for an IP; (CNAME, name) otherwise."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return wire.CNAME, wire.to_wire(address)
    return (wire.A if ip.version == 4 else wire.AAAA), ip.packed


def encode_addr(address: str) -> str:
    """Consul's ``<hex>.addr`` label for an IP."""
    return ipaddress.ip_address(address).packed.hex()


def decode_addr(label: str) -> str | None:
    if len(label) not in (8, 32):
        return None
    try:
        raw = bytes.fromhex(label)
    except ValueError:
        return None
    return str(ipaddress.ip_address(raw))


def txt_rdata(text: str) -> bytes:
    """TXT rdata: the text in character-strings of at most 255 bytes."""
    raw = text.encode("utf-8")
    if not raw:
        return b"\x00"
    return b"".join(
        bytes((len(raw[i : i + 255]),)) + raw[i : i + 255] for i in range(0, len(raw), 255)
    )
