"""The cache of forwarded answers: wire templates with TTLs that count down.

An upstream answer is stored once as a template (ID 0, RD/CD clear, the
question in lower case, our own OPT or none, by the client's EDNS state),
plus where each record's TTL sits. A hit patches the TTLs at most once a
second (age changes in whole seconds) and otherwise returns stored bytes.

- Lifetime: the smallest answer TTL; negative answers (NXDOMAIN, NODATA)
  live min(SOA TTL, SOA MINIMUM) (RFC 2308 5) and are not cached without
  an SOA unless ``neg_ttl`` says for how long (dnsmasq's ``neg-ttl``);
  none at all without ``negcache``; clamped by the configured bounds.
- ``client_max_ttl`` (dnsmasq's ``max-ttl``) caps the TTLs clients see,
  while the entry lives as long as its real TTL: applied when the TTLs are
  patched (at most once a second per entry), never per query.
- Bounded by entry count and by estimated bytes (:func:`entry_bytes`),
  least recently used evicted: a flood of random names fills the cache to
  its byte bound, not to 100,000 entries of any size.
- Serve-stale (RFC 8767): an expired entry stays for ``serve_stale``
  seconds and may answer, with TTL ``stale_answer_ttl`` (RFC 8767 4
  recommends 30 s), when every upstream fails.
- Keyed by the fast-path key, which includes the DO bit, so DNSSEC and
  plain answers never mix.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.dns import verify, wire

_TTL = struct.Struct("!I")
# Flag bits cleared in a template's first flag byte: AA (we did not author
# it) and RD (copied from each query).
_AA_AND_RD = (wire.FLAG_AA | wire.FLAG_RD) >> 8
# A template is a response to a standard query: QR set, opcode QUERY (first flag byte).
_QR_AND_OPCODE = (wire.FLAG_QR | wire.OPCODE_MASK) >> 8
_QR_ONLY = wire.FLAG_QR >> 8


# No byte bound (tests that only care about other rules).
UNBOUNDED = 2**62
# A key ends in qtype, qclass and one EDNS byte after the name: key[:KEY_SUFFIX] is the name.
KEY_SUFFIX = -5
# What a cached answer costs in memory besides its template and TTL places,
# in bytes: the tuple, its floats, the key's bytes header and the
# OrderedDict's slot and link (tracemalloc, CPython 3.11; a test keeps it honest).
ENTRY_BYTES = 300


@dataclass(frozen=True, slots=True)
class CachePolicy:
    max_entries: int
    min_ttl: int
    max_ttl: int
    negative_max_ttl: int
    serve_stale: float
    stale_answer_ttl: int
    max_bytes: int = UNBOUNDED
    neg_ttl: int = 0  # lifetime of negative answers without an SOA; 0: not cached
    negcache: bool = True  # cache negative answers at all
    client_max_ttl: int = 0  # largest TTL handed out; 0: no cap


# A cached answer is a flat tuple of bytes, ints and floats. CPython stops
# tracking such tuples in its cyclic garbage collector, so a cache of 100,000
# answers adds nothing to the collector's full passes; objects with slots
# would be tracked and walked each time (measured: the long tail of p99
# latency under cache misses). The slots are named here, once; the fast path
# (gateway.dns.fastpath) reads them by these names. ``Final`` int constants
# keep mypy's per-slot types precise.
CachedAnswer = tuple[bytes, int, bytes, bytes, float, float, float, int]
WIRE: Final = 0  # the template with TTLs as of AGE
AGE: Final = 1  # whole seconds since stored, as patched into WIRE
BASE: Final = 2  # the template as stored
PLACES: Final = 3  # packed (offset, original TTL) pairs
STORED: Final = 4  # clock time when stored
EXPIRES: Final = 5  # clock time when it stops being fresh
STALE_UNTIL: Final = 6  # end of the serve-stale window (RFC 8767)
TALLY: Final = 7  # the answer's slot in the metrics' answer tally (fast-path hits count there)
_TTL_PLACE = struct.Struct("!HI")


def entry_bytes(key: bytes, entry: CachedAnswer) -> int:
    """Estimated bytes one cached answer holds, the same all its life.

    The template is counted twice: once aged (``current``), WIRE is a copy
    of BASE with other TTLs.
    """
    return ENTRY_BYTES + len(key) + 2 * len(entry[BASE]) + len(entry[PLACES])


def aged(entry: CachedAnswer, age: int, cap: int = 0) -> CachedAnswer:
    """The entry with its wire's TTLs lowered by ``age`` seconds (never below 0),
    none above ``cap`` (0: no cap)."""
    buf = bytearray(entry[BASE])
    for offset, ttl in _TTL_PLACE.iter_unpack(entry[PLACES]):
        left = ttl - age if ttl > age else 0
        _TTL.pack_into(buf, offset, min(left, cap) if cap else left)
    return (
        bytes(buf),
        age,
        entry[BASE],
        entry[PLACES],
        entry[STORED],
        entry[EXPIRES],
        entry[STALE_UNTIL],
        entry[TALLY],
    )


def with_ttl(entry: CachedAnswer, ttl: int) -> bytes:
    """The template with every TTL set to ``ttl`` (stale answers, RFC 8767 4)."""
    buf = bytearray(entry[BASE])
    for offset, _ in _TTL_PLACE.iter_unpack(entry[PLACES]):
        _TTL.pack_into(buf, offset, ttl)
    return bytes(buf)


class ForwardCache:
    """LRU of cached answers by fast-path key, with an injected clock."""

    def __init__(self, policy: CachePolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        # Public for the hot path (fastpath.make_fast_answer), which reads them.
        self.clock = clock
        self.entries: OrderedDict[bytes, CachedAnswer] = OrderedDict()
        self.bytes = 0  # estimated bytes of the entries (entry_bytes), a metric
        self.evicted = 0  # entries dropped to stay within the bounds, a metric
        # The answer-tally slot of a response stored under a key (its qtype and
        # rcode); the metrics set it (Metrics.tally), 0 counts nowhere.
        self.tally_of: Callable[[bytes, bytes], int] = _no_tally

    def __len__(self) -> int:
        return len(self.entries)

    def current(self, key: bytes, entry: CachedAnswer, now: float) -> bytes:
        """``entry``'s template with TTLs as of ``now``; re-aged once a second.

        Re-aging also moves the entry to the LRU's young end: recency is
        kept to the second, which is enough for eviction and keeps a hit
        that needs no new TTLs down to a tuple lookup.
        """
        age = int(now - entry[STORED])
        if age != entry[AGE]:
            entry = aged(entry, age, self._policy.client_max_ttl)
            self.entries[key] = entry
            self.entries.move_to_end(key)
        return entry[WIRE]

    def fresh(self, key: bytes) -> bytes | None:
        """The template for ``key`` if it has not expired."""
        found = self._kept(key)
        if found is None:
            return None
        entry, now = found
        if now >= entry[EXPIRES]:
            return None
        return self.current(key, entry, now)

    def stale(self, key: bytes) -> bytes | None:
        """The template for ``key``, expired or not, while inside the serve-stale window."""
        found = self._kept(key)
        if found is None:
            return None
        entry, now = found
        if now < entry[EXPIRES]:
            return self.current(key, entry, now)
        return with_ttl(entry, self._policy.stale_answer_ttl)

    def _kept(self, key: bytes) -> tuple[CachedAnswer, float] | None:
        """The entry and the time, unless it is missing or past its serve-stale window
        (then it is dropped)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry[STALE_UNTIL]:
            del self.entries[key]
            self.bytes -= entry_bytes(key, entry)
            return None
        return entry, now

    def drop_names(self, claimed: Callable[[bytes], bool]) -> int:
        """Drops the entries whose name (lower-case wire) is ``claimed``; how many.

        A key is the name, qtype, qclass and one EDNS byte (``fastpath``).
        Walks every entry: for a change of local data, not per query.
        """
        doomed = [key for key in self.entries if claimed(key[:KEY_SUFFIX])]
        for key in doomed:
            self.bytes -= entry_bytes(key, self.entries.pop(key))
        return len(doomed)

    def for_client(self, template: bytes, layout: wire.Layout) -> bytes:
        """A fresh template with no TTL above ``client_max_ttl`` (dnsmasq's ``max-ttl``).

        For the reply that filled the cache (hits are capped when aged).
        ``layout`` is the template's own (``make_template`` keeps offsets).
        """
        cap = self._policy.client_max_ttl
        if not cap:
            return template
        buf = bytearray(template)
        for record in (*layout.answer, *layout.authority, *layout.additional):
            if record.rtype != wire.OPT and record.ttl > cap:
                _TTL.pack_into(buf, record.ttl_offset, cap)
        return bytes(buf)

    def put(self, key: bytes, template: bytes, layout: wire.Layout | None = None) -> int | None:
        """Stores a response template; returns its lifetime, None if not cacheable.

        ``layout``, when the caller has walked the message already (the
        template from :func:`make_template`), saves walking it again.
        """
        if self._policy.max_entries <= 0:
            return None
        lifetime_and_ttls = cacheable(template, self._policy, layout)
        if lifetime_and_ttls is None:
            return None
        lifetime, ttls = lifetime_and_ttls
        now = self.clock()
        places = b"".join(_TTL_PLACE.pack(offset, ttl) for offset, ttl in ttls)
        expires = now + lifetime
        stale_until = expires + self._policy.serve_stale
        tally = self.tally_of(key, template)
        entry = (template, 0, template, places, now, expires, stale_until, tally)
        if self._policy.client_max_ttl:
            entry = aged(entry, 0, self._policy.client_max_ttl)
        entries = self.entries
        old = entries.get(key)
        if old is not None:
            self.bytes -= entry_bytes(key, old)
        entries[key] = entry
        entries.move_to_end(key)
        self.bytes += entry_bytes(key, entry)
        max_entries, max_bytes = self._policy.max_entries, self._policy.max_bytes
        while len(entries) > max_entries or (self.bytes > max_bytes and entries):
            evicted_key, evicted = entries.popitem(last=False)
            self.bytes -= entry_bytes(evicted_key, evicted)
            self.evicted += 1
        return lifetime


