"""The cached forwarder: cache first, upstreams next, stale answers last."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset
import pytest

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


def ask(fwd: CachedForwarder, key: bytes | None = KEY) -> list[bytes | None]:
    got: list[bytes | None] = []
    fwd.answer(key, QUESTION, None, got.append)
    return got


def test_miss_forwards_stores_then_hits() -> None:
    upstream = Upstream()
    fwd, _, counts = make(upstream)
    assert ask(fwd) == [] and len(upstream.calls) == 1
    got: list[bytes | None] = []
    fwd.answer(KEY, QUESTION, None, got.append)
    upstream.calls[0](reply())
    assert got == []  # the second waiter is on its own upstream call
    (template,) = ask(fwd)
    assert template is not None and template[:2] == b"\x00\x00"
    assert counts == {"forwarded": 2, "cache_hits": 1}


def test_upstream_servfail_prefers_stale_then_relays() -> None:
    upstream = Upstream()
    fwd, clock, counts = make(upstream)
    ask(fwd)
    upstream.calls[-1](reply(ttl=10))
    clock.now += 20  # expired, inside the serve-stale window
    got = ask(fwd)
    upstream.calls[-1](reply(dns.rcode.SERVFAIL))
    (template,) = got
    assert template is not None and dns.message.from_wire(template).answer[0].ttl == 30
    assert counts["stale_served"] == 1
    clock.now += 200  # past the window: the SERVFAIL itself is relayed
    got = ask(fwd)
    upstream.calls[-1](reply(dns.rcode.SERVFAIL))
    (template,) = got
    assert template is not None and template[3] & 0x0F == wire.SERVFAIL


def test_no_reply_and_nothing_stale_fails() -> None:
    upstream = Upstream()
    fwd, _, _ = make(upstream)
    got = ask(fwd)
    upstream.calls[-1](None)
    assert got == [None]
    no_upstreams, _, _ = make(None)
    assert ask(no_upstreams) == [None]


def test_odd_upstream_message_fails_and_is_not_cached() -> None:
    # Issue 9: an odd message used to be relayed raw; now it is a failure
    # (stale or SERVFAIL), never relayed and never cached.
    upstream = Upstream()
    fwd, _, counts = make(upstream)
    got = ask(fwd)
    odd = reply()[:-3]  # the last record runs past the end
    upstream.calls[-1](odd)
    assert got == [None]
    assert len(fwd.cache) == 0 and counts["upstream_unusable"] == 1


class Timers:
    """call_later for tests: the test fires the calls itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None], Handle]] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> Handle:
        handle = Handle()
        self.calls.append((delay, fn, handle))
        return handle

    def fire(self) -> None:
        for _, fn, handle in self.calls:
            if not handle.cancelled:
                fn()


class Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def with_timer(upstream: Upstream) -> tuple[CachedForwarder, Clock, Counter[str], Timers]:
    clock = Clock()
    counts: Counter[str] = Counter()
    timers = Timers()
    cache = ForwardCache(CachePolicy(10, 0, 3600, 600, 100.0, 30), clock)
    fwd = CachedForwarder(
        cache, upstream, payload=1232, counts=counts, stale_timeout=1.8, call_later=timers
    )
    return fwd, clock, counts, timers


def address_and_ttl(template: bytes | None) -> tuple[str, int]:
    assert template is not None
    rrset = dns.message.from_wire(template).answer[0]
    return rrset[0].address, rrset.ttl


def test_stale_on_the_client_timer_then_the_refresh_is_stored() -> None:
    upstream = Upstream()
    fwd, clock, counts, timers = with_timer(upstream)
    ask(fwd)
    upstream.calls[-1](reply(ttl=10))
    assert timers.calls == []  # nothing kept yet: no timer
    clock.now += 20  # expired, inside the serve-stale window
    got = ask(fwd)
    ((delay, _, _),) = timers.calls
    assert delay == 1.8 and got == []
    timers.fire()  # the upstream is still silent when the client's timer runs out
    assert [address_and_ttl(t) for t in got] == [("192.0.2.1", 30)]
    assert counts["stale_on_timer"] == 1
    upstream.calls[-1](reply(ttl=300))  # the refresh, late
    assert len(got) == 1  # the client had its answer already
    assert address_and_ttl(fwd.cache.fresh(KEY)) == ("192.0.2.1", 300)


def test_upstream_first_cancels_the_timer_and_a_late_failure_adds_nothing() -> None:
    upstream = Upstream()
    fwd, clock, counts, timers = with_timer(upstream)
    ask(fwd)
    upstream.calls[-1](reply(ttl=10))
    clock.now += 20
    got = ask(fwd)
    upstream.calls[-1](reply(ttl=60))
    ((_, _, handle),) = timers.calls
    assert handle.cancelled and [address_and_ttl(t) for t in got] == [("192.0.2.1", 60)]
    clock.now += 100
    got = ask(fwd)
    timers.fire()
    upstream.calls[-1](None)  # the refresh fails after the stale answer went out
    assert [address_and_ttl(t) for t in got] == [("192.0.2.1", 30)]
    assert counts["stale_served"] == 1


def test_no_timer_without_call_later() -> None:
    upstream = Upstream()
    clock = Clock()
    cache = ForwardCache(CachePolicy(10, 0, 3600, 600, 100.0, 30), clock)
    fwd = CachedForwarder(cache, upstream, payload=1232, counts=Counter(), stale_timeout=1.8)
    ask(fwd)
    upstream.calls[-1](reply(ttl=10))
    clock.now += 20
    assert ask(fwd) == []  # waits for the upstream (or its deadline), as before


def test_a_bug_while_storing_fails_the_query_and_logs_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream can trigger a storing bug per reply: each query still gets an
    answer (None: stale or SERVFAIL), and the log gets a few lines, not one each."""
    upstream = Upstream()
    fwd, _, counts = make(upstream)

    def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fwd.cache, "put", broken)
    for _ in range(50):
        got = ask(fwd)
        upstream.calls[-1](reply())
        assert got == [None]
    assert counts["internal_errors"] == 50
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 10
