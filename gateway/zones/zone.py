"""Static local zones from RFC 1035 zone files, answered authoritatively.

dnspython parses the files once at start; the records are then kept as
plain wire values, so answering touches no DNS library. Supports in-zone
CNAME chains, wildcards (RFC 4592, simple form), delegations (referral
with glue), NXDOMAIN vs NODATA (empty non-terminals are NODATA), and the
SOA in negative answers with TTL min(SOA TTL, MINIMUM) (RFC 2308 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

from gateway.dns import wire
from gateway.dns.codec import Answer, Record
from gateway.errors import StartupError

ZONE_SUFFIXES = (".zone", ".db")
# In-zone CNAME chains longer than this are cut (loops are possible).
MAX_CNAME_CHAIN = 8


class ZoneFileError(StartupError):
    """A zone file that cannot be served; names the file (and line where known)."""


@dataclass(frozen=True)
class Zone:
    """One zone's records by (owner, type); owners are dnspython names."""

    origin: dns.name.Name
    records: dict[tuple[dns.name.Name, int], tuple[Record, ...]]
    names: frozenset[dns.name.Name]
    soa: Record
    cuts: frozenset[dns.name.Name]  # delegated names below the apex

    def rrset(self, name: dns.name.Name, rtype: int) -> tuple[Record, ...]:
        return self.records.get((name, rtype), ())


def load_zone(path: Path, *, allow_include: bool = False) -> Zone:
    """One zone file; ``$INCLUDE`` only with ``allow_include`` (it reads any file)."""
    default_origin = path.name
    for suffix in ZONE_SUFFIXES:
        if default_origin.endswith(suffix):
            default_origin = default_origin[: -len(suffix)]
    try:
        zone = dns.zone.from_file(
            str(path), origin=default_origin, relativize=False, allow_include=allow_include
        )
    except (dns.exception.DNSException, ValueError) as exc:
        hint = " (allow it with --zone-include)" if "$INCLUDE" in str(exc) else ""
        raise ZoneFileError(f"{path}: zone file error: {exc}{hint}") from None
    except OSError as exc:
        raise ZoneFileError(f"{path}: cannot read: {exc.strerror}") from None
    return from_dnspython(zone, str(path))


def from_text(text: str, origin: str) -> Zone:
    """A zone from master-file text (built-in zones); ZoneFileError if it is bad."""
    try:
        zone = dns.zone.from_text(text, origin=origin, relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ZoneFileError(f"zone {origin!r}: {exc}") from None
    return from_dnspython(zone, f"zone {origin!r}")


def from_dnspython(zone: dns.zone.Zone, source: str) -> Zone:
    """The answerable form of a parsed zone; ``source`` names it in errors."""
    assert zone.origin is not None  # from_file and from_text always set it
    origin = zone.origin
    records: dict[tuple[dns.name.Name, int], list[Record]] = {}
    soa: Record | None = None
    negative_ttl = 0
    for name, node in zone.nodes.items():
        owner = wire.to_wire(name)
        for rdataset in node.rdatasets:
            if rdataset.rdclass != dns.rdataclass.IN:
                continue
            for rdata in rdataset:
                rdata_wire = rdata.to_wire()
                assert rdata_wire is not None
                rec = Record(owner, int(rdataset.rdtype), rdataset.ttl, rdata_wire)
                records.setdefault((name, int(rdataset.rdtype)), []).append(rec)
                if rdataset.rdtype == dns.rdatatype.SOA and name == origin:
                    soa = rec
                    negative_ttl = min(rdataset.ttl, int(rdata.minimum))
    if soa is None:
        raise ZoneFileError(f"{source}: zone {_text(origin)!r} has no SOA record at its apex")
    negative_soa = Record(soa.name, soa.rtype, negative_ttl, soa.rdata)
    names = frozenset(name for name, _ in records)
    cuts = frozenset(n for n, t in records if t == wire.NS and n != origin)
    return Zone(
        origin=origin,
        records={k: tuple(v) for k, v in records.items()},
        names=names,
        soa=negative_soa,
        cuts=cuts,
    )


def load_zones(path: Path, *, allow_include: bool = False) -> dict[dns.name.Name, Zone]:
    """Every zone file in a folder (``*.zone``, ``*.db``), or one file.

    A folder that cannot be listed is an error naming it, never "no zones".
    """
    try:
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.name.endswith(ZONE_SUFFIXES)
            )
        else:
            files = [path]
    except OSError as exc:
        raise ZoneFileError(f"{path}: cannot read the zones folder: {exc.strerror}") from None
    zones: dict[dns.name.Name, Zone] = {}
    for file in files:
        zone = load_zone(file, allow_include=allow_include)
        if zone.origin in zones:
            raise ZoneFileError(f"{file}: zone {_text(zone.origin)!r} is defined twice")
        zones[zone.origin] = zone
    return zones


