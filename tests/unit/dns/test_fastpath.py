from __future__ import annotations

import random

import dns.message
import pytest

from gateway.catalog import weights
from gateway.dns import codec, fastpath, wire
from tests.unit.helpers import query_bytes

KEY_OF = fastpath.make_key_function()


def key(packet: bytes) -> bytes | None:
    return KEY_OF(packet, False)


def test_key_folds_name_case_but_not_qtype() -> None:
    a = key(query_bytes("WEB.service.consul", "A"))
    b = key(query_bytes("web.SERVICE.consul", "A"))
    assert a is not None and b is not None and a == b
    # qtype 65 (HTTPS) is 'A' in ASCII: it must not fold into type 97.
    t65 = key(query_bytes("x", "HTTPS"))
    t97 = key(query_bytes("x", "TYPE97"))
    assert t65 is not None and t97 is not None and t65 != t97


def test_key_separates_edns_and_do() -> None:
    keys = {
        key(query_bytes("x.y", edns=False)),
        key(query_bytes("x.y", edns=0)),
        key(query_bytes("x.y", edns=0, do=True)),
    }
    assert len(keys) == 3 and None not in keys


def test_key_tells_where_the_question_ends() -> None:
    packet = query_bytes("Web.Service.Consul", "SRV", edns=0)
    k = key(packet)
    assert k is not None and len(k) + 11 == wire.parse_query(packet).question_end


@pytest.mark.parametrize(
    "packet",
    [
        query_bytes("x.y")[:-1],
        query_bytes("x.y") + b"\x00",
        query_bytes("x.y", edns=1),  # EDNS version 1: the slow path answers BADVERS
        b"\x00\x01\x28\x00" + query_bytes("x.y")[4:],  # opcode NOTIFY
        b"\x00\x01\x80\x00" + query_bytes("x.y")[4:],  # a response
    ],
)
def test_unusual_packets_take_the_slow_path(packet: bytes) -> None:
    assert key(packet) is None


def test_patch_copies_id_rd_cd_and_question_case() -> None:
    query = query_bytes("WeB.consul", "A", msg_id=0xBEEF)
    parsed = wire.parse_query(query)
    question = parsed.qname_wire.lower() + b"\x00\x01\x00\x01"
    rec = codec.Record(wire.to_wire("web.consul"), wire.A, 5, bytes([192, 0, 2, 1]))
    template = codec.render(question, codec.Answer(0, answer=(rec,)), edns=None, payload=1232)
    reply = dns.message.from_wire(fastpath.patch(template, query, parsed.question_end))
    assert reply.id == 0xBEEF
    assert reply.flags & dns.flags.RD and reply.flags & dns.flags.QR
    assert reply.question[0].name.to_text() == "WeB.consul."


