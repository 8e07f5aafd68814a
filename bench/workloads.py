"""The Knot zone behind the forwarded names, and the dnsperf query files of each workload.

Workloads (each a dnsperf input file of distinct names, looped by dnsperf unless noted):

- w1: ``<svc>.service.consul`` A (AAAA for IPv6 services) and SRV, plus tagged names, from
  the live catalog (one warm-up pass first, so a gateway watching lazily is in steady state).
- w2: forwarded names answered from the cache (one warm-up pass first).
- w3: forwarded names that miss every cache: fresh random labels under the wildcard
  ``*.miss.example.test`` for every run, sent once each (``-n 1``).
- w4: a mix: Consul A/AAAA/SRV, cached forwarded A and AAAA (some NODATA), NXDOMAIN in the
  forwarded zone and in ``.service.consul`` (warm-up pass first).
- w5: w1 over TCP.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.zone import ZONE, ZONE_RECORDS, ZoneRecord

from .catalog import Catalog

CACHED_NAMES = 2000  # hNNNN.example.test, A; every 4th also AAAA
NXDOMAIN_NAMES = 500
MISS_SUFFIX = "miss." + ZONE
CACHED_TTL = 3600


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    short: str
    warm: bool = False  # one pass before measuring, to fill caches
    unique: bool = False  # fresh names every run, each sent once
    tcp: bool = False


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload("w1", ".service.consul A/AAAA/SRV (live catalog)", "consul names", warm=True),
        Workload("w2", "forwarded, answered from cache", "cache hit", warm=True),
        Workload("w3", "forwarded, cache miss (unique names)", "cache miss", unique=True),
        Workload("w4", "mix: consul + cached + AAAA + NXDOMAIN", "mix", warm=True),
        Workload("w5", "w1 over TCP", "consul TCP", warm=True, tcp=True),
    )
}


def cached_name(i: int) -> str:
    return f"h{i:04d}.{ZONE}"


def zone_records(cached: int = CACHED_NAMES) -> list[ZoneRecord]:
    """The test zone plus ``cached`` names (long TTL) and the cache-miss wildcard."""
    records = list(ZONE_RECORDS)
    for i in range(cached):
        records.append(ZoneRecord(cached_name(i), "A", f"198.18.{i // 250}.{i % 250 + 1}", 3600))
        if i % 4 == 0:
            records.append(ZoneRecord(cached_name(i), "AAAA", f"2001:db8:1::{i + 1:x}", 3600))
    # Short TTL: the miss names are never asked twice anyway; keep caches from hoarding.
    records.append(ZoneRecord("*." + MISS_SUFFIX, "A", "192.0.2.200", 60))
    return records


def _consul_lines(catalog: Catalog) -> list[str]:
    lines: list[str] = []
    for svc in catalog.services:
        addr_type = "AAAA" if svc.ipv6 else "A"
        base = f"{svc.name}.service.consul"
        lines.append(f"{base} {addr_type}")
        lines.append(f"{base} SRV")
        lines.append(f"v1.{base} {addr_type}")
        lines.append(f"v2.{base} SRV")
    return lines


def w1_lines(catalog: Catalog, rng: random.Random) -> list[str]:
    lines = _consul_lines(catalog)
    rng.shuffle(lines)
    return lines


def w2_lines(rng: random.Random, cached: int = CACHED_NAMES) -> list[str]:
    lines = [f"{cached_name(i)} A" for i in range(cached)]
    lines += [f"{cached_name(i)} AAAA" for i in range(0, cached, 4)]
    rng.shuffle(lines)
    return lines


def w3_lines(count: int) -> list[str]:
    run = secrets.token_hex(4)
    return [f"m{run}-{i:x}.{MISS_SUFFIX} A" for i in range(count)]


def w4_lines(catalog: Catalog, rng: random.Random, size: int = 5000) -> list[str]:
    """A mix, by share of queries: 40 % Consul names, 30 % cached A, 10 % AAAA of
    forwarded names (three in four NODATA), 15 % NXDOMAIN under example.test, 5 %
    NXDOMAIN under .service.consul."""
    consul = _consul_lines(catalog)
    nx_names = [f"nx{i:04d}.{ZONE}" for i in range(NXDOMAIN_NAMES)]
    pools: Sequence[tuple[float, Sequence[str]]] = (
        (0.40, consul),
        (0.30, [f"{cached_name(i)} A" for i in range(CACHED_NAMES)]),
        (0.10, [f"{cached_name(i)} AAAA" for i in range(CACHED_NAMES)]),
        (0.15, [f"{n} A" for n in nx_names]),
        (0.05, [f"nosuch-{i:03d}.service.consul A" for i in range(100)]),
    )
    lines: list[str] = []
    for share, pool in pools:
        # Every name of the pool before any repeats, so the shares hold exactly.
        order = list(pool)
        rng.shuffle(order)
        lines += [order[j % len(order)] for j in range(round(size * share))]
    rng.shuffle(lines)
    return lines


def write(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def query_files(workdir: Path, catalog: Catalog) -> dict[str, Path]:
    """The query files of the looped workloads, the same for every server (w3 makes its
    own per run); seeded, so two runs ask the same names in the same order."""
    rng = random.Random(4)
    files = {
        "w1": write(workdir / "w1.txt", w1_lines(catalog, rng)),
        "w2": write(workdir / "w2.txt", w2_lines(rng)),
        "w4": write(workdir / "w4.txt", w4_lines(catalog, rng)),
    }
    files["w5"] = files["w1"]
    return files
