"""The cached forwarder: cache first, upstreams next, stale answers last."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset

from gateway.cache.cached_forwarder import CachedForwarder
from gateway.cache.store import CachePolicy, ForwardCache
from gateway.dns import wire

QUESTION = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
KEY = QUESTION + b"\x00"


class Upstream:
    def __init__(self) -> None:
        self.calls: list[Callable[[bytes | None], None]] = []

    def resolve(self, question: bytes, do: bool, done: Callable[[bytes | None], None]) -> None:
        assert question == QUESTION and not do
        self.calls.append(done)


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


def reply(rcode: int = 0, ttl: int = 60) -> bytes:
    q = dns.message.make_query("www.example.com.", "A")
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode(rcode))
    if rcode == 0:
        r.answer.append(dns.rrset.from_text("www.example.com.", ttl, "IN", "A", "192.0.2.1"))
    return r.to_wire()


def make(upstream: Upstream | None) -> tuple[CachedForwarder, Clock, Counter[str]]:
    clock = Clock()
    counts: Counter[str] = Counter()
    cache = ForwardCache(CachePolicy(10, 0, 3600, 600, 100.0, 30), clock)
    return CachedForwarder(cache, upstream, payload=1232, counts=counts), clock, counts


def ask(fwd: CachedForwarder, key: bytes | None = KEY) -> list[tuple[bytes | None, bool]]:
    got: list[tuple[bytes | None, bool]] = []
    fwd.answer(key, QUESTION, None, lambda t, raw: got.append((t, raw)))
    return got


def test_miss_forwards_stores_then_hits() -> None:
    upstream = Upstream()
    fwd, _, counts = make(upstream)
    assert ask(fwd) == [] and len(upstream.calls) == 1
    got: list[tuple[bytes | None, bool]] = []
    fwd.answer(KEY, QUESTION, None, lambda t, raw: got.append((t, raw)))
    upstream.calls[0](reply())
    assert got == []  # the second waiter is on its own upstream call
    ((template, raw),) = ask(fwd)
    assert not raw and template is not None and template[:2] == b"\x00\x00"
    assert counts == {"forwarded": 2, "cache_hits": 1}


def test_upstream_servfail_prefers_stale_then_relays() -> None:
    upstream = Upstream()
    fwd, clock, counts = make(upstream)
    ask(fwd)
    upstream.calls[-1](reply(ttl=10))
    clock.now += 20  # expired, inside the serve-stale window
    got = ask(fwd)
    upstream.calls[-1](reply(dns.rcode.SERVFAIL))
    ((template, _),) = got
    assert template is not None and dns.message.from_wire(template).answer[0].ttl == 30
    assert counts["stale_served"] == 1
    clock.now += 200  # past the window: the SERVFAIL itself is relayed
    got = ask(fwd)
    upstream.calls[-1](reply(dns.rcode.SERVFAIL))
    ((template, _),) = got
    assert template is not None and template[3] & 0x0F == wire.SERVFAIL


def test_no_reply_and_nothing_stale_fails() -> None:
    upstream = Upstream()
    fwd, _, _ = make(upstream)
    got = ask(fwd)
    upstream.calls[-1](None)
    assert got == [(None, False)]
    no_upstreams, _, _ = make(None)
    assert ask(no_upstreams) == [(None, False)]


def test_odd_upstream_message_is_relayed_raw_and_not_cached() -> None:
    upstream = Upstream()
    fwd, _, _ = make(upstream)
    got = ask(fwd)
    odd = reply()[:-3]  # the last record runs past the end
    upstream.calls[-1](odd)
    assert got == [(odd, True)]
    assert len(fwd.cache) == 0
