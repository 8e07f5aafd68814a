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
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from tests.support.consul import consul_binary
from tests.support.ports import LOOPBACK, free_port
from tests.support.upstream import ZONE

from . import dnsperf, report, workloads
from .catalog import Catalog, make_catalog, register, wait_registered
from .report import Cell, Report
from .servers import (
    ConsulAgent,
    CoreDNSServer,
    CoreDNSUnavailable,
    DnsmasqServer,
    GatewayProcess,
    KnotUpstream,
    Server,
    coredns_binary,
    exception_counts,
    peak_rss_kb,
    probe,
    reset_peak_rss,
    scrape_metrics,
    versions,
)
from .workloads import WORKLOADS, Workload

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_SERVERS = ("gateway", "dnsmasq", "consul", "coredns")
WARM_QPS = 5000
# Unique names generated per second of a cache-miss run: above what any server here
# forwards on a small machine; a run that exhausts them is flagged.
MISS_NAMES_PER_SECOND = 80_000


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


# --------------------------------------------------------------------- environment


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (before a run: is anything else running?)."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else 1.0 - (idle1 - idle0) / total


def gateway_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (sha or "?") + ("+dirty" if dirty else "")


# ------------------------------------------------------------------------ the run


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    catalog: Catalog
    files: dict[str, Path]
    lat_duration: float
    deadline: float
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _miss_file(ctx: Context, seconds: float) -> tuple[Path, int]:
    count = int(MISS_NAMES_PER_SECOND * seconds) + 1000
    path = ctx.workdir / "w3-run.txt"
    workloads.write(path, workloads.w3_lines(count))
    return path, count


def measure(ctx: Context, server: Server, w: Workload) -> Cell:
    args = ctx.args
    cell = Cell(server.key, w.key, report.label(server.key, w.key))
    pids = server.pids()
    reset_peak_rss(pids)
    common: dict[str, Any] = {
        "clients": args.clients,
        "threads": args.threads,
        "tcp": w.tcp,
        "timeout": args.timeout,
    }
    datafile = ctx.files.get(w.key)
    if w.warm and datafile is not None:
        lines = sum(1 for _ in datafile.open())
        dnsperf.run(
            server.host,
            server.port,
            datafile,
            duration=lines / WARM_QPS + 5,
            max_qps=WARM_QPS,
            max_runs=1,
            **common,
        )
    max_runs = None
    count = 0
    if w.unique:
        datafile, count = _miss_file(ctx, args.duration)
        max_runs = 1
    assert datafile is not None
    peak = dnsperf.run(
        server.host,
        server.port,
        datafile,
        duration=args.duration,
        max_qps=args.max_qps,
        max_runs=max_runs,
        **common,
    )
    if w.unique and peak.sent >= count:
        ctx.notes.append(f"{server.key} {w.key}: ran out of unique names ({count:,})")
    cell.qps, cell.mean_ms, cell.sent, cell.lost = peak.qps, peak.mean_ms, peak.sent, peak.lost
    cell.rcodes = dict(peak.rcodes)
    if not server.alive:
        raise RuntimeError(f"{server.key} died during {w.key}")
    rate = args.latency_qps or max(50.0, peak.qps / 2)
    if w.unique:
        datafile, count = _miss_file(ctx, ctx.lat_duration * rate / MISS_NAMES_PER_SECOND + 1)
    lat = dnsperf.run(
        server.host,
        server.port,
        datafile,
        duration=ctx.lat_duration,
        max_qps=rate,
        max_runs=max_runs,
        verbose=True,
        **common,
    )
    cell.p50_ms, cell.p99_ms, cell.lost_half = lat.p50_ms, lat.p99_ms, lat.lost
    cell.latency_qps = rate
    cell.peak_rss_kb = peak_rss_kb(server.pids())
    cell.raw = {"peak": peak.to_json(), "latency": lat.to_json()}
    if not server.alive:
        raise RuntimeError(f"{server.key} died during {w.key}")
    bad = {k: v for k, v in peak.rcodes.items() if k in ("SERVFAIL", "REFUSED", "FORMERR")}
    if bad:
        share = sum(bad.values()) / max(1, sum(peak.rcodes.values()))
        if share > 0.001:
            ctx.notes.append(f"{server.key} {w.key}: {bad} ({100 * share:.1f}% of answers)")
    return cell


