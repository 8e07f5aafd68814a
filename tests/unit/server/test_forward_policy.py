"""dnsmasq's rules on the request path, driven with plain bytes and fake upstreams."""

from __future__ import annotations

import random

import dns.message
import dns.rcode
import dns.rrset

from gateway.cache.store import CachePolicy, ForwardCache
from gateway.catalog.model import Snapshot
from gateway.catalog.source import StaticSource
from gateway.metrics import Metrics
from gateway.options import Config, build
from gateway.server.resolver import Resolver
from tests.unit.helpers import name_text, query_bytes
from tests.unit.server.test_resolver import Clock, FakeForwarder, ask

SERVER = "127.0.0.1#5300"


def make(**options: object) -> tuple[Resolver, FakeForwarder, list[FakeForwarder]]:
    from gateway.app import forward_rules

    config: Config = build({"upstream": [], **options}, env={})
    rules = forward_rules(config)
    standard = FakeForwarder()
    per_domain = [FakeForwarder() for _ in rules.upstream_sets[1:]]
    resolver = Resolver(
        config,
        source=StaticSource(Snapshot(datacenters=frozenset({"dc1"}))),
        zone_set={},
        forwarder=standard,
        cache=ForwardCache(CachePolicy(100, 0, 3600, 600, 60, 30), Clock()),
        metrics=Metrics(),
        rng=random.Random(1),
        rules=rules,
        domain_upstreams=per_domain,
    )
    return resolver, standard, per_domain


def rcode_and_answer(replies: list[bytes]) -> tuple[str, list[str]]:
    assert len(replies) == 1
    msg = dns.message.from_wire(replies[0])
    values = sorted(rdata.to_text() for rrset in msg.answer for rdata in rrset)
    return dns.rcode.to_text(msg.rcode()), values


def upstream_reply(question: bytes, rdtype: str, *values: str, rcode: int = 0) -> bytes:
    name = name_text(question[:-4]) + "."
    response = dns.message.make_response(dns.message.make_query(name, rdtype, use_edns=0))
    response.set_rcode(dns.rcode.Rcode(rcode))
    if values:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *values))
    return response.to_wire()


def test_per_domain_upstreams_by_the_longest_suffix() -> None:
    resolver, standard, (corp,) = make(server=[f"/corp.test/{SERVER}", "/pub.corp.test/#"])
    ask(resolver, query_bytes("db.corp.test"))
    ask(resolver, query_bytes("www.pub.corp.test"))
    ask(resolver, query_bytes("www.example.com"))
    assert [name_text(q[:-4]) for q, _, _ in corp.calls] == ["db.corp.test"]
    assert [name_text(q[:-4]) for q, _, _ in standard.calls] == [
        "www.pub.corp.test",
        "www.example.com",
    ]


def test_address_and_local_answer_without_asking_anyone() -> None:
    resolver, standard, _ = make(address=["/ads.test/10.1.2.3", "/gone.test/"], local=["/lan/"])
    assert rcode_and_answer(ask(resolver, query_bytes("x.ads.test"))) == ("NOERROR", ["10.1.2.3"])
    assert rcode_and_answer(ask(resolver, query_bytes("x.gone.test", "MX")))[0] == "NXDOMAIN"
    assert rcode_and_answer(ask(resolver, query_bytes("nas.lan", "TXT")))[0] == "NXDOMAIN"
    assert standard.calls == []
    slow = resolver.metrics.counters["slow"]
    # Kept as a prepared answer: the next one comes from the fast path.
    assert rcode_and_answer(ask(resolver, query_bytes("X.ads.test")))[1] == ["10.1.2.3"]
    assert resolver.metrics.counters["slow"] == slow


def test_the_other_family_is_forwarded_and_nxdomain_becomes_nodata() -> None:
    resolver, standard, _ = make(address=["/ads.test/10.1.2.3"])
    replies: list[bytes] = []
    resolver.answer_slow(query_bytes("x.ads.test", "AAAA"), False, replies.append)
    question, _, done = standard.calls[0]
    done(upstream_reply(question, "AAAA", rcode=dns.rcode.NXDOMAIN))
    assert rcode_and_answer(replies) == ("NOERROR", [])


def test_domain_needed_and_bogus_priv() -> None:
    resolver, standard, _ = make(domain_needed=True, bogus_priv=True)
    assert rcode_and_answer(ask(resolver, query_bytes("nas")))[0] == "NXDOMAIN"
    assert rcode_and_answer(ask(resolver, query_bytes("nas", "AAAA")))[0] == "NXDOMAIN"
    for ptr in ("1.1.168.192.in-addr.arpa", "16.172.in-addr.arpa", "d.f.ip6.arpa"):
        assert rcode_and_answer(ask(resolver, query_bytes(ptr, "PTR")))[0] == "NXDOMAIN"
    assert standard.calls == []
    ask(resolver, query_bytes("nas", "MX"))  # dnsmasq forwards other types
    ask(resolver, query_bytes("1.1.168.192.in-addr.arpa", "TXT"))
    ask(resolver, query_bytes("34.216.184.93.in-addr.arpa", "PTR"))  # a public address
    assert len(standard.calls) == 3


def test_rev_server_takes_its_range_from_bogus_priv() -> None:
    resolver, standard, (lan,) = make(bogus_priv=True, rev_server=[f"192.168.0.0/16,{SERVER}"])
    ask(resolver, query_bytes("1.1.168.192.in-addr.arpa", "PTR"))
    assert len(lan.calls) == 1 and standard.calls == []


def test_without_the_switches_everything_is_forwarded() -> None:
    resolver, standard, _ = make()
    ask(resolver, query_bytes("nas"))
    ask(resolver, query_bytes("1.1.168.192.in-addr.arpa", "PTR"))
    assert len(standard.calls) == 2


def test_stop_dns_rebind_empties_private_answers_except_exempt_domains() -> None:
    resolver, standard, _ = make(stop_dns_rebind=True, rebind_domain_ok=["ok.test"])
    got: dict[str, list[bytes]] = {}
    for name in ("evil.example", "host.ok.test", "ok.test"):
        got[name] = []
        resolver.answer_slow(query_bytes(name), False, got[name].append)
    for question, _, done in standard.calls:
        done(upstream_reply(question, "A", "192.168.1.1"))
    assert rcode_and_answer(got["evil.example"]) == ("NOERROR", [])
    assert rcode_and_answer(got["host.ok.test"]) == ("NOERROR", ["192.168.1.1"])
    assert rcode_and_answer(got["ok.test"]) == ("NOERROR", ["192.168.1.1"])
    assert resolver.metrics.counters["rebind_blocked"] == 1
    # Never cached: the next question goes upstream again.
    ask(resolver, query_bytes("evil.example"))
    assert len(standard.calls) == 4
