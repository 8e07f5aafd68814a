"""The answers of the hosts files and the RFC 6761 local names, from memory.

A :class:`HostsTable` is immutable: a changed file gives a new table, which
the resolver swaps in whole (``gateway.hosts.watch``). Answers follow
dnsmasq's, which reads ``/etc/hosts`` the same way:

- a name of a hosts file: its A and AAAA records (several lines may give a
  name several addresses), any letter case, with or without a dot in it;
  another type at a known name is NODATA (NOERROR, empty, no SOA: there is
  no zone to take one from). dnsmasq 2.90 forwards those types instead,
  which sends local names (``myhost MX``) upstream;
- the reverse name of an address: PTR to the first name of the first line
  holding it (as dnsmasq and glibc); another type there is not ours and is
  forwarded, like any reverse name the hosts files do not know;
- ``localhost.`` and the loopback reverse names: ``local_names`` (the
  files' loopback lines are added there); where a file names a localhost
  name too, its records come first and the zone fills in the other types
  (``127.0.0.1 localhost`` alone still gives ``localhost. AAAA ::1``).

TTL: ``--local-ttl`` (dnsmasq's ``local-ttl``, default 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.reversename

from gateway.dns import wire
from gateway.dns.codec import Answer, Record
from gateway.hosts import local_names
from gateway.hosts.parse import HostsLine
from gateway.zones import zone as zones

_ADDRESS_TYPES = {4: wire.A, 6: wire.AAAA}
# Every local zone ends in one of these (lower-case wire): localhost. and *.arpa.
_LOCAL_ZONE_ENDS = (b"\x09localhost\x00", b"\x04arpa\x00")


class HostsTable:
    """Names and reverse names of hosts-file lines, plus the local names."""

    __slots__ = ("_names", "_reverse", "_zones", "ttl")

    def __init__(self, lines: Iterable[HostsLine] = (), ttl: int = 0) -> None:
        self.ttl = ttl
        # Lower-case wire name -> its A and AAAA records, in file order.
        self._names: dict[bytes, list[Record]] = {}
        # Lower-case wire reverse name -> the PTR target (wire).
        self._reverse: dict[bytes, bytes] = {}
        ptr: dict[local_names.Address, str] = {}
        for line in lines:
            rtype = _ADDRESS_TYPES[line.address.version]
            rdata = line.address.packed
            for name in line.names:
                owner = wire.to_wire(name + ".")
                records = self._names.setdefault(owner, [])
                if not any(r.rtype == rtype and r.rdata == rdata for r in records):
                    records.append(Record(owner, rtype, ttl, rdata))
            # The first name of the first line with the address is its PTR.
            if line.address not in ptr:
                ptr[line.address] = line.names[0]
                reverse = wire.to_wire(dns.reversename.from_address(str(line.address)))
                self._reverse[reverse] = wire.to_wire(line.names[0] + ".")
        self._zones = local_names.build(ttl, ptr)

    def __len__(self) -> int:
        """How many names the hosts files give (a metric)."""
        return len(self._names)

    def _zone_of(self, name: bytes) -> zones.Zone | None:
        """The local zone ``name`` (lower-case wire) is at or below, if any."""
        if not name.endswith(_LOCAL_ZONE_ENDS):
            return None  # most names: one test instead of a walk over their labels
        found = wire.longest_suffix(name, self._zones)
        return found[1] if found is not None else None

    def claims(self, name: bytes) -> bool:
        """Whether a lower-case wire name is answered here (routing)."""
        return name in self._names or name in self._reverse or self._zone_of(name) is not None

    def answer(self, query: wire.Query) -> Answer | None:
        """The answer to ``query``, or None where the name is not ours (forward it)."""
        name = query.qname_wire.lower()
        qtype = query.qtype
        records = self._names.get(name)
        if records is not None:
            found = tuple(r for r in records if qtype in (r.rtype, wire.ANY))
            if found:
                return Answer(wire.NOERROR, answer=found)
        zone = self._zone_of(name)
        if zone is not None:
            return zones.answer(zone, query)
        if records is not None:
            return Answer(wire.NOERROR)  # NODATA
        target = self._reverse.get(name)
        if target is not None and qtype in (wire.PTR, wire.ANY):
            return Answer(wire.NOERROR, answer=(Record(name, wire.PTR, self.ttl, target),))
        return None