def start_failure(exc: BaseException) -> str:
    """First line of a start error plus the last line of the log tail it carries."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].removesuffix("; log tail:")
    return first[:200] + (f" -- {lines[-1][:200]}" if len(lines) > 1 else "")


def start_servers(
    ctx: Context, stack: contextlib.ExitStack, knot: KnotUpstream, consul: ConsulAgent
) -> list[Server]:
    args = ctx.args
    servers: list[Server] = []
    consul_dns = f"{LOOPBACK}:{consul.dns_port}"
    for key in args.servers:
        try:
            if key == "gateway":
                metrics = f"{LOOPBACK}:{free_port()}"
                gw_args = [
                    "--upstream",
                    knot.address,
                    "--consul",
                    consul.http_addr,
                    "--metrics-listen",
                    metrics,
                    *shlex.split(args.gateway_args),
                ]
                # Probe a name Knot serves: "." would be REFUSED upstream, which the gateway
                # may retry until its forward deadline, and only the listener is in question.
                gw = GatewayProcess(*gw_args, log_path=ctx.workdir / "gateway.log", probe_name=ZONE)
                log(f"starting gateway: {' '.join(gw.command())}")
                stack.callback(gw.close)
                gw.start(timeout=30)
                assert gw.pid is not None
                ctx.meta["gateway_command"] = gw.command()
                ctx.meta["gateway_metrics_addr"] = metrics
                servers.append(Server("gateway", gw.host, gw.port, gw.pid, gw))
            elif key == "dnsmasq":
                dm = DnsmasqServer(
                    [f"{LOOPBACK}#{knot.port}", f"/consul/{LOOPBACK}#{consul.dns_port}"],
                    cache_size=10000,
                )
                stack.callback(dm.close)
                dm.start()
                assert dm.pid is not None
                ctx.meta["dnsmasq_command"] = dm.command()
                servers.append(Server("dnsmasq", dm.host, dm.port, dm.pid, dm))
            elif key == "consul":
                proc = consul.proc
                assert proc is not None
                servers.append(Server("consul", LOOPBACK, consul.dns_port, proc.pid, consul))
            elif key == "coredns":
                log("CoreDNS: using the cached build or building it (Go module proxy)")
                binary = coredns_binary(args.coredns_version, args.coredns_build_timeout)
                ctx.meta["coredns_binary"] = str(binary)
                cd = CoreDNSServer(binary, knot.address, consul_dns)
                stack.callback(cd.close)
                cd.start()
                assert cd.pid is not None
                ctx.meta["corefile"] = cd.corefile.read_text()
                servers.append(Server("coredns", cd.host, cd.port, cd.pid, cd))
        except CoreDNSUnavailable as exc:
            ctx.unavailable[key] = str(exc).splitlines()[0][:300]
            log(f"{key}: not available: {exc}")
        except Exception as exc:
            ctx.unavailable[key] = f"failed to start: {start_failure(exc)}"
            log(f"{key} FAILED TO START: {exc}")
    return servers


def sanity(ctx: Context, servers: list[Server]) -> None:
    svc = ctx.catalog.services[0].name
    checks = [
        (f"{svc}.service.consul", "A"),
        (f"{svc}.service.consul", "SRV"),
        (workloads.cached_name(1), "A"),
        ("nx0001." + ZONE, "A"),
    ]
    for s in servers:
        answers = ", ".join(f"{n} {t}: {probe(s.host, s.port, n, t)}" for n, t in checks)
        log(f"{s.key} on {s.host}:{s.port} pid {s.pid}: {answers}")
        ctx.meta.setdefault("sanity", {})[s.key] = answers


def profile_gateway(ctx: Context, gw: Server) -> None:
    """py-spy attached to the running gateway during a w1 run (pyinstrument if no py-spy)."""
    args = ctx.args
    stamp = ctx.meta["stamp"]
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    datafile = ctx.files["w1"]
    tool = getattr(args, "profiler", "auto")
    if tool == "py-spy" and not Path(spy).is_file():
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    if tool != "pyinstrument" and Path(spy).is_file():
        out = args.results_dir / f"profile-{stamp}-w1.svg"
        cmd = [
            spy,
            "record",
            "--pid",
            str(gw.pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "250",
            "--duration",
            str(int(args.duration) + 1),
            "--output",
            str(out),
        ]
        log(f"profiling the gateway with py-spy for w1 -> {out}")
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as spy_proc:
            time.sleep(0.5)
            res = dnsperf.run(
                gw.host, gw.port, datafile, duration=args.duration, clients=args.clients
            )
            try:
                spy_out, _ = spy_proc.communicate(timeout=args.duration + 60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_out, _ = spy_proc.communicate()
        ctx.meta["profile"] = {
            "tool": "py-spy",
            "file": str(out),
            "qps_under_profiler": res.qps,
            "output": spy_out[-500:],
        }
        if spy_proc.returncode != 0 or not out.exists():
            ctx.notes.append(f"py-spy failed ({spy_proc.returncode}): {spy_out.strip()[-200:]}")
        else:
            ctx.notes.append(f"profile (py-spy, w1): {out}")
        return
    # Fallback: a second gateway started under pyinstrument, stopped with SIGTERM.
    out = args.results_dir / f"profile-{stamp}-w1.html"
    assert isinstance(gw.process, GatewayProcess)
    prof = GatewayProcess(
        *gw.process.args,
        log_path=ctx.workdir / "gateway-pyinstrument.log",
        probe_name=ZONE,
        launcher=[sys.executable, "-m", "pyinstrument", "-r", "html", "-o", str(out)],
    )
    # pyinstrument's own "-m gateway" goes before the gateway's flags.
    prof.launcher = (*prof.launcher, "-m", "gateway")
    log(f"profiling a second gateway under pyinstrument for w1 -> {out}")
    try:
        prof.start(timeout=30)
        res = dnsperf.run(prof.host, prof.port, datafile, duration=args.duration)
    finally:
        # SIGTERM lets pyinstrument write its report; close() also removes its work dir.
        prof.stop(30.0)
        prof.close()
    ctx.meta["profile"] = {"tool": "pyinstrument", "file": str(out), "qps": res.qps}
    if out.exists():
        ctx.notes.append(f"profile (pyinstrument, w1): {out}")
    else:
        ctx.notes.append(f"pyinstrument wrote no profile; see {prof.log_path}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.duration = min(args.duration, 2.0)
    lat_duration = args.latency_duration or min(5.0, max(1.0, args.duration / 2))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    mach = machine()
    mach["cpu_busy_before"] = cpu_busy()
    catalog = make_catalog(args.services, args.instances, ipv6_services=args.ipv6_services)
    workdir = Path(tempfile.mkdtemp(prefix="dnsbench-"))
    ctx = Context(
        args=args,
        workdir=workdir,
        catalog=catalog,
        files={},
        lat_duration=lat_duration,
        deadline=started + args.max_minutes * 60,
        meta={"stamp": stamp, "machine": mach, "argv": sys.argv[1:]},
    )
    cells: list[Cell] = []
    servers: list[Server] = []
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        try:
            # Query files: the same for every server.
            import random

            rng = random.Random(4)
            ctx.files = {
                "w1": workloads.write(workdir / "w1.txt", workloads.w1_lines(catalog, rng)),
                "w2": workloads.write(workdir / "w2.txt", workloads.w2_lines(rng)),
                "w4": workloads.write(workdir / "w4.txt", workloads.w4_lines(catalog, rng)),
            }
            ctx.files["w5"] = ctx.files["w1"]

            consul_bin = consul_binary()
            log("starting Knot (upstream, example.test.)")
            knot = KnotUpstream(records=workloads.zone_records())
            stack.callback(knot.close)
            knot.start()
            log("starting Consul dev agent")
            consul = ConsulAgent(
                "bench1", binary=consul_bin, hcl=[f'recursors = ["{knot.address}"]']
            )
            consul.start()
            stack.callback(consul.stop)
            took = register(consul, catalog)
            wait_registered(consul, catalog)
            log(
                f"catalog: {len(catalog.services)} services x {args.instances} instances on "
                f"{len(catalog.nodes)} nodes registered in {took:.2f}s"
            )
            servers = start_servers(ctx, stack, knot, consul)
            keys = {s.key for s in servers}
            if "coredns" in keys:
                ctx.notes.append(
                    "CoreDNS's cache raises Consul's TTL 0 to its 5-s minimum TTL, so its "
                    "w1/w5 answers come from its cache; dnsmasq does not cache TTL-0 answers "
                    "and forwards every .consul query"
                )
            coredns = ctx.meta.get("coredns_binary")
            vers = versions(consul_bin, Path(coredns) if coredns else None)
            vers["dnsperf"] = dnsperf.version()
            vers["gateway"] = gateway_version()
            ctx.meta["versions"] = vers
            sanity(ctx, servers)

            for server in servers:
                for wkey in args.workloads:
                    w = WORKLOADS[wkey]
                    if time.monotonic() > ctx.deadline:
                        ctx.notes.append(f"--max-minutes reached: {server.key} {wkey} skipped")
                        continue
                    if not server.alive:
                        cells.append(
                            Cell(server.key, wkey, report.label(server.key, wkey), error="dead")
                        )
                        continue
                    log(f"{server.key} {wkey}: {w.title}")
                    try:
                        cell = measure(ctx, server, w)
                    except Exception as exc:
                        log(f"{server.key} {wkey} FAILED: {exc}")
                        cell = Cell(
                            server.key, wkey, report.label(server.key, wkey), error=str(exc)
                        )
                        if not server.alive:
                            ctx.notes.append(f"{server.key} died in {wkey}; log tail in JSON")
                    else:
                        log(
                            f"  {cell.qps:,.0f} q/s, mean {cell.mean_ms:.2f} ms, p50 "
                            f"{cell.p50_ms or 0:.3f} p99 {cell.p99_ms or 0:.3f} ms at "
                            f"{cell.latency_qps:,.0f} q/s, lost {cell.lost}+{cell.lost_half}, "
                            f"rcodes {cell.rcodes}"
                        )
                    cells.append(cell)
            gw = next((s for s in servers if s.key == "gateway"), None)
            if gw is not None and args.profile and gw.alive and "w1" in ctx.files:
                try:
                    profile_gateway(ctx, gw)
                except Exception as exc:
                    ctx.notes.append(f"profiling failed: {exc}")
            if gw is not None:
                with contextlib.suppress(Exception):
                    ctx.meta["gateway_metrics"] = scrape_metrics(ctx.meta["gateway_metrics_addr"])
                ctx.meta["gateway_alive_at_end"] = gw.alive
                if not gw.alive:
                    ctx.notes.append("the gateway was not running at the end")
                assert isinstance(gw.process, GatewayProcess)
                text = gw.process.log_text()
                errors, warnings = text.count(" ERROR "), text.count(" WARNING ")
                excs = exception_counts(text)
                ctx.meta["gateway_log"] = {
                    "errors": errors,
                    "warnings": warnings,
                    "exceptions": excs,
                }
                if errors or warnings:
                    detail = "; ".join(f"{n:,}x {e}" for e, n in excs.items())
                    ctx.notes.append(
                        f"gateway log: {errors:,} ERROR, {warnings:,} WARNING lines"
                        + (f" ({detail})" if detail else "")
                    )
        except KeyboardInterrupt:
            log("interrupted: stopping every process")
            raise
        except Exception:
            log("benchmark failed:\n" + traceback.format_exc())
            for s in servers:
                log(f"--- {s.key} log tail ---\n{s.log_tail(2000)}")
            raise
        finally:
            for s in servers:
                ctx.meta.setdefault("log_tails", {})[s.key] = s.log_tail(4000)
            if "gateway" in ctx.unavailable:
                gw_log = workdir / "gateway.log"
                with contextlib.suppress(OSError):
                    ctx.meta.setdefault("log_tails", {})["gateway"] = gw_log.read_text()[-4000:]

    vers = ctx.meta.get("versions", {})
    header = (
        f"{now.strftime('%Y-%m-%d %H:%M UTC')} on {mach['nproc']} CPUs ({mach['cpu']}), "
        f"Linux {mach['kernel']}; Python {mach['python']}, gateway {vers.get('gateway', '?')}, "
        f"dnsperf {vers.get('dnsperf', '?')}, dnsmasq {vers.get('dnsmasq', '?')}, "
        f"Knot {vers.get('knot', '?')}, Consul {vers.get('consul', '?')}"
        + (f", CoreDNS {vers['coredns']}" if "coredns" in vers else "")
    )
    qps_part = f"-Q {args.max_qps:g}" if args.max_qps else "no -Q"
    lat_rate = f"{args.latency_qps:g} q/s" if args.latency_qps else "50% of each server's own peak"
    params = (
        f"dnsperf -c {args.clients} -l {args.duration:g} -t {args.timeout:g} ({qps_part})"
        f"{' -T ' + str(args.threads) if args.threads else ''}, UDP (w5 TCP), no EDNS; "
        f"p50/p99 from a {lat_duration:g}-s dnsperf -v pass at {lat_rate}; w1/w2/w4/w5 after one "
        f"warm-up pass; RSS = peak (VmHWM) during the workload, gateway summed over its "
        f"processes; gateway args: {args.gateway_args or '(defaults)'}"
    )
    data = (
        f"catalog {len(catalog.services)} services x {args.instances} instances "
        f"({args.ipv6_services} IPv6-only) on {len(catalog.nodes)} nodes; Knot zone "
        f"{workloads.CACHED_NAMES:,} names + *.miss wildcard; dnsmasq --cache-size=10000 with "
        f"server=/consul/ -> Consul DNS; Consul has recursors = Knot"
    )
    busy = mach.get("cpu_busy_before")
    if busy is not None and busy > 0.2:
        ctx.notes.append(
            f"the CPUs were {100 * busy:.0f}% busy before the run started: something else "
            "was running, figures may be low"
        )
    rep = Report(header, params, data, cells, ctx.unavailable, ctx.notes, ctx.meta)
    text = report.text_table(rep)
    print(text, flush=True)
    json_path = args.results_dir / f"bench-{stamp}.json"
    md_path = args.results_dir / f"bench-{stamp}.md"
    report.write_json(rep, json_path)
    md_path.write_text(report.markdown(rep))
    log(f"wrote {json_path} and {md_path}")
    if args.plot is not None:
        report.plot(rep, args.plot)
        log(f"wrote {args.plot}")
    log(f"total {time.monotonic() - started:.0f}s")
    failed = any(c.error for c in cells) or "gateway" in ctx.unavailable
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scale:
        from . import scale

        return scale.main([] if args.quick is False else ["--quick"])
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
