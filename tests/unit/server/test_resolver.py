"""The request path driven with plain bytes: no sockets, a fake forwarder."""

from __future__ import annotations

import random
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset

from gateway.cache.store import CachePolicy, ForwardCache
from gateway.catalog import static as static_catalog
from gateway.catalog.source import StaticSource
from gateway.dns import wire
from gateway.metrics import Metrics
from gateway.options import EMBEDDED_CATALOG, EMBEDDED_ZONES, Config
from gateway.server.access import Access
from gateway.server.resolver import Resolver
from gateway.zones import zone as zones
from tests.unit.helpers import name_text, query_bytes


class FakeForwarder:
    """Records questions; the test decides when and what the upstream answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bool, Callable[[bytes | None], None]]] = []

    def resolve(self, question: bytes, do: bool, done: Callable[[bytes | None], None]) -> None:
        self.calls.append((question, do, done))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    config: Config | None = None, *, upstreams: bool = True
) -> tuple[Resolver, FakeForwarder, Clock]:
    config = config or Config(upstream=())
    clock = Clock()
    forwarder = FakeForwarder()
    policy = CachePolicy(100, 0, 3600, 600, 60, 30)
    resolver = Resolver(
        config,
        source=StaticSource(static_catalog.load(EMBEDDED_CATALOG, "dc1")),
        zone_set=zones.load_zones(EMBEDDED_ZONES),
        forwarder=forwarder if upstreams else None,
        cache=ForwardCache(policy, clock),
        metrics=Metrics(),
        rng=random.Random(1),
    )
    return resolver, forwarder, clock


def ask(resolver: Resolver, packet: bytes, tcp: bool = False) -> list[bytes]:
    replies: list[bytes] = []
    fast = resolver.answer_fast(packet, tcp)
    if fast is not None:
        return [fast]
    resolver.answer_slow(packet, tcp, replies.append)
    return replies


def upstream_reply(question: bytes, address: str = "192.0.2.80", ttl: int = 60) -> bytes:
    name = name_text(question[:-4]) + "."
    q = dns.message.make_query(name, "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", address))
    return r.to_wire()


def test_catalog_answer_then_fast_path_hit() -> None:
    resolver, _, _ = make()
    first = ask(resolver, query_bytes("web.service.consul"))
    assert resolver.metrics.counters["slow"] == 1
    second = ask(resolver, query_bytes("WEB.service.consul", msg_id=9))
    assert resolver.metrics.counters["slow"] == 1  # answered by the fast path
    assert dns.message.from_wire(first[0]).answer
    reply = dns.message.from_wire(second[0])
    assert reply.id == 9 and reply.question[0].name.to_text() == "WEB.service.consul."


def test_forwarded_miss_then_cache_hit_then_expiry() -> None:
    resolver, forwarder, clock = make()
    assert ask(resolver, query_bytes("www.example.com")) == []
    (question, do, done) = forwarder.calls[0]
    assert question == b"\x03www\x07example\x03com\x00\x00\x01\x00\x01" and not do
    replies: list[bytes] = []
    resolver.answer_slow(query_bytes("www.example.com", msg_id=7), False, replies.append)
    assert len(forwarder.calls) == 2  # the fake does not coalesce; the real one does
    done(upstream_reply(question))
    slow_before = resolver.metrics.counters["slow"]
    hit = ask(resolver, query_bytes("WWW.example.com", msg_id=5))
    assert resolver.metrics.counters["slow"] == slow_before  # a fast-path cache hit
    assert dns.message.from_wire(hit[0]).answer[0][0].address == "192.0.2.80"
    clock.now += 61
    assert ask(resolver, query_bytes("www.example.com")) == []  # expired: forwarded again


def test_upstream_failure_serves_stale_then_servfail() -> None:
    resolver, forwarder, clock = make()
    ask(resolver, query_bytes("a.example.com"))
    question, _, done = forwarder.calls[-1]
    done(upstream_reply(question, ttl=10))
    clock.now += 20
    replies: list[bytes] = []
    resolver.answer_slow(query_bytes("a.example.com"), False, replies.append)
    forwarder.calls[-1][2](None)
    stale = dns.message.from_wire(replies[0])
    assert stale.rcode() == dns.rcode.NOERROR and stale.answer[0].ttl == 30
    clock.now += 100
    replies.clear()
    resolver.answer_slow(query_bytes("a.example.com"), False, replies.append)
    forwarder.calls[-1][2](None)
    assert dns.message.from_wire(replies[0]).rcode() == dns.rcode.SERVFAIL


def test_rcodes_for_odd_queries() -> None:
    resolver, _, _ = make()
    notify = bytearray(query_bytes("web.service.consul"))
    notify[2] = 0x20  # opcode 4
    assert ask(resolver, bytes(notify))[0][3] & 0x0F == wire.NOTIMP
    axfr = ask(resolver, query_bytes("home.arpa", "AXFR"))
    assert dns.message.from_wire(axfr[0]).rcode() == dns.rcode.REFUSED
    badvers = ask(resolver, query_bytes("web.service.consul", edns=1))
    assert dns.message.from_wire(badvers[0]).rcode() == dns.rcode.BADVERS
    # A header whose question runs past the end: FORMERR. Shorter than a
    # header (issue 9: no 12-byte reply to a 3-byte packet): dropped.
    assert ask(resolver, query_bytes("web.service.consul")[:-3])[0][3] & 0x0F == wire.FORMERR
    assert ask(resolver, b"\x00\x01\x00") == []
    assert ask(resolver, b"\x00") == []  # no ID to answer to: dropped


def test_no_upstreams_is_servfail() -> None:
    resolver, _, _ = make(upstreams=False)  # as with an empty upstream list
    reply = ask(resolver, query_bytes("www.example.com"))
    assert dns.message.from_wire(reply[0]).rcode() == dns.rcode.SERVFAIL


def test_random_garbage_never_raises() -> None:
    resolver, _, _ = make()
    rng = random.Random(42)
    valid = query_bytes("web.service.consul", edns=0)
    for _ in range(5000):
        if rng.random() < 0.5:
            packet = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        else:  # mutate a valid query: the nastiest inputs are almost right
            mutable = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutable[rng.randrange(len(mutable))] = rng.getrandbits(8)
            packet = bytes(mutable)
        for tcp in (False, True):
            for reply in ask(resolver, packet, tcp):
                assert len(reply) >= 12 and reply[:2] == packet[:2]
    assert resolver.metrics.counters["internal_errors"] == 0


def test_a_label_with_a_dot_is_routed_by_labels() -> None:
    """``a\\.home.arpa.`` is not in the home.arpa zone, nor ``web.service\\.consul.`` in consul."""
    resolver, forwarder, _ = make()
    for text in (r"a\.home.arpa", r"web.service\.consul"):
        before = len(forwarder.calls)
        assert ask(resolver, query_bytes(text)) == []  # waiting for the upstream
        assert len(forwarder.calls) == before + 1, text
    # The same names without the escape are answered locally.
    assert ask(resolver, query_bytes("a.home.arpa"))
    assert ask(resolver, query_bytes("web.service.consul"))


def test_clients_outside_allow_are_refused_everything() -> None:
    resolver, forwarder, _ = make()
    for packet in (query_bytes("web.service.consul", edns=True), query_bytes("www.example.com")):
        replies: list[bytes] = []
        resolver.answer_slow(packet, False, replies.append, Access.NONE)
        reply = dns.message.from_wire(replies[0])
        assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    assert dns.message.from_wire(replies[0]).edns == -1  # OPT only for clients that sent one
    assert forwarder.calls == []
    assert resolver.metrics.counters["access_refused"] == 2
    # Even a packet that does not parse gets REFUSED, not FORMERR (a whole
    # header: shorter packets get no reply at all, rcodes.drop_reason).
    replies.clear()
    header_only = b"\x00\x01\x00\x00\x00\x01" + b"\x00" * 6  # QDCOUNT 1, no question
    assert resolver.answer_slow(header_only, False, replies.append, Access.NONE)
    assert replies[0][3] & 0x0F == wire.REFUSED


def test_clients_without_recursion_get_local_answers_only() -> None:
    resolver, forwarder, _ = make()
    ask(resolver, query_bytes("www.example.com"))  # a full client fills the cache
    question, _, done = forwarder.calls[0]
    done(upstream_reply(question))
    assert resolver.answer_fast(query_bytes("www.example.com"), False) is not None
    # The local-only fast path does not serve the cached forwarded answer ...
    assert resolver.answer_fast_local(query_bytes("www.example.com"), False) is None
    replies: list[bytes] = []
    resolver.answer_slow(query_bytes("www.example.com"), False, replies.append, Access.LOCAL)
    assert dns.message.from_wire(replies[0]).rcode() == dns.rcode.REFUSED
    assert resolver.metrics.counters["recursion_refused"] == 1
    assert len(forwarder.calls) == 1
    # ... but catalog and zone answers, fast or slow, are theirs.
    for name in ("web.service.consul", "nas.home.arpa"):
        replies.clear()
        resolver.answer_slow(query_bytes(name), False, replies.append, Access.LOCAL)
        assert dns.message.from_wire(replies[0]).answer
        assert resolver.answer_fast_local(query_bytes(name), False) is not None


def test_refuse_action_drop_sends_nothing() -> None:
    resolver, forwarder, _ = make(Config(upstream=(), refuse_action="drop"))
    replies: list[bytes] = []
    # False: no reply will come (a TCP connection must not wait for one).
    assert not resolver.answer_slow(
        query_bytes("web.service.consul"), False, replies.append, Access.NONE
    )
    assert not resolver.answer_slow(
        query_bytes("www.example.com"), True, replies.append, Access.LOCAL
    )
    assert replies == [] and forwarder.calls == []
    counts = resolver.metrics.counters
    assert (counts["access_dropped"], counts["recursion_dropped"]) == (1, 1)


def test_unparseable_upstream_reply_gets_servfail_and_is_never_cached() -> None:
    """Issue 9: a reply with bytes after its last record was cached and relayed; above
    512 bytes it made the forward callback raise for 512-byte clients (no reply at all)."""
    resolver, forwarder, _ = make()
    addresses = [f"192.0.2.{i}" for i in range(1, 41)]
    for payload in (512, 1232):
        packet = query_bytes("big.example.com", edns=0)
        packet = packet[:-8] + payload.to_bytes(2, "big") + packet[-6:]  # the OPT's size
        replies: list[bytes] = []
        resolver.answer_slow(packet, False, replies.append)
        question, _, done = forwarder.calls[-1]
        name = name_text(question[:-4]) + "."
        r = dns.message.make_response(dns.message.make_query(name, "A"))
        r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", *addresses))
        whole = r.to_wire()
        assert len(whole) > 512
        done(whole + b"junk")
        (reply,) = replies
        assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
        assert len(resolver._forward.cache) == 0


def test_every_answer_counts_once_in_its_tally_slot() -> None:
    """Issue 10: answers by answerer, query type and rcode, on both paths."""
    from gateway import metrics as m

    resolver, forwarder, _ = make()
    for _ in range(3):
        ask(resolver, query_bytes("web.service.consul", "A"))  # slow once, then fast
    ask(resolver, query_bytes("router.home.arpa", "AAAA"))
    # A whole header and a question that does not parse: FORMERR, built by the gateway.
    ask(resolver, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f")
    ask(resolver, query_bytes("www.example.org", "A"))
    question, _, done = forwarder.calls[0]
    done(upstream_reply(question))
    ask(resolver, query_bytes("www.example.org", "A"))  # from the cache, fast path
    counted = dict(resolver.metrics.tally.items())
    assert counted[(m.CATALOG, "A", 0)] == 3
    assert counted[(m.ZONE, "AAAA", 0)] == 1
    assert counted[(m.FORWARD, "A", 0)] == 1
    assert counted[(m.CACHE, "A", 0)] == 1
    assert counted[(m.ERROR, "other", 1)] == 1
    latency = resolver.metrics.latency
    assert sum(latency[m.CATALOG].counts) == 1  # only the slow-path answer is timed
    assert sum(latency[m.FORWARD].counts) == 1
    assert sum(latency[m.CACHE].counts) == 0