def _no_tally(key: bytes, template: bytes) -> int:
    return 0


def key_qtype(key: bytes) -> int:
    """The query type in a fast-path key (name, qtype, qclass, one EDNS byte)."""
    return (key[-5] << 8) | key[-4]


def cacheable(
    template: bytes, policy: CachePolicy, layout: wire.Layout | None = None
) -> tuple[int, list[tuple[int, int]]] | None:
    """(lifetime, TTL places) for a response, or None when it must not be cached."""
    if layout is None:
        try:
            layout = verify.walk_strict(template)
        except wire.FormatError:
            return None
    flags = struct.unpack_from("!H", template, 2)[0]
    rcode = flags & 0xF
    if flags & wire.FLAG_TC or rcode not in (wire.NOERROR, wire.NXDOMAIN):
        return None
    records = [
        r for r in (*layout.answer, *layout.authority, *layout.additional) if r.rtype != wire.OPT
    ]
    ttls = [(r.ttl_offset, r.ttl) for r in records]
    answers = [r for r in layout.answer if r.rtype != wire.OPT]
    if rcode == wire.NOERROR and answers:
        lifetime = min(r.ttl for r in answers)
        lifetime = min(max(lifetime, policy.min_ttl), policy.max_ttl)
    else:
        if not policy.negcache:
            return None
        soa = next((r for r in layout.authority if r.rtype == wire.SOA), None)
        if soa is not None:
            minimum = _TTL.unpack_from(template, soa.end - 4)[0]
            lifetime = min(soa.ttl, minimum, policy.negative_max_ttl)
        elif policy.neg_ttl:
            lifetime = min(policy.neg_ttl, policy.negative_max_ttl)
        else:
            return None  # RFC 2308 5: no SOA, no negative caching.
        lifetime = max(lifetime, policy.min_ttl)
    if lifetime <= 0:
        return None
    return lifetime, ttls


