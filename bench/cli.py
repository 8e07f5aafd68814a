"""``python -m bench``: the gateway against its peers, same data, same dnsperf runs.

Starts on loopback a Consul dev agent with a generated catalog, a Knot upstream with a
generated zone, then the servers under test (the gateway, dnsmasq, Consul's DNS, CoreDNS
if it builds), runs every workload against each with identical dnsperf parameters, and
prints queries/s, p50/p99 latency, lost queries and peak RSS with gateway/peer ratios.
Results go to bench/results/ as JSON and Markdown (and a PNG with ``--plot``).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from harness.consul import consul_binary
from harness.process import sigterm_as_interrupt

from . import measuring, reporting, servers, workloads
from .catalog import make_catalog
from .environment import cpu_busy, log, machine, versions
from .measuring import Passes
from .reporting import RESULTS_DIR, Report, RunMeta
from .servers import ALL_SERVERS
from .workloads import WORKLOADS


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [v.strip().lower() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--servers", type=_csv(ALL_SERVERS), default=list(ALL_SERVERS))
    p.add_argument("--workloads", type=_csv(tuple(WORKLOADS)), default=list(WORKLOADS))
    p.add_argument("--duration", type=float, default=10.0, help="seconds per peak run (-l)")
    p.add_argument("--quick", action="store_true", help="2-s smoke run")
    p.add_argument(
        "--latency-duration",
        type=float,
        default=None,
        help="seconds of the p50/p99 pass (default min(5, duration/2))",
    )
    p.add_argument(
        "--latency-qps",
        type=float,
        default=None,
        help="fixed rate of the p50/p99 pass for every server (default: 50%% of each "
        "server's own peak)",
    )
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    p.add_argument("--threads", type=int, default=None, help="dnsperf -T")
    p.add_argument("--max-qps", type=float, default=None, help="dnsperf -Q of the peak run")
    p.add_argument("--timeout", type=float, default=5.0, help="dnsperf -t")
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--ipv6-services", type=int, default=5)
    p.add_argument("--gateway-args", default="", help='extra gateway flags, e.g. "--workers 2"')
    p.add_argument("--profile", action="store_true", help="profile the gateway under w1")
    p.add_argument(
        "--profiler",
        choices=("auto", "py-spy", "pyinstrument"),
        default="auto",
        help="auto: py-spy attached to the running gateway if installed, else pyinstrument",
    )
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--coredns-version", default="v1.15.0")
    p.add_argument("--coredns-build-timeout", type=float, default=600.0)
    p.add_argument(
        "--max-minutes", type=float, default=45.0, help="stop starting new runs after this"
    )
    p.add_argument(
        "--scale", action="store_true", help="run the catalog-scale benchmark (bench.scale)"
    )
    return p


def passes_of(args: argparse.Namespace) -> Passes:
    duration = min(args.duration, 2.0) if args.quick else args.duration
    return Passes(
        duration=duration,
        latency_duration=args.latency_duration or min(5.0, max(1.0, duration / 2)),
        clients=args.clients,
        threads=args.threads,
        timeout=args.timeout,
        max_qps=args.max_qps,
        latency_qps=args.latency_qps,
    )


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; 1 when a pass failed or the gateway did not start."""
    passes = passes_of(args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    mach = machine()
    meta = RunMeta(stamp, mach, cpu_busy(), sys.argv[1:])
    catalog = make_catalog(args.services, args.instances, ipv6_services=args.ipv6_services)
    workdir = Path(tempfile.mkdtemp(prefix="dnsbench-"))
    notes: list[str] = []
    cells: list[measuring.Cell] = []
    peers = servers.Peers()
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        try:
            files = workloads.query_files(workdir, catalog)
            backends = servers.start_backends(stack, catalog, consul_binary(), args.instances)
            peers = servers.start_peers(
                args.servers,
                stack,
                backends,
                workdir,
                gateway_args=args.gateway_args,
                coredns_version=args.coredns_version,
                coredns_build_timeout=args.coredns_build_timeout,
            )
            meta.peers = peers
            if any(s.key == "coredns" for s in peers.servers):
                notes.append(
                    "CoreDNS's cache raises Consul's TTL 0 to its 5-s minimum TTL, so its "
                    "w1/w5 answers come from its cache; dnsmasq does not cache TTL-0 answers "
                    "and forwards every .consul query"
                )
            meta.versions = versions(backends.consul_bin, peers.coredns_binary, dnsperf=True)
            meta.sanity = servers.sanity(peers.servers, catalog)

            cells = measuring.measure_all(
                peers.servers,
                args.workloads,
                passes,
                files,
                workdir,
                deadline=deadline,
                notes=notes,
            )
            gw = peers.gateway
            if gw is not None and args.profile and gw.alive and "w1" in files:
                try:
                    meta.profile = measuring.profile_gateway(
                        gw,
                        files["w1"],
                        passes,
                        tool=args.profiler,
                        out_stem=args.results_dir / f"profile-{stamp}-w1",
                        workdir=workdir,
                        notes=notes,
                    )
                except Exception as exc:
                    notes.append(f"profiling failed: {exc}")
            if gw is not None:
                meta.gateway_end = measuring.gateway_end(gw, peers.gateway_metrics_addr, notes)
        except KeyboardInterrupt:
            log("interrupted: stopping every process")
            raise
        except Exception:
            log("benchmark failed:\n" + traceback.format_exc())
            for s in peers.servers:
                log(f"--- {s.key} log tail ---\n{s.log_tail(2000)}")
            raise
        finally:
            for s in peers.servers:
                meta.log_tails[s.key] = s.log_tail(4000)
            if "gateway" in peers.unavailable:
                with contextlib.suppress(OSError):
                    meta.log_tails["gateway"] = (workdir / "gateway.log").read_text()[-4000:]

    vers = meta.versions or {}
    busy = meta.cpu_busy_before
    if busy is not None and busy > 0.2:
        notes.append(
            f"the CPUs were {100 * busy:.0f}% busy before the run started: something else "
            "was running, figures may be low"
        )
    rep = Report(
        reporting.header_line(now, mach, vers),
        reporting.params_line(passes, args.gateway_args),
        reporting.data_line(catalog, args.instances, args.ipv6_services),
        cells,
        peers.unavailable,
        notes,
        meta,
    )
    reporting.write_all(rep, args.results_dir, stamp, args.plot)
    log(f"total {time.monotonic() - started:.0f}s")
    failed = any(c.error for c in cells) or "gateway" in peers.unavailable
    return 1 if failed else 0
