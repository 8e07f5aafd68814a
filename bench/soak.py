"""``python -m bench.soak --minutes N``: the gateway under a steady load while things change.

Bounded and on loopback: a real Consul dev agent whose catalog churns the
whole time (instances registered and deregistered, checks flipped between
passing, warning and critical), Knot as the upstream, stopped and started
again periodically (a flapping upstream), and dnsperf sending a fixed mix
at a fixed rate to the gateway (``python -m gateway`` in front of both).

Reported: queries sent, answered and lost with their rcodes; the gateway's
RSS and open file descriptors at the start, after the warm-up, at the end
and at their highest; errors by kind (metrics such as ``internal_errors``,
ERROR/WARNING log lines, tracebacks by exception); the churn and flaps done.
``--json`` writes the same as JSON; ``--markdown`` prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.consul import ConsulAgent, ConsulAPIError
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.process import ServerStartError, process_tree, sigterm_as_interrupt
from harness.zone import SHORT, ZONE

from . import dnsperf
from .environment import log, machine
from .measuring import LogSummary, rss_kb
from .workloads import cached_name, zone_records

DEFAULT_MINUTES = 10.0
# Queries per second: a steady load well below the gateway's peak on a 2-core VM.
DEFAULT_QPS = 3000
SERVICES = 20
INSTANCES = 8  # per service at the start; churn moves it up and down
MAX_INSTANCES = 16
CHURN_INTERVAL_S = 0.2  # one catalog change this often
FLAP_UP_S = 40.0  # the upstream serves this long...
FLAP_DOWN_S = 10.0  # ...then is stopped this long
SAMPLE_INTERVAL_S = 5.0
# RSS and fds after this long are the "warm" baseline (caches and tables filled).
WARMUP_FRACTION = 0.2
MAX_WARMUP_S = 60.0
CACHED_NAMES = 500  # forwarded names with a long TTL (answered from the cache)
NX_NAMES = 100  # forwarded names that do not exist (negative cache)
# dnsperf waits this long for each answer before counting it lost (seconds): above
# the gateway's forward deadline, so a SERVFAIL or stale answer is not a loss.
ANSWER_TIMEOUT_S = 5.0
STATUSES = ("passing", "passing", "warning", "critical")


def service(i: int) -> str:
    return f"soak{i:02d}"


def query_lines(rng: random.Random) -> list[str]:
    """The mix dnsperf loops over: catalog names, cached, short-lived and missing
    forwarded names."""
    lines: list[str] = []
    for i in range(SERVICES):
        name = f"{service(i)}.service.consul"
        lines += [f"{name} A", f"{name} SRV", f"_{service(i)}._tcp.service.consul SRV"]
        lines.append(f"primary.{name} A")
        lines.append(f"{service(i)}-0.node.consul A")
    lines += [f"nosuch{i}.service.consul A" for i in range(10)]
    lines += [f"{cached_name(i)} A" for i in range(CACHED_NAMES)]
    lines += [f"{cached_name(i)} AAAA" for i in range(0, CACHED_NAMES, 4)]
    lines += [f"nx{i}.{ZONE} A" for i in range(NX_NAMES)]
    lines += [f"{SHORT} A"] * 20  # TTL 2 s: refreshed all the time, stale while Knot is down
    rng.shuffle(lines)
    return lines


@dataclass
class Catalog:
    """The instances the churn thread has registered (external nodes, no anti-entropy)."""

    consul: ConsulAgent
    rng: random.Random
    live: dict[str, list[int]] = field(default_factory=dict)
    ops: Counter[str] = field(default_factory=Counter)
    _next: int = 0

    def register(self, svc: str, status: str = "passing") -> None:
        k = self._next
        self._next += 1
        self._put(svc, k, status)
        self.live.setdefault(svc, []).append(k)

    def _put(self, svc: str, k: int, status: str) -> None:
        sid = f"{svc}-{k}"
        self.consul.catalog_register(
            sid,
            f"10.{k // 250 % 250}.{k % 250}.{1 + len(svc) % 200}",
            service={"Service": svc, "ID": sid, "Port": 8000 + k % 1000,
                     "Tags": ["primary"] if k % 2 else ["replica"]},
            checks=[{"CheckID": f"{sid}-alive", "Name": "alive", "Status": status,
                     "ServiceID": sid}],
        )  # fmt: skip

    def churn_once(self) -> None:
        svc = service(self.rng.randrange(SERVICES))
        instances = self.live.setdefault(svc, [])
        op = self.rng.choice(("flip", "flip", "register", "deregister"))
        if op == "register" and len(instances) < MAX_INSTANCES:
            self.register(svc, self.rng.choice(STATUSES))
        elif op == "deregister" and len(instances) > 1:
            k = instances.pop(self.rng.randrange(len(instances)))
            self.consul.catalog_deregister(f"{svc}-{k}")
        elif instances:
            op = "flip"
            self._put(svc, self.rng.choice(instances), self.rng.choice(STATUSES))
        self.ops[op] += 1


@dataclass
class Sample:
    at_s: float
    rss_kb: int
    fds: int


@dataclass
class Report:
    date: str
    machine: dict[str, Any]
    minutes: float
    qps: int
    sent: int = 0
    answered: int = 0
    lost: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    warm_index: int = 0
    churn: dict[str, int] = field(default_factory=dict)
    churn_errors: int = 0
    flaps: int = 0
    flap_errors: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    log_errors: int = 0
    log_warnings: int = 0
    tracebacks: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)

    def first_warm_last_max(self, key: str) -> tuple[int, int, int, int]:
        values = [getattr(s, key) for s in self.samples] or [0]
        warm = values[min(self.warm_index, len(values) - 1)]
        return values[0], warm, values[-1], max(values)


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _repeat(stop: threading.Event, every: float, action: Callable[[], None]) -> None:
    while not stop.wait(every):
        action()


# Metrics worth reporting (counters of failures, plus what shows the work done).
_STALE_SERVED = 'cache_stale_answers_total{reason="upstream_failed"}'
_METRICS = (
    "internal_errors_total", "formerr_total", "slow_total", "cache_misses_total",
    "cache_hits_total", _STALE_SERVED, "truncated_total",
    "forward_timeouts_total", "forward_failed_total", "forward_spoofed_total",
    "forward_overload_total",
)  # fmt: skip


def run(minutes: float, qps: int, seed: int) -> Report:
    duration = minutes * 60
    rng = random.Random(seed)
    report = Report(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=machine().to_json(),
        minutes=minutes,
        qps=qps,
    )
    stop = threading.Event()
    lock = threading.Lock()
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp,
        ConsulAgent("soak") as consul,
        KnotUpstream(records=zone_records(CACHED_NAMES)) as knot,
    ):
        catalog = Catalog(consul, rng)
        for i in range(SERVICES):
            for _ in range(INSTANCES):
                catalog.register(service(i))
        log(f"catalog: {SERVICES} services x {INSTANCES} instances", "soak")
        datafile = Path(tmp) / "queries.txt"
        datafile.write_text("\n".join(query_lines(rng)) + "\n")
        with ConsulGateway(consul.http_addr, knot.address) as gw:
            assert gw.pid is not None
            pid = gw.pid

            def sample() -> None:
                pids = process_tree(pid)
                s = Sample(round(time.monotonic() - start, 1), rss_kb(pids), _fds(pid))
                with lock:
                    report.samples.append(s)

            def churn() -> None:
                try:
                    catalog.churn_once()
                except (ConsulAPIError, OSError):
                    report.churn_errors += 1

            def flap() -> None:
                while not stop.is_set():
                    if stop.wait(FLAP_UP_S):
                        return
                    knot.stop()
                    report.flaps += 1
                    if stop.wait(FLAP_DOWN_S):
                        break
                    try:
                        knot.start()
                    except ServerStartError:
                        report.flap_errors += 1

            start = time.monotonic()
            sample()
            threads = [
                threading.Thread(target=_repeat, args=(stop, SAMPLE_INTERVAL_S, sample)),
                threading.Thread(target=_repeat, args=(stop, CHURN_INTERVAL_S, churn)),
                threading.Thread(target=flap),
            ]
            for t in threads:
                t.start()
            log(f"dnsperf: {qps}/s for {duration:.0f} s", "soak")
            try:
                result = dnsperf.run(
                    gw.host, gw.port, datafile, duration=duration, clients=4,
                    max_qps=qps, timeout=ANSWER_TIMEOUT_S,
                )  # fmt: skip
            finally:
                stop.set()
                for t in threads:
                    t.join()
            sample()
            warm_after = min(MAX_WARMUP_S, duration * WARMUP_FRACTION)
            report.warm_index = next(
                (i for i, s in enumerate(report.samples) if s.at_s >= warm_after), 0
            )
            metrics = gw.metrics()
            report.metrics = {k: metrics.get(k, 0.0) for k in _METRICS}
            rcodes: dict[str, float] = {}
            for k, v in metrics.items():
                if k.startswith("responses_total{"):
                    rcode = k.split('rcode="', 1)[1].split('"', 1)[0]
                    rcodes[f"rcode_{rcode}"] = rcodes.get(f"rcode_{rcode}", 0.0) + v
            report.metrics.update(rcodes)
            text = gw.log_text()
        summary = LogSummary.of(text)
        report.log_errors = summary.errors
        report.log_warnings = summary.warnings
        report.exceptions = summary.exceptions
        report.tracebacks = text.count("Traceback (most recent call last)")
    report.sent, report.answered, report.lost = result.sent, result.completed, result.lost
    report.rcodes = result.rcodes
    report.churn = dict(catalog.ops)
    return report


def text(report: Report) -> str:
    rss = report.first_warm_last_max("rss_kb")
    fds = report.first_warm_last_max("fds")
    warm_growth = (rss[2] - rss[1]) / rss[1] * 100 if rss[1] else 0.0
    lines = [
        f"soak {report.date}, {report.minutes:g} min at {report.qps}/s, "
        f"{report.machine['nproc']} x {report.machine['cpu']}",
        f"queries: {report.sent:,} sent, {report.answered:,} answered, {report.lost:,} lost",
        "rcodes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report.rcodes.items())),
        f"RSS MB first/warm/last/max: {'/'.join(f'{v / 1024:.1f}' for v in rss)} "
        f"(last vs warm {warm_growth:+.1f}%)",
        f"open fds first/warm/last/max: {'/'.join(str(v) for v in fds)}",
        "catalog churn: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(report.churn.items()))
        + f" ({report.churn_errors} API errors)",
        f"upstream flaps: {report.flaps} ({report.flap_errors} failed restarts)",
        "gateway metrics: " + ", ".join(f"{k} {v:,.0f}" for k, v in report.metrics.items()),
        f"gateway log: {report.log_errors} ERROR, {report.log_warnings} WARNING, "
        f"{report.tracebacks} tracebacks",
    ]
    lines += [f"  {n:,}x {exc}" for exc, n in report.exceptions.items()]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    rss = report.first_warm_last_max("rss_kb")
    fds = report.first_warm_last_max("fds")
    m = report.metrics
    rows = [
        ("date, machine", f"{report.date}, {report.machine['nproc']}-core "
                          f"{report.machine['cpu']}"),
        ("load", f"{report.minutes:g} min at {report.qps:,} queries/s (dnsperf)"),
        ("queries sent / answered / lost", f"{report.sent:,} / {report.answered:,} / "
                                           f"{report.lost:,}"),
        ("rcodes", ", ".join(f"{k} {v:,}" for k, v in sorted(report.rcodes.items()))),
        ("RSS first / after warm-up / last / max", " / ".join(f"{v / 1024:.1f} MB" for v in rss)),
        ("open fds first / after warm-up / last / max", " / ".join(str(v) for v in fds)),
        ("catalog churn", ", ".join(f"{k} {v:,}" for k, v in sorted(report.churn.items()))),
        ("upstream flaps (Knot stopped, restarted)", f"{report.flaps}"),
        ("internal_errors / stale_served / forward timeouts",
         f"{m.get('internal_errors_total', 0):,.0f} / "
         f"{m.get(_STALE_SERVED, 0):,.0f} / {m.get('forward_timeouts_total', 0):,.0f}"),
        ("log: ERROR / WARNING lines / tracebacks",
         f"{report.log_errors} / {report.log_warnings} / {report.tracebacks}"),
    ]  # fmt: skip
    out = ["| soak | figure |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    parser.add_argument("--qps", type=int, default=DEFAULT_QPS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the README table too")
    args = parser.parse_args(argv)
    try:
        with sigterm_as_interrupt():
            report = run(args.minutes, args.qps, args.seed)
    except KeyboardInterrupt:
        return 130
    print(text(report))
    if args.markdown:
        print()
        print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