def describe(zone_set: dict[dns.name.Name, Zone]) -> str:
    """The origins of a zone set for a log line ("none" for no zones)."""
    return ", ".join(sorted(_text(o) for o in zone_set)) or "none"


def _text(name: dns.name.Name) -> str:
    return str(name.to_text(omit_final_dot=True))


def answer(zone: Zone, query: wire.Query) -> Answer:
    """The authoritative answer for a name at or below the zone's origin."""
    name = query.qname
    qtype = query.qtype
    owner = query.qname_wire.lower()
    cut = _delegation(zone, name)
    if cut is not None:
        return _referral(zone, cut)
    chain: list[Record] = []
    seen = {name}
    for _ in range(MAX_CNAME_CHAIN):
        found = _lookup(zone, name, owner)
        if found is None:
            if chain:
                return Answer(wire.NOERROR, answer=tuple(chain))
            rcode = wire.NOERROR if _is_empty_non_terminal(zone, name) else wire.NXDOMAIN
            return Answer(rcode, authority=(zone.soa,))
        source, owner = found
        if qtype == wire.ANY:
            # RFC 8482: one RRset is a complete answer to ANY.
            for rtype in sorted({t for n, t in zone.records if n == source}):
                return Answer(wire.NOERROR, answer=(*chain, *_own(zone, source, rtype, owner)))
        direct = _own(zone, source, qtype, owner)
        if direct:
            return Answer(wire.NOERROR, answer=(*chain, *direct))
        cname = _own(zone, source, wire.CNAME, owner)
        if not cname or qtype == wire.CNAME:
            if chain:
                return Answer(wire.NOERROR, answer=tuple(chain))
            return Answer(wire.NOERROR, authority=(zone.soa,))
        chain.extend(cname)
        target = dns.name.from_wire(cname[0].rdata, 0)[0]
        if target in seen or not target.is_subdomain(zone.origin):
            # Out of zone (the client's resolver follows it) or a loop.
            return Answer(wire.NOERROR, answer=tuple(chain))
        seen.add(target)
        name, owner = target, cname[0].rdata
    return Answer(wire.NOERROR, answer=tuple(chain))


def _own(zone: Zone, source: dns.name.Name, rtype: int, owner: bytes) -> tuple[Record, ...]:
    """The RRset of ``source`` renamed to ``owner`` (differs for wildcards)."""
    return tuple(
        Record(owner, r.rtype, r.ttl, r.rdata, r.rclass) for r in zone.rrset(source, rtype)
    )


def _lookup(zone: Zone, name: dns.name.Name, owner: bytes) -> tuple[dns.name.Name, bytes] | None:
    if name in zone.names:
        return name, owner
    # RFC 4592: the wildcard at the closest encloser matches a missing name.
    encloser = name
    while encloser != zone.origin and len(encloser) > 1:
        encloser = encloser.parent()
        if encloser in zone.names or _is_empty_non_terminal(zone, encloser):
            wildcard = dns.name.Name((b"*", *encloser.labels))
            return (wildcard, owner) if wildcard in zone.names else None
    return None


def _is_empty_non_terminal(zone: Zone, name: dns.name.Name) -> bool:
    return any(n != name and n.is_subdomain(name) for n in zone.names)


def _delegation(zone: Zone, name: dns.name.Name) -> dns.name.Name | None:
    for cut in zone.cuts:
        if name.is_subdomain(cut):
            return cut
    return None


def _referral(zone: Zone, cut: dns.name.Name) -> Answer:
    ns = zone.rrset(cut, wire.NS)
    glue: list[Record] = []
    for rec in ns:
        target = dns.name.from_wire(rec.rdata, 0)[0]
        glue.extend(zone.rrset(target, wire.A))
        glue.extend(zone.rrset(target, wire.AAAA))
    return Answer(wire.NOERROR, authority=ns, additional=tuple(glue), authoritative=False)
