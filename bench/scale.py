"""``python -m bench.scale``: how start-up time and memory grow with the catalog.

For 10 / 1,000 / 10,000 services x 10 instances (registered through /v1/txn in batches of
64 operations), on a fresh Consul dev agent each time:

- watch-all: the gateway started with ``--consul-watch-all``: time from process start to
  the first answer for a service, time until every service answers, RSS then;
- lazy (default): time to the first answer of one service, time to query every service
  once (each first query starts a watch), RSS then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode

from harness.consul import ConsulAgent, consul_binary
from harness.gateway import ConsulGateway, scrape_metrics
from harness.knot import KnotUpstream
from harness.process import process_tree, sigterm_as_interrupt

from . import dnsperf
from .catalog import make_catalog, register, service_name, wait_registered
from .environment import log as _log
from .environment import machine, versions
from .measuring import LogSummary, peak_rss_kb, rss_kb
from .reporting import RESULTS_DIR
from .servers import bench_gateway

INSTANCES = 10


def log(msg: str) -> None:
    _log(msg, "scale")


def first_answer(host: str, port: int, name: str, deadline: float) -> float | None:
    """Poll ``name`` A until an answer with records; monotonic time of it, None on timeout."""
    query = dns.message.make_query(name, "A")
    while time.monotonic() < deadline:
        try:
            resp = dns.query.udp(query, host, port=port, timeout=0.5)
        except Exception:  # not up yet, or the first query is still waiting on Consul
            time.sleep(0.02)
            continue
        if resp.rcode() == dns.rcode.NOERROR and resp.answer:
            return time.monotonic()
        time.sleep(0.02)
    return None


def query_all(
    host: str, port: int, names_file: Path, count: int, rate: int
) -> dnsperf.DnsperfResult:
    """Every service once (A), at ``rate`` q/s, bounded by dnsperf's own limits.

    Many queries may be outstanding at once (a lazy gateway holds each first query while
    it asks Consul): dnsperf's default cap of 100 would throttle the pass, not measure it.
    """
    return dnsperf.run(
        host,
        port,
        names_file,
        duration=count / rate + 15,
        max_qps=rate,
        max_runs=1,
        clients=4,
        timeout=5.0,
        outstanding=min(count, 20000),
    )


def gateway_mem(gw: ConsulGateway) -> dict[str, float]:
    assert gw.pid is not None
    pids = process_tree(gw.pid)
    return {"rss_mb": rss_kb(pids) / 1024, "peak_rss_mb": peak_rss_kb(pids) / 1024}


def run_mode(
    mode: str,
    consul: ConsulAgent,
    knot: KnotUpstream,
    n: int,
    names_file: Path,
    workdir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    gw = bench_gateway(
        knot,
        consul,
        *(["--consul-watch-all"] if mode == "watch-all" else []),
        log_path=workdir / f"gateway-{n}-{mode}.log",
    )
    out: dict[str, Any] = {"mode": mode}
    t0 = time.monotonic()
    try:
        gw.start(timeout=60)
        out["listening_s"] = time.monotonic() - t0
        last = service_name(n - 1)
        got = first_answer(gw.host, gw.port, f"{last}.service.consul", t0 + args.step_timeout)
        out["first_answer_s"] = None if got is None else got - t0
        # Every service: in watch-all mode repeated until all answer; in lazy mode once
        # (each first query makes the gateway fetch and watch that service).
        t1 = time.monotonic()
        rounds = 0
        while True:
            rounds += 1
            res = query_all(gw.host, gw.port, names_file, n, args.rate)
            ok = res.rcodes.get("NOERROR", 0)
            if mode == "lazy" or ok >= n or time.monotonic() - t0 > args.step_timeout:
                break
            time.sleep(0.5)
        out["all_answered_s"] = time.monotonic() - (t0 if mode == "watch-all" else t1)
        out["query_all_rounds"] = rounds
        out["query_all_rcodes"] = res.rcodes
        out["query_all_lost"] = res.lost
        if mode == "lazy":
            # A second pass: now from memory.
            again = query_all(gw.host, gw.port, names_file, n, args.rate)
            out["second_pass_rcodes"] = again.rcodes
            out["second_pass_lost"] = again.lost
        time.sleep(1.0)
        out.update(gateway_mem(gw))
        with contextlib.suppress(Exception):
            out["metrics"] = {
                k: v
                for k, v in scrape_metrics(gw.metrics_addr, timeout=3.0).items()
                if "consul" in k or "watch" in k or "service" in k
            }
        out["alive"] = gw.running
    except Exception as exc:
        out["error"] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log(f"gateway ({mode}, {n} services) FAILED: {exc}")
    finally:
        out["log_tail"] = gw.log_tail(1500)
        text = gw.log_text()
        summary = LogSummary.of(text)
        out["log_lines"] = text.count("\n")
        out["log_errors"] = summary.errors
        out["log_warnings"] = summary.warnings
        out["log_exceptions"] = summary.exceptions
        gw.close()
    return out


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    consul_bin = consul_binary()
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="dnsbench-scale-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        knot = KnotUpstream()
        stack.callback(knot.close)
        knot.start()
        for n in args.sizes:
            if time.monotonic() - started > args.max_minutes * 60:
                log(f"--max-minutes reached, {n} skipped")
                break
            row: dict[str, Any] = {"services": n, "instances": n * INSTANCES}
            consul = ConsulAgent("scale1", binary=consul_bin)
            consul.start()
            try:
                catalog = make_catalog(n, INSTANCES)
                row["register_s"] = register(consul, catalog, timeout=args.step_timeout)
                wait_registered(consul, catalog, timeout=args.step_timeout)
                log(f"{n} services x {INSTANCES}: registered in {row['register_s']:.1f}s")
                names = workdir / f"names-{n}.txt"
                names.write_text("".join(f"{s.name}.service.consul A\n" for s in catalog.services))
                for mode in args.modes:
                    r = run_mode(mode, consul, knot, n, names, workdir, args)
                    row[mode] = r
                    log(
                        f"  {mode}: first answer {_s(r.get('first_answer_s'))}, all "
                        f"{_s(r.get('all_answered_s'))}, RSS {_mb(r.get('rss_mb'))} "
                        f"{r.get('error') or ''}"
                    )
                if consul.pid is not None:
                    row["consul_rss_mb"] = rss_kb([consul.pid]) / 1024
            except Exception as exc:
                row["error"] = str(exc)[:300]
                log(f"{n} services FAILED: {exc}")
            finally:
                consul.close()
            results.append(row)
    mach = machine()
    vers = versions(consul_bin)
    header = (
        f"{now.strftime('%Y-%m-%d %H:%M UTC')} on {mach.nproc} CPUs ({mach.cpu}); "
        f"Python {mach.python}, gateway {vers['gateway']}, Consul {vers['consul']}"
    )
    text = table(results, args.modes)
    print(header)
    print(text)
    doc = {"header": header, "machine": mach.to_json(), "versions": vers, "results": results}
    (args.results_dir / f"scale-{stamp}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.results_dir / f"scale-{stamp}.md").write_text(f"Measured {header}.\n\n{text}\n")
    took = time.monotonic() - started
    log(f"wrote {args.results_dir}/scale-{stamp}.{{json,md}}; total {took:.0f}s")
    failed = any("error" in r or any("error" in r.get(m, {}) for m in args.modes) for r in results)
    return 1 if failed else 0


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} MB"


def table(results: list[dict[str, Any]], modes: list[str]) -> str:
    """Markdown, readable as text too."""
    cols = ["services", "instances", "register", "Consul RSS"]
    for m in modes:
        cols += [f"{m}: first answer", f"{m}: all answer", f"{m}: RSS"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for r in results:
        cells = [
            f"{r['services']:,}",
            f"{r['instances']:,}",
            _s(r.get("register_s")),
            _mb(r.get("consul_rss_mb")),
        ]
        for m in modes:
            mr = r.get(m, {})
            if mr.get("error"):
                cells += ["FAILED", mr["error"][:40], ""]
                continue
            all_s = _s(mr.get("all_answered_s"))
            ok = (mr.get("query_all_rcodes") or {}).get("NOERROR", 0)
            if ok < r["services"]:
                all_s += f" (only {ok:,} of {r['services']:,} NOERROR)"
            cells += [_s(mr.get("first_answer_s")), all_s, _mb(mr.get("rss_mb"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        for m in modes:
            mr = r.get(m, {})
            if mr.get("log_errors") or mr.get("log_warnings"):
                excs = "; ".join(f"{n:,}x {e}" for e, n in (mr.get("log_exceptions") or {}).items())
                lines.append(
                    f"- {r['services']:,} services, {m}: gateway log has "
                    f"{mr.get('log_errors', 0):,} ERROR and {mr.get('log_warnings', 0):,} "
                    f"WARNING lines" + (f" ({excs})" if excs else "")
                )
    lines.append("")
    lines.append(
        "first answer: from starting the gateway process to an A answer for the last "
        "service (- if none within --step-timeout); all answer: watch-all: from process "
        "start until one pass over every service gets NOERROR for all (passes repeat until "
        "--step-timeout); lazy: one pass of one query per service, each starting a watch; "
        "RSS: gateway resident memory after that (sum over its processes)."
    )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument(
        "--sizes",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10, 1000, 10000],
        help="service counts (x 10 instances)",
    )
    p.add_argument(
        "--modes",
        type=lambda v: [m.strip() for m in v.split(",")],
        default=["watch-all", "lazy"],
    )
    p.add_argument("--rate", type=int, default=2000, help="q/s of the query-every-service pass")
    p.add_argument("--step-timeout", type=float, default=120.0)
    p.add_argument("--max-minutes", type=float, default=20.0)
    p.add_argument("--quick", action="store_true", help="sizes 10,1000 only")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 1000]
    try:
        with sigterm_as_interrupt():
            return run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
