"""Issue 10, "Metrics that follow Prometheus conventions": the real endpoint of a gateway
subprocess, parsed with ``prometheus_client``'s own parser; ``/health`` and ``/ready``
(against a real Consul agent); the Grafana dashboard's queries against a real scrape.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.consul import ConsulAgent
from harness.gateway import (
    ConsulGateway,
    GatewayProcess,
    http_get,
    scrape_families,
    scrape_metrics,
)
from harness.knot import KnotUpstream
from harness.ports import LOOPBACK, free_port
from harness.process import wait_for
from harness.zone import WWW
from tests.support.dnsclient import query

pytestmark = pytest.mark.timeout(120)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
P = "dns_gateway_"


@pytest.fixture
def gateway(knot: KnotUpstream) -> Iterator[tuple[GatewayProcess, str]]:
    """The embedded default catalog and zones, Knot as the upstream, metrics on."""
    port = free_port()
    args = ("--upstream", knot.address, "--metrics-listen", f"{LOOPBACK}:{port}")
    with GatewayProcess(*args, probe_name="consul.") as gw:
        yield gw, f"{LOOPBACK}:{port}"


def test_every_family_has_help_type_and_counters_end_in_total(
    gateway: tuple[GatewayProcess, str],
) -> None:
    gw, addr = gateway
    assert query(gw.host, gw.port, "db.service.consul", "A").answer
    status, text = http_get(addr, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    assert len(families) > 20
    for family in families:
        assert family.name.startswith(P), family.name
        assert family.documentation, f"{family.name} has no # HELP"
        assert f"# TYPE {family.name}" in text, f"{family.name} has no # TYPE"
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family
    # The flat names of before are gone: rcodes are a label now.
    assert not re.search(r"^dns_gateway_rcode_\d", text, re.MULTILINE)
    assert "# TYPE dns_gateway_responses_total counter" in text


def test_answers_are_counted_by_transport_answerer_type_and_rcode(
    gateway: tuple[GatewayProcess, str], knot: KnotUpstream
) -> None:
    gw, addr = gateway
    before = scrape_metrics(addr)
    # Each question asked three times over UDP: the first one on the slow path,
    # the others from the prepared answer or the cache (the fast path).
    asked = [
        ("db.service.consul", "A"),  # catalog, NOERROR
        ("nope.service.consul", "A"),  # catalog, NXDOMAIN
        ("router.home.arpa", "AAAA"),  # zone
        (WWW, "A"),  # forwarded, then cached
    ]
    for name, rdtype in asked:
        for _ in range(3):
            query(gw.host, gw.port, name, rdtype)
    assert query(gw.host, gw.port, "db.service.consul", "SRV", tcp=True).answer
    after = scrape_metrics(addr)

    def delta(key: str) -> float:
        return after.get(P + key, 0.0) - before.get(P + key, 0.0)

    assert delta('queries_total{transport="udp"}') == 12
    assert delta('queries_total{transport="tcp"}') == 1

    def answers(answerer: str, qtype: str, rcode: str) -> float:
        return delta(f'responses_total{{answerer="{answerer}",qtype="{qtype}",rcode="{rcode}"}}')

    assert answers("catalog", "A", "NOERROR") == 3
    assert answers("catalog", "A", "NXDOMAIN") == 3
    assert answers("catalog", "SRV", "NOERROR") == 1
    assert answers("zone", "AAAA", "NOERROR") == 3
    assert answers("forward", "A", "NOERROR") == 1  # the upstream's answer
    assert answers("cache", "A", "NOERROR") == 2  # fast-path cache hits
    assert delta("cache_hits_total") == 2
    assert delta("cache_misses_total") == 1
    # Slow-path latency: one observation per slow answer, by answerer.
    assert delta('answer_duration_seconds_count{answerer="catalog"}') == 3
    assert delta('answer_duration_seconds_count{answerer="forward"}') == 1
    assert delta('answer_duration_seconds_count{answerer="cache"}') == 0  # not timed
    # Per upstream: one UDP query, its answer and its round trip.
    up = f'upstream="{knot.address}"'
    assert delta(f'upstream_queries_total{{transport="udp",{up}}}') == 1
    assert delta(f"upstream_answers_total{{{up}}}") == 1
    assert delta(f"upstream_rtt_seconds_count{{{up}}}") == 1
    assert delta(f'upstream_rtt_seconds_bucket{{le="+Inf",{up}}}') == 1
    assert delta(f'upstream_failures_total{{reason="timeout",{up}}}') == 0


def test_health_and_ready_without_consul(gateway: tuple[GatewayProcess, str]) -> None:
    _, addr = gateway
    assert http_get(addr, "/health") == (200, "ok\n")
    assert http_get(addr, "/ready") == (200, "ready\n")
    assert http_get(addr, "/nope")[0] == 404


def test_ready_waits_for_the_first_consul_view() -> None:
    """503 while Consul is not there (listeners up, no view), 200 once the first view
    is loaded; /health is 200 throughout."""
    agent = ConsulAgent()  # ports picked now, started below
    planned = agent.http_addr
    with ConsulGateway(planned, f"{LOOPBACK}:9") as gw, contextlib.ExitStack() as later:
        addr = gw.metrics_addr
        status, body = http_get(addr, "/ready")
        assert (status, body) == (503, "not ready: consul first view\n")
        assert http_get(addr, "/health") == (200, "ok\n")
        assert gw.metrics()["consul_up"] == 0
        later.enter_context(agent)
        if agent.http_addr != planned:
            # The harness moved the agent to other ports (one was taken meanwhile):
            # a gateway pointed at its real address shows the same transition.
            gw = later.enter_context(ConsulGateway(agent.http_addr, f"{LOOPBACK}:9"))
            addr = gw.metrics_addr
        wait_for(
            lambda: http_get(addr, "/ready")[0] == 200,
            timeout=30,
            message="/ready after Consul's first view",
        )
        assert http_get(addr, "/ready") == (200, "ready\n")
        metrics = gw.metrics()
        assert metrics["consul_up"] == 1
        assert metrics["consul_http_requests_total"] > 0
        assert metrics["consul_view_age_seconds"] == 0


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside braces and
    strings that are not functions, keywords, or grouping labels."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_matchers)
    without_grouping = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_grouping):
        word = match.group(0)
        following = without_grouping[match.end() :].lstrip()
        if following.startswith("("):  # a function or aggregation
            continue
        names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for var in dashboard["templating"]["list"]:
        definition = var.get("definition", "")
        inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", definition)
        if inner:
            exprs.append(inner.group(1))
    return exprs


def test_promql_metric_names_are_read_correctly() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, answerer) (rate(dns_gateway_x_bucket{job=~"a(b)"}'
        "[$__rate_interval]))) / ignoring(instance) dns_gateway_y"
    )
    assert promql_metric_names(expr) == {"dns_gateway_x_bucket", "dns_gateway_y"}


def test_every_dashboard_query_names_an_exported_metric(knot: KnotUpstream) -> None:
    """Scrape a gateway with Consul and an upstream (every family present, histograms
    included) and look up each metric name the dashboard's PromQL reads."""
    with ConsulAgent() as agent, ConsulGateway(agent.http_addr, knot.address) as gw:
        wait_for(lambda: http_get(gw.metrics_addr, "/ready")[0] == 200, timeout=30)
        query(gw.host, gw.port, WWW, "A")
        exported = {
            sample.name for family in scrape_families(gw.metrics_addr) for sample in family.samples
        }
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    missing = {
        (name, expr) for expr in exprs for name in promql_metric_names(expr) if name not in exported
    }
    assert not missing, sorted(missing)
    # Every query reads at least one metric of ours.
    assert all(promql_metric_names(e) & exported for e in exprs)
