"""--log-queries: one line per query through the wrappers (no sockets)."""

from __future__ import annotations

import logging

import pytest

from gateway.server.access import Access
from gateway.server.querylog import QueryLog, describe, rcode_text
from tests.unit.helpers import query_bytes
from tests.unit.server.test_resolver import make, upstream_reply


class Ticks:
    """A clock that moves 2 ms per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.002
        return self.now


def test_one_line_per_query_fast_slow_and_forwarded(caplog: pytest.LogCaptureFixture) -> None:
    resolver, forwarder, _ = make()
    querylog = QueryLog(resolver, clock=Ticks())
    fast = querylog.fast_for("192.0.2.7", resolver.answer_fast)
    slow = querylog.slow_for("192.0.2.7")
    assert fast is not None
    replies: list[bytes] = []
    with caplog.at_level(logging.INFO, logger="gateway.queries"):
        packet = query_bytes("web.service.consul", "SRV")
        assert fast(packet, False) is None
        assert slow(packet, False, replies.append, Access.FULL)
        assert fast(packet, True) is not None  # now prepared
        forwarded = query_bytes("www.example.com", "AAAA")
        assert slow(forwarded, False, replies.append, Access.FULL)
        # Another query is answered before the upstream's reply comes back.
        slow(query_bytes("nas.home.arpa"), False, replies.append, Access.FULL)
        question, _, done = forwarder.calls[0]
        done(upstream_reply(question))
        assert not slow(b"\x00\x01\x80", False, replies.append, Access.FULL)  # dropped
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.queries"]
    assert lines == [
        "query client=192.0.2.7 proto=udp name=web.service.consul. type=SRV class=IN "
        "rcode=NOERROR answerer=catalog latency_ms=2.000",
        "query client=192.0.2.7 proto=tcp name=web.service.consul. type=SRV class=IN "
        "rcode=NOERROR answerer=catalog latency_ms=2.000",
        "query client=192.0.2.7 proto=udp name=nas.home.arpa. type=A class=IN "
        "rcode=NOERROR answerer=zone latency_ms=2.000",
        "query client=192.0.2.7 proto=udp name=www.example.com. type=AAAA class=IN "
        "rcode=NOERROR answerer=forward latency_ms=6.000",
        "query client=192.0.2.7 proto=udp name=- type=- class=- rcode=none "
        "answerer=error latency_ms=2.000",
    ]


def test_cached_forwarded_answers_are_logged_as_cache(caplog: pytest.LogCaptureFixture) -> None:
    resolver, forwarder, _ = make()
    resolver.answer_slow(query_bytes("www.example.com"), False, lambda _: None)
    question, _, done = forwarder.calls[0]
    done(upstream_reply(question))
    fast = QueryLog(resolver).fast_for("::1", resolver.answer_fast)
    assert fast is not None
    with caplog.at_level(logging.INFO, logger="gateway.queries"):
        assert fast(query_bytes("www.example.com"), False) is not None
    assert "answerer=cache" in caplog.text and "client=::1" in caplog.text
    assert QueryLog(resolver).fast_for("::1", None) is None


def test_describe_and_rcode_of_odd_packets() -> None:
    assert describe(b"\x00") == ("-", "-", "-")
    assert describe(query_bytes("A.b", "TYPE65")) == ("a.b.", "HTTPS", "IN")
    assert rcode_text(None) == "none" and rcode_text(b"\x00\x00\x81\x83") == "NXDOMAIN"