def make_template(
    response: bytes, *, client_edns: wire.Edns | None, payload: int
) -> tuple[bytes, wire.Layout] | None:
    """An upstream response made into a template for clients with this EDNS state.

    Clears ID, AA, RD and CD (the fast path copies RD/CD from each query;
    a forwarded answer is not authoritative from us), lower-cases the
    question, drops the upstream's OPT record and appends ours when the
    client sent EDNS. Returns None unless the response is a whole message
    (``verify.walk_strict``: every record walked, no trailing bytes) with
    one question and its OPT, if any, last: nothing enters the cache or
    reaches a client that does not parse. (RFC 6891 allows OPT anywhere in
    the additional section; every common server writes it last, and cutting
    it out of the middle would move records that later names may point at.)
    The layout returned with it is the response's: every record sits at the
    same offset in the template (the edits keep lengths; OPT records are
    not cached).
    """
    try:
        layout = verify.walk_strict(response)
    except wire.FormatError:
        return None
    if response[4:6] != b"\x00\x01" or response[2] & _QR_AND_OPCODE != _QR_ONLY:
        return None
    additional = layout.additional
    body_end = len(response)
    arcount = len(additional)
    if additional and additional[-1].rtype == wire.OPT:
        body_end = additional[-1].start
        arcount -= 1
    elif any(r.rtype == wire.OPT for r in additional):
        return None
    qname_end = layout.question_end - 4
    flags_hi = response[2] & ~_AA_AND_RD & 0xFF
    flags_lo = (response[3] & ~(wire.FLAG_CD & 0xFF)) | (wire.FLAG_RA & 0xFF)
    head = b"\x00\x00" + bytes((flags_hi, flags_lo)) + response[4:10]
    tail = b""
    if client_edns is not None:
        tail = wire.opt_record(payload, client_edns.do)
        arcount += 1
    template = b"".join(
        (
            head,
            struct.pack("!H", arcount),
            response[wire.HEADER_LEN : qname_end].lower(),
            response[qname_end:body_end],
            tail,
        )
    )
    return template, layout
