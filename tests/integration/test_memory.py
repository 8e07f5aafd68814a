"""Memory stays bounded (issue 9), measured as RSS of the gateway as a subprocess.

- A sweep of client EDNS sizes over big weighted services: templates per entry are
  bounded (before: up to 1,024 per entry, +33 MB RSS for this sweep).
- Floods of names asked once (a zone wildcard, a forwarded wildcard, random catalog
  names) with large answers: the prepared answers and the forward cache stop at their
  byte bounds, so a default install stays under the README's figure.
- A fixed query mix with a share of names asked once, after warm-up: RSS stays flat
  (before: every such name stayed cached until 100,000 entries, RSS rising in steps).

Load loops are bounded by query count (tests.support.load); no timing is asserted.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest

from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from harness.zone import ZONE_RECORDS, ZoneRecord
from tests.support.load import rss_bytes, udp_load

MB = 1_000_000
# The sweep: 20 services x 200 instances, every client EDNS size from 512 to 1232.
SWEEP_SERVICES = 20
SWEEP_INSTANCES = 200
SWEEP_SIZES = range(512, 1233)
# Before issue 9 this sweep grew RSS by ~33 MB (templates kept up to 1,024 per entry);
# with at most MAX_TEMPLATES_PER_ENTRY per entry it grows ~10 MB.
SWEEP_MAX_GROWTH = 20 * MB
# A default install's RSS after every cache is full, as the README documents it.
DEFAULT_INSTALL_MAX_RSS = 140 * MB
# Large answers fill the byte bounds with few queries: ~8 KB of TXT per name.
BIG_TXT = " ".join('"' + f"s{i:02d}".ljust(250, "x") + '"' for i in range(32))
# Names asked once per kind in the flood: each kind's 32 MB bound holds ~2,000.
FLOOD_NAMES = 8000
# The fixed mix: per round, one name asked once (zone and forwarded in turn) and
# FIXED_PER_ROUND repeated questions; warm-up fills both byte bounds first.
FIXED_PER_ROUND = 3
WARM_UP_ROUNDS = 5000
PHASE_ROUNDS = 3000
# RSS after the second phase within this of the first (the 10 %).
FLAT_WITHIN = 0.10


def weighted_catalog(folder: Path, services: int, instances: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(services):
        entries = [
            {"name": f"svc{s}", "id": f"svc{s}-{i}", "address": f"10.{s}.{i // 250}.{i % 250 + 1}",
             "port": 1000 + i, "weights": {"passing": 1 + i % 7, "warning": 1}}
            for i in range(instances)
        ]  # fmt: skip
        (folder / f"node{s}.json").write_text(
            json.dumps(
                {"node_name": f"node{s}", "advertise_addr": "192.0.2.1", "services": entries}
            )
        )
    return folder


def big_zone(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "big.test.zone").write_text(
        "$ORIGIN big.test.\n$TTL 3600\n@ SOA ns h 1 2 3 4 3600\n@ NS ns\nns A 192.0.2.1\n"
        f"www A 192.0.2.80\n*.w TXT {BIG_TXT}\n"
    )
    return folder


def packet(name: str, rdtype: str, payload: int | None = 1232) -> bytes:
    edns = 0 if payload is not None else False
    return dns.message.make_query(name, rdtype, use_edns=edns, payload=payload or 1232).to_wire()


@pytest.fixture(scope="module")
def knot() -> Iterator[KnotUpstream]:
    """The test zone plus a wildcard whose every name answers ~8 KB of TXT."""
    flood = ZoneRecord("*.flood.example.test.", "TXT", BIG_TXT, 3600)
    with KnotUpstream(records=(*ZONE_RECORDS, flood)) as server:
        yield server


def test_an_edns_size_sweep_keeps_templates_bounded(tmp_path: Path) -> None:
    catalog = weighted_catalog(tmp_path / "cat", SWEEP_SERVICES, SWEEP_INSTANCES)
    args = ("--catalog", str(catalog), "--upstream", "127.0.0.1:9")
    with GatewayProcess(*args, probe_name="consul.") as gw:
        assert gw.pid is not None
        names = [f"svc{s}.service.consul" for s in range(SWEEP_SERVICES)]
        # Warm-up: every entry and its orderings at the common sizes.
        warm = [packet(n, t, p) for n in names for t in ("A", "SRV") for p in (None, 1232)]
        udp_load(gw.host, gw.port, warm * 70)
        before = rss_bytes(gw.pid)
        sweep = (packet(n, t, size) for size in SWEEP_SIZES for t in ("A", "SRV") for n in names)
        sent, answered = udp_load(gw.host, gw.port, sweep)
        after = rss_bytes(gw.pid)
    print(f"EDNS sweep: {answered}/{sent} answered, RSS {before / MB:.1f} -> {after / MB:.1f} MB")
    assert answered == sent
    assert after - before < SWEEP_MAX_GROWTH


def flood(kind: str, start: int, count: int) -> Iterator[bytes]:
    """Names asked once: under the zone's wildcard, the upstream's, or the catalog."""
    for i in range(start, start + count):
        if kind == "zone":
            yield packet(f"n{i}.w.big.test", "TXT")
        elif kind == "forward":
            yield packet(f"n{i}.flood.example.test", "TXT")
        else:
            yield packet(f"n{i}.service.consul", "A")


def test_floods_of_new_names_stop_at_the_byte_bounds(tmp_path: Path, knot: KnotUpstream) -> None:
    """Default settings: before issue 9 this flood took RSS to ~190 MB (entries were
    bounded by count only, 100,000 of any size)."""
    args = ("--zones", str(big_zone(tmp_path / "zones")), "--upstream", knot.address)
    with GatewayProcess(*args, probe_name="consul.") as gw:
        assert gw.pid is not None
        start = rss_bytes(gw.pid)
        figures = []
        for kind in ("zone", "forward", "catalog"):
            sent, answered = udp_load(gw.host, gw.port, flood(kind, 0, FLOOD_NAMES))
            assert answered == sent, kind
            figures.append(f"{kind} {rss_bytes(gw.pid) / MB:.1f}")
        end = rss_bytes(gw.pid)
    print(f"floods of {FLOOD_NAMES} names: RSS {start / MB:.1f} -> {', '.join(figures)} MB")
    assert end < DEFAULT_INSTALL_MAX_RSS


def fixed_mix(rounds: int, first: int) -> Iterator[bytes]:
    """Repeated questions (catalog, zone, cached forwarded, NXDOMAIN) and, each round,
    one name asked once, alternately under the zone's and the upstream's wildcard."""
    repeated = itertools.cycle(
        [
            packet("svc0.service.consul", "A", None),
            packet("svc1.service.consul", "SRV"),
            packet("www.big.test", "A"),
            packet("www.example.test", "A"),
            packet("nothing-here.example.test", "A"),
            packet("nosuch.service.consul", "A"),
        ]
    )
    for i in range(first, first + rounds):
        yield from itertools.islice(repeated, FIXED_PER_ROUND)
        kind = "zone" if i % 2 else "forward"
        yield from flood(kind, i, 1)


def test_rss_stays_flat_after_warm_up(tmp_path: Path, knot: KnotUpstream) -> None:
    catalog = weighted_catalog(tmp_path / "cat", 2, 10)
    zones = big_zone(tmp_path / "zones")
    args = ("--catalog", str(catalog), "--zones", str(zones), "--upstream", knot.address)
    with GatewayProcess(*args, probe_name="consul.") as gw:
        assert gw.pid is not None
        udp_load(gw.host, gw.port, fixed_mix(WARM_UP_ROUNDS, 0))
        rss = []
        for phase in range(2):
            first = WARM_UP_ROUNDS + phase * PHASE_ROUNDS
            sent, answered = udp_load(gw.host, gw.port, fixed_mix(PHASE_ROUNDS, first))
            assert answered == sent
            rss.append(rss_bytes(gw.pid))
    print(f"fixed mix after warm-up: RSS {rss[0] / MB:.1f} -> {rss[1] / MB:.1f} MB")
    assert rss[1] <= rss[0] * (1 + FLAT_WITHIN)
