from __future__ import annotations

from dataclasses import replace

import dns.message
import dns.rcode
import dns.rrset

from gateway.cache import store
from gateway.cache.store import CachePolicy, ForwardCache, make_template
from gateway.dns import wire

POLICY = CachePolicy(
    max_entries=3, min_ttl=0, max_ttl=3600, negative_max_ttl=600, serve_stale=100,
    stale_answer_ttl=30,
)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(name: str, ttl: int = 60, *, rcode: int = 0, soa: tuple[int, int] | None = None,
             edns: bool = True) -> bytes:  # fmt: skip
    q = dns.message.make_query(name, "A", use_edns=0 if edns else False)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    if rcode == 0 and soa is None:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1"))
    if soa is not None:
        soa_ttl, minimum = soa
        soa_text = f"ns.example. h.example. 1 2 3 4 {minimum}"
        r.authority.append(dns.rrset.from_text("example.", soa_ttl, "IN", "SOA", soa_text))
    return r.to_wire()


EDNS = wire.Edns(1232, 0, False)


def template(raw: bytes, edns: wire.Edns | None = EDNS) -> bytes:
    out = make_template(raw, client_edns=edns, payload=1232)
    assert out is not None
    template, layout = out

    # Every record but OPT (which is replaced) sits at the same offset.
    def spans(lay: wire.Layout) -> list[wire.RecordSpan]:
        return [r for r in (*lay.answer, *lay.authority, *lay.additional) if r.rtype != wire.OPT]

    assert spans(layout) == spans(wire.walk_response(template))
    return template


def test_ttl_counts_down_and_expires() -> None:
    clock = Clock()
    cache = ForwardCache(POLICY, clock)
    assert cache.put(b"k", template(response("a.example.", 60))) == 60
    clock.now += 10.5
    hit = cache.fresh(b"k")
    assert hit is not None and dns.message.from_wire(hit).answer[0].ttl == 50
    clock.now += 50
    assert cache.fresh(b"k") is None


def test_negative_answers_live_min_of_soa_ttl_and_minimum() -> None:
    cache = ForwardCache(POLICY, Clock())
    nx = template(response("n.example.", rcode=dns.rcode.NXDOMAIN, soa=(300, 45)))
    assert cache.put(b"nx", nx) == 45
    capped = template(response("m.example.", rcode=dns.rcode.NXDOMAIN, soa=(5000, 5000)))
    assert cache.put(b"cap", capped) == 600  # negative_max_ttl
    no_soa = template(response("o.example.", rcode=dns.rcode.NXDOMAIN))
    assert cache.put(b"nosoa", no_soa) is None  # RFC 2308 5


def test_servfail_truncated_and_ttl0_are_not_cached() -> None:
    cache = ForwardCache(POLICY, Clock())
    assert cache.put(b"sf", template(response("s.example.", rcode=dns.rcode.SERVFAIL))) is None
    assert cache.put(b"z", template(response("z.example.", ttl=0))) is None
    raw = bytearray(template(response("t.example.")))
    raw[2] |= 0x02
    assert cache.put(b"tc", bytes(raw)) is None


def test_min_and_max_ttl_clamps() -> None:
    policy = CachePolicy(10, 30, 100, 600, 0, 30)
    cache = ForwardCache(policy, Clock())
    assert cache.put(b"low", template(response("a.example.", 5))) == 30
    assert cache.put(b"high", template(response("b.example.", 5000))) == 100


def test_lru_eviction() -> None:
    clock = Clock()
    cache = ForwardCache(POLICY, clock)
    for key in (b"a", b"b", b"c"):
        cache.put(key, template(response("a.example.")))
    clock.now += 1  # recency is kept to the second, with the TTLs
    cache.fresh(b"a")  # a is now the most recently used
    cache.put(b"d", template(response("a.example.")))
    assert cache.fresh(b"b") is None and cache.fresh(b"a") is not None and len(cache) == 3


def test_serve_stale_window() -> None:
    clock = Clock()
    cache = ForwardCache(POLICY, clock)
    cache.put(b"k", template(response("a.example.", 10)))
    clock.now += 20
    assert cache.fresh(b"k") is None
    stale = cache.stale(b"k")
    assert stale is not None and dns.message.from_wire(stale).answer[0].ttl == 30
    clock.now += 100
    assert cache.stale(b"k") is None


def test_template_replaces_opt_clears_id_aa_and_lowercases_question() -> None:
    raw = bytearray(response("MiXed.example.", edns=True))
    raw[2] |= 0x04  # AA from the authoritative upstream
    plain = template(bytes(raw), edns=None)
    msg = dns.message.from_wire(plain)
    assert msg.id == 0 and msg.edns == -1 and not msg.flags & dns.flags.AA
    assert msg.question[0].name.to_text() == "mixed.example."
    with_do = dns.message.from_wire(template(bytes(raw), edns=wire.Edns(4096, 0, True)))
    assert with_do.edns == 0 and with_do.payload == 1232 and with_do.ednsflags & dns.flags.DO


def test_entries_are_untracked_by_the_cyclic_gc() -> None:
    import gc

    cache = ForwardCache(POLICY, Clock())
    cache.put(b"k", template(response("a.example.", 60)))
    gc.collect()
    assert not gc.is_tracked(cache.entries[b"k"])


