"""gateway.metrics without sockets: plain values in, Prometheus text out."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import dns.rrset
from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics as m
from gateway.cache.store import CachePolicy, ForwardCache, key_qtype, make_template
from gateway.dns import codec, fastpath, wire
from gateway.metrics import Histogram, Metrics, respond
from tests.unit.helpers import query_bytes


def families(metrics: Metrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    assert h.buckets() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert h.sum == 3.65


def test_tally_slots_are_stable_and_types_bounded() -> None:
    tally = m.AnswerTally()
    a = tally.index(m.CATALOG, wire.A, 0)
    assert tally.index(m.CATALOG, wire.A, 0) == a
    # Types without a label of their own share "other".
    assert tally.index(m.ZONE, 99, 3) == tally.index(m.ZONE, 4000, 3)
    tally.counts[a] += 2
    assert dict(tally.items())[(m.CATALOG, "A", 0)] == 2
    assert m.UNCOUNTED not in (a, tally.index(m.ZONE, 99, 3))


def test_render_has_help_type_labels_and_total() -> None:
    metrics = Metrics()
    metrics.counters["udp_queries"] += 5
    metrics.counters["access_refused"] += 1
    metrics.counters["some_new_event"] += 1
    metrics.tally.counts[metrics.tally.index(m.FORWARD, wire.AAAA, 2)] += 4
    metrics.latency[m.FORWARD].observe(0.02)
    metrics.gauge("cache_entries", lambda: 7, "Entries.")
    metrics.counter("cache_evictions", lambda: 3)
    text = metrics.render().decode()
    assert "# HELP dns_gateway_queries_total DNS queries received, by transport." in text
    assert 'dns_gateway_queries_total{transport="udp"} 5.0' in text
    assert 'dns_gateway_queries_total{transport="tcp"} 0.0' in text
    assert (
        'dns_gateway_responses_total{answerer="forward",qtype="AAAA",rcode="SERVFAIL"} 4.0' in text
    )
    assert "dns_gateway_access_refused_total 1.0" in text
    assert "dns_gateway_rrl_limited_total 0.0" in text  # known counters exist from the start
    assert "dns_gateway_some_new_event_total 1.0" in text
    assert "# TYPE dns_gateway_cache_entries gauge\ndns_gateway_cache_entries 7.0" in text
    assert "dns_gateway_cache_evictions_total 3.0" in text
    assert 'dns_gateway_answer_duration_seconds_count{answerer="forward"} 1.0' in text
    assert 'dns_gateway_answer_duration_seconds_bucket{answerer="forward",le="0.025"} 1.0' in text
    parsed = families(metrics)
    assert "dns_gateway_responses" in parsed and "dns_gateway_answer_duration_seconds" in parsed


def test_a_broken_gauge_or_family_does_not_break_the_scrape() -> None:
    metrics = Metrics()

    def broken() -> float:
        raise RuntimeError("gone")

    def broken_family() -> list[m.Metric]:
        raise RuntimeError("gone too")

    metrics.gauge("broken", broken)
    metrics.family(broken_family)
    metrics.gauge("fine", lambda: 1)
    text = metrics.render().decode()
    assert "dns_gateway_fine 1.0" in text and "dns_gateway_broken" not in text


def test_health_ready_and_unknown_paths() -> None:
    metrics = Metrics()
    up = [False]
    metrics.readiness("consul first view", lambda: up[0])
    assert respond(metrics, b"GET /health HTTP/1.1")[:1] == (200,)
    assert respond(metrics, b"GET /ready HTTP/1.1") == (
        503,
        "text/plain",
        b"not ready: consul first view\n",
    )
    up[0] = True
    assert respond(metrics, b"GET /ready HTTP/1.0")[0] == 200
    status, ctype, body = respond(metrics, b"GET /metrics?x=1 HTTP/1.1")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4") and body
    assert respond(metrics, b"GET /other HTTP/1.1")[0] == 404
    assert respond(metrics, b"POST /metrics HTTP/1.1")[0] == 405
    assert respond(metrics, b"garbage")[0] == 405


def test_fast_path_counts_prepared_and_cached_answers_in_their_slots() -> None:
    metrics = Metrics()
    tally = metrics.tally
    table = fastpath.AnswerTable(10)
    cache = ForwardCache(CachePolicy(10, 0, 60, 60, 0, 30), lambda: 0.0)
    cache.tally_of = lambda key, template: tally.index(m.CACHE, key_qtype(key), template[3] & 15)
    fast = fastpath.make_fast_answer(table, cache, 1232, tally=tally.counts)
    key_of = fastpath.make_key_function()

    local_q = query_bytes("web.service.consul", "A")
    local_key = key_of(local_q, False)
    assert local_key is not None
    slot = tally.index(m.CATALOG, wire.A, 0)
    question = wire.to_wire("web.service.consul") + b"\x00\x01\x00\x01"
    rec = codec.Record(wire.to_wire("web.service.consul"), wire.A, 0, bytes([192, 0, 2, 1]))
    answer = codec.Answer(0, answer=(rec,))
    prepared = fastpath.Entry(
        question, answer, edns=None, payload=1232, rng=random.Random(1), tally=slot
    )
    table.put(local_key, prepared)

    cached_q = query_bytes("www.example.test", "AAAA")
    cached_key = key_of(cached_q, False)
    assert cached_key is not None and key_qtype(cached_key) == wire.AAAA
    response = dns.message.make_response(dns.message.from_wire(cached_q))
    response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(
        dns.rrset.from_text("example.test.", 60, "IN", "SOA", "ns. h. 1 2 3 4 60")
    )
    made = make_template(response.to_wire(), client_edns=None, payload=1232)
    assert made is not None
    assert cache.put(cached_key, made[0], made[1]) is not None

    for _ in range(3):
        assert fast(local_q, False) is not None
    for _ in range(2):
        assert fast(cached_q, False) is not None
    counted = dict(tally.items())
    assert counted[(m.CATALOG, "A", 0)] == 3
    assert counted[(m.CACHE, "AAAA", 3)] == 2


def test_fast_path_without_a_tally_counts_nothing() -> None:
    table = fastpath.AnswerTable(10)
    cache = ForwardCache(CachePolicy(10, 0, 60, 60, 0, 30), lambda: 0.0)
    fast = fastpath.make_fast_answer(table, cache, 1232)
    q = query_bytes("a.consul", "A")
    k = fastpath.make_key_function()(q, False)
    assert k is not None
    empty = codec.Answer(0)
    table.put(k, fastpath.Entry(b"\x01a\x06consul\x00\x00\x01\x00\x01", empty, edns=None,
                                payload=1232, rng=random.Random(1), tally=5))  # fmt: skip
    assert fast(q, False) is not None