def a_records(n: int) -> tuple[codec.Record, ...]:
    return tuple(
        codec.Record(wire.to_wire("s.consul"), wire.A, 0, bytes([10, 0, i // 256, i % 256]))
        for i in range(n)
    )


QUESTION = wire.to_wire("s.consul") + b"\x00\x01\x00\x01"


def entry(answer: codec.Answer) -> fastpath.Entry:
    return fastpath.Entry(QUESTION, answer, edns=None, payload=1232, rng=random.Random(1))


def test_weighted_entry_rotates_orderings() -> None:
    e = entry(codec.Answer(0, answer=a_records(3), weights=(1.0, 1.0, 1.0)))
    seen = {e.pick(512) for _ in range(200)}
    assert len(seen) > 3  # several orderings in use
    for template in seen:
        assert len(dns.message.from_wire(template).answer[0]) == 3


def test_large_weighted_entry_cycles_a_ring() -> None:
    e = entry(codec.Answer(0, answer=a_records(100), weights=tuple([1.0] * 100)))
    firsts = {dns.message.from_wire(e.pick(512)).answer[0][0].address for _ in range(300)}
    assert len(firsts) > 10


def test_pick_renders_to_the_limit_with_tc() -> None:
    e = entry(codec.Answer(0, answer=a_records(100)))
    cut = e.pick(512)
    assert len(cut) <= 512 and e.pick(512) is cut  # memoised
    reply = dns.message.from_wire(cut)
    assert reply.flags & dns.flags.TC and 0 < len(reply.answer[0]) < 100
    full = dns.message.from_wire(e.pick(wire.TCP_LIMIT))
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 100


def test_sample_keeps_k_records() -> None:
    e = entry(codec.Answer(0, answer=a_records(10), weights=tuple([1.0] * 10), sample=3))
    assert all(len(dns.message.from_wire(e.pick(512)).answer[0]) == 3 for _ in range(50))


def test_answer_table_is_bounded() -> None:
    table = fastpath.AnswerTable(max_entries=2)
    for key in (b"a", b"b", b"c"):
        table.put(key, entry(codec.Answer(0)))
    assert len(table) == 2 and table.get(b"a") is None


def test_fast_answer_agrees_with_its_key_function_on_mutated_packets() -> None:
    """The answering closure and the key-only closure accept exactly the same packets."""
    from gateway.cache.store import CachePolicy, ForwardCache

    table = fastpath.AnswerTable(100)
    cache = ForwardCache(CachePolicy(10, 0, 10, 10, 0, 30), lambda: 0.0)
    fast = fastpath.make_fast_answer(table, cache, 1232)
    rng = random.Random(9)
    seeds = [query_bytes("a.b", edns=e, do=d) for e in (False, 0) for d in (False, True)]
    seeds = [s for s in seeds if s]
    for _ in range(20000):
        packet = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(0, 3)):
            packet[rng.randrange(len(packet))] = rng.getrandbits(8)
        raw = bytes(packet)
        qk = key(raw)
        template = entry(codec.Answer(0))
        if qk is not None:
            table.put(qk, template)
        answered = fast(raw, False)
        assert (answered is not None) == (qk is not None), raw
        if answered is not None and qk is not None:
            # The closure's inlined patch is patch().
            assert answered == fastpath.patch(template.pick(512), raw, len(qk) + 11), raw
        table.clear()


def weighted(n: int) -> codec.Answer:
    return codec.Answer(0, answer=a_records(n), weights=tuple([1.0] * n))


def test_an_entry_keeps_a_bounded_number_of_templates() -> None:
    """Issue 9: a client sweeping EDNS sizes 512-1232 must not grow an entry without end."""
    e = entry(weighted(200))
    for limit in range(512, 1233):
        for _ in range(3):
            template = e.pick(limit)
            assert len(template) <= limit
        assert len(e._templates) <= fastpath.MAX_TEMPLATES_PER_ENTRY
    # Before issue 9 it kept up to 1,024 templates (~1.3 MB for this entry).
    orderings = weights.RING_SIZE * (fastpath.ORDERING_BYTES + 200 * fastpath.ORDERING_SLOT_BYTES)
    templates = fastpath.MAX_TEMPLATES_PER_ENTRY * (fastpath.TEMPLATE_BYTES + 1232)
    assert e.size < fastpath.ENTRY_BYTES + 200 * 110 + orderings + templates < 600_000


def test_the_common_sizes_keep_every_ordering_rendered() -> None:
    """No EDNS (512) and one EDNS size for every prepared ordering stay rendered."""
    e = entry(weighted(32))
    for _ in range(3000):
        e.pick(512)
        e.pick(1232)
    before = dict(e._templates)
    for _ in range(300):
        e.pick(512)
        e.pick(1232)
    assert e._templates == before


def test_answer_table_is_bounded_in_bytes() -> None:
    table = fastpath.AnswerTable(max_entries=1000, max_bytes=400_000)
    for i in range(20):
        e = entry(weighted(200))
        table.put(b"k%d" % i, e)
        for _ in range(64):
            e.pick(1232)  # each entry grows by ~64 x 1.4 KB as it renders
        assert table.bytes <= table.max_bytes
        assert table.bytes == sum(x.size for x in table.entries.values())
    assert 0 < len(table) < 20 and table.evicted == 20 - len(table)
    assert table.get(b"k19") is not None and table.get(b"k0") is None  # oldest went first


def test_clearing_starts_a_new_account() -> None:
    table = fastpath.AnswerTable(max_entries=10, max_bytes=10**6)
    old = entry(weighted(100))
    table.put(b"old", old)
    table.clear()
    assert table.bytes == 0
    old.pick(1232)  # an entry of the old data rendering late charges nothing now
    assert table.bytes == 0
    table.put(b"new", entry(codec.Answer(0)))
    assert table.bytes == table.entries[b"new"].size


def test_entry_size_estimates_are_near_what_python_allocates() -> None:
    """The byte bound is only as good as the estimate: keep it within reach of tracemalloc."""
    import gc
    import tracemalloc

    rng = random.Random(1)  # one for all entries, as the resolver has

    def nxdomain(i: int) -> fastpath.Entry:
        # As the catalog answers: a new SOA record per answer.
        soa = codec.Record(wire.to_wire("consul"), wire.SOA, 0, b"\x00" * 60)
        question = wire.to_wire(f"r{i:08x}.service.consul") + b"\x00\x01\x00\x01"
        answer = codec.Answer(wire.NXDOMAIN, authority=(soa,))
        return fastpath.Entry(question, answer, edns=None, payload=1232, rng=rng)

    def big(i: int) -> fastpath.Entry:
        return fastpath.Entry(QUESTION, weighted(50), edns=None, payload=1232, rng=rng)

    for make_entry, count in ((nxdomain, 1000), (big, 20)):
        gc.collect()
        tracemalloc.start()
        table = fastpath.AnswerTable(max_entries=10**6)
        for i in range(count):
            e = make_entry(i)
            table.put(b"%d" % i + QUESTION, e)
            for limit in (512, 1232, wire.TCP_LIMIT):
                for _ in range(10):
                    e.pick(limit)
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        ratio = table.bytes / measured
        assert 0.7 < ratio < 1.5, (make_entry.__name__, table.bytes, measured)


def test_every_qtype_and_qclass_has_its_own_key() -> None:
    """Issue 8: the cache key folds the name's case only, over all 65,536 types and classes."""
    base = query_bytes("WwW.example.com", "A")
    qtype_at = len(base) - 4
    keys_by_type: set[bytes] = set()
    keys_by_class: set[bytes] = set()
    for value in range(65536):
        two = value.to_bytes(2, "big")
        by_type = key(base[:qtype_at] + two + base[qtype_at + 2 :])
        by_class = key(base[: qtype_at + 2] + two)
        assert by_type is not None and by_type.endswith(two + b"\x00\x01\x00")
        assert by_class is not None and by_class.endswith(two + b"\x00")
        keys_by_type.add(by_type)
        keys_by_class.add(by_class)
    assert len(keys_by_type) == len(keys_by_class) == 65536