def test_bounded_in_bytes_least_recently_used_first() -> None:
    """Issue 9: a flood of random names fills the cache to its byte bound."""
    clock = Clock()
    one = template(response("n0.example.", 60))
    per_entry = store.entry_bytes(b"k00", (one, 0, one, b"\x00" * 6, 0.0, 0.0, 0.0, 0))
    policy = CachePolicy(10**6, 0, 3600, 600, 100, 30, max_bytes=10 * per_entry)
    cache = ForwardCache(policy, clock)
    for i in range(25):
        cache.put(b"k%02d" % i, template(response(f"n{i % 10}.example.", 60)))
        assert cache.bytes <= policy.max_bytes
    assert len(cache) == 10 and cache.evicted == 15
    assert cache.fresh(b"k24") is not None and cache.fresh(b"k14") is None
    assert cache.bytes == sum(store.entry_bytes(k, e) for k, e in cache.entries.items())


def test_byte_count_follows_replacement_and_expiry() -> None:
    clock = Clock()
    cache = ForwardCache(POLICY, clock)
    cache.put(b"k", template(response("a.example.", 60)))
    cache.put(b"k", template(response("a.example.", 60)))  # the same key again
    assert cache.bytes == store.entry_bytes(b"k", cache.entries[b"k"])
    clock.now += 60 + POLICY.serve_stale  # past the serve-stale window: dropped when read
    assert cache.stale(b"k") is None and cache.bytes == 0


def test_entry_size_estimate_is_near_what_python_allocates() -> None:
    import gc
    import tracemalloc

    clock = Clock()
    cache = ForwardCache(CachePolicy(10**6, 0, 3600, 600, 100, 30), clock)
    templates = [template(response(f"r{i:08x}.example.", 60)) for i in range(2000)]
    gc.collect()
    tracemalloc.start()
    for i, t in enumerate(templates):
        cache.put(b"r%08x.example.\x00\x01\x00\x01\x01" % i, t)
    clock.now += 2
    for key in list(cache.entries):
        cache.fresh(key)  # aged: the TTLs rewritten into a copy of the template
    gc.collect()
    measured = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert 0.7 < cache.bytes / measured < 1.5, (cache.bytes, measured)


def test_nothing_that_does_not_parse_becomes_a_template_or_enters_the_cache() -> None:
    """Issue 9: a reply with bytes after its last record was cached and served whole."""
    cache = ForwardCache(POLICY, Clock())
    whole = response("t.example.", edns=False)
    unparseable = (
        whole + b"junk",  # trailing bytes (no OPT to cut them off at)
        response("t.example.") + b"\x00",  # trailing bytes after the OPT
        whole[:-2],  # the last record runs past the end
    )
    not_an_answer = (
        whole[:4] + b"\x00\x00" + whole[6:],  # no question
        whole[:2] + b"\x01" + whole[3:],  # QR=0: a query, not a response
    )
    for bad in (*unparseable, *not_an_answer):
        for edns in (None, EDNS):
            assert make_template(bad, client_edns=edns, payload=1232) is None
    for bad in unparseable:
        assert cache.put(b"bad", bad) is None
    assert len(cache) == 0


def test_opt_before_other_additional_records_is_not_templated() -> None:
    q = dns.message.make_query("o.example.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("o.example.", 60, "IN", "A", "192.0.2.1"))
    r.additional.append(dns.rrset.from_text("x.example.", 60, "IN", "A", "192.0.2.2"))
    last = r.to_wire()  # dnspython writes OPT last
    opt = last[-11:]  # root owner, type, class, TTL, no options
    extra = wire.walk_response(last).additional[0]
    first = last[: extra.start] + opt + last[extra.start : -11]
    assert dns.message.from_wire(first).additional  # legal (RFC 6891), but rare
    assert make_template(first, client_edns=EDNS, payload=1232) is None


def test_neg_ttl_and_no_negcache() -> None:
    """dnsmasq's neg-ttl (negative answers without SOA) and no-negcache."""
    no_soa = template(response("o.example.", rcode=dns.rcode.NXDOMAIN))
    with_soa = template(response("n.example.", rcode=dns.rcode.NXDOMAIN, soa=(300, 45)))
    nodata = template(response("d.example.", soa=(300, 45)))
    neg_ttl = ForwardCache(replace(POLICY, neg_ttl=20), Clock())
    assert neg_ttl.put(b"nosoa", no_soa) == 20
    assert neg_ttl.put(b"soa", with_soa) == 45  # an SOA still decides
    capped = ForwardCache(replace(POLICY, neg_ttl=5000), Clock())
    assert capped.put(b"nosoa", no_soa) == 600  # negative_max_ttl bounds it too
    off = ForwardCache(replace(POLICY, negcache=False, neg_ttl=20), Clock())
    assert off.put(b"nx", with_soa) is None
    assert off.put(b"nodata", nodata) is None
    assert off.put(b"nosoa", no_soa) is None
    assert off.put(b"yes", template(response("a.example.", 60))) == 60


def test_client_max_ttl_caps_what_is_handed_out_not_the_lifetime() -> None:
    """dnsmasq's max-ttl: clients see at most the cap, the entry lives its real TTL."""
    clock = Clock()
    cache = ForwardCache(replace(POLICY, client_max_ttl=10), clock)
    raw = response("a.example.", 300)
    made = make_template(raw, client_edns=EDNS, payload=1232)
    assert made is not None
    assert dns.message.from_wire(cache.for_client(*made)).answer[0].ttl == 10
    assert cache.put(b"k", made[0]) == 300
    for elapsed, seen in ((0, 10), (100.5, 10), (295.5, 5)):
        clock.now = 1000.0 + elapsed
        hit = cache.fresh(b"k")
        assert hit is not None and dns.message.from_wire(hit).answer[0].ttl == seen
    uncapped = ForwardCache(POLICY, clock)
    assert dns.message.from_wire(uncapped.for_client(*made)).answer[0].ttl == 300
