"""Reporting: the printed table, the Markdown table for the README, JSON, and the plot.

Also the three lines every report starts with (when and on what; the dnsperf
parameters; the data) and where results go (bench/results/ unless told otherwise).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import workloads
from .catalog import Catalog
from .environment import Machine, log
from .measuring import Cell, GatewayEnd, Passes, Profile
from .servers import Peers
from .workloads import WORKLOADS

GATEWAY = "gateway"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class RunMeta:
    """Everything about a run besides the figures: the JSON's ``meta``.

    Fields left at None (a server not started, no profile asked for) are left out of it.
    """

    stamp: str
    machine: Machine
    cpu_busy_before: float | None
    argv: list[str]
    peers: Peers | None = None
    versions: dict[str, str] | None = None
    sanity: dict[str, str] | None = None
    profile: Profile | None = None
    gateway_end: GatewayEnd | None = None
    log_tails: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "stamp": self.stamp,
            "machine": {**self.machine.to_json(), "cpu_busy_before": self.cpu_busy_before},
            "argv": self.argv,
        }
        if self.peers is not None:
            p = self.peers
            started = {
                "gateway_command": p.gateway_command,
                "gateway_metrics_addr": p.gateway_metrics_addr,
                "dnsmasq_command": p.dnsmasq_command,
                "coredns_binary": None if p.coredns_binary is None else str(p.coredns_binary),
                "corefile": p.corefile,
            }
            doc.update({k: v for k, v in started.items() if v is not None})
        if self.versions is not None:
            doc["versions"] = self.versions
        if self.sanity:
            doc["sanity"] = self.sanity
        if self.profile is not None:
            doc["profile"] = self.profile.to_json()
        if self.gateway_end is not None:
            end = self.gateway_end
            if end.metrics is not None:
                doc["gateway_metrics"] = end.metrics
            doc["gateway_alive_at_end"] = end.alive
            doc["gateway_log"] = asdict(end.log)
        if self.log_tails:
            doc["log_tails"] = self.log_tails
        return doc


@dataclass
class Report:
    header: str
    params: str
    data: str
    cells: list[Cell]
    unavailable: dict[str, str]
    notes: list[str]
    meta: RunMeta

    def cell(self, server: str, workload: str) -> Cell | None:
        for c in self.cells:
            if c.server == server and c.workload == workload:
                return c
        return None

    def workloads(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.cells:
            seen[c.workload] = None
        return [w for w in WORKLOADS if w in seen]

    def servers(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.cells:
            seen[c.server] = None
        return list(seen)


def header_line(now: datetime, machine: Machine, versions: dict[str, str]) -> str:
    """When, on what, with which versions of everything."""
    vers = versions
    return (
        f"{now.strftime('%Y-%m-%d %H:%M UTC')} on {machine.nproc} CPUs ({machine.cpu}), "
        f"Linux {machine.kernel}; Python {machine.python}, gateway {vers.get('gateway', '?')}, "
        f"dnsperf {vers.get('dnsperf', '?')}, dnsmasq {vers.get('dnsmasq', '?')}, "
        f"Knot {vers.get('knot', '?')}, Consul {vers.get('consul', '?')}"
        + (f", CoreDNS {vers['coredns']}" if "coredns" in vers else "")
    )


def params_line(passes: Passes, gateway_args: str) -> str:
    """The dnsperf parameters, as the report states them."""
    qps_part = f"-Q {passes.max_qps:g}" if passes.max_qps else "no -Q"
    lat_rate = (
        f"{passes.latency_qps:g} q/s" if passes.latency_qps else "50% of each server's own peak"
    )
    return (
        f"dnsperf -c {passes.clients} -l {passes.duration:g} -t {passes.timeout:g} ({qps_part})"
        f"{' -T ' + str(passes.threads) if passes.threads else ''}, UDP (w5 TCP), no EDNS; "
        f"p50/p99 from a {passes.latency_duration:g}-s dnsperf -v pass at {lat_rate}; "
        f"w1/w2/w4/w5 after one warm-up pass; RSS = peak (VmHWM) during the workload, gateway "
        f"summed over its processes; gateway args: {gateway_args or '(defaults)'}"
    )


def data_line(catalog: Catalog, instances: int, ipv6_services: int) -> str:
    """The data every server answers from."""
    return (
        f"catalog {len(catalog.services)} services x {instances} instances "
        f"({ipv6_services} IPv6-only) on {len(catalog.nodes)} nodes; Knot zone "
        f"{workloads.CACHED_NAMES:,} names + *.miss wildcard; dnsmasq --cache-size=10000 with "
        f"server=/consul/ -> Consul DNS; Consul has recursors = Knot"
    )


def _num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _qps(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


COLUMNS = (
    "workload",
    "server",
    "q/s",
    "mean ms",
    "p50 ms",
    "p99 ms",
    "lost",
    "RSS MB",
    "gw/peer q/s",
    "gw/peer p99",
)


def rows(report: Report) -> list[list[str]]:
    out: list[list[str]] = []
    for w in report.workloads():
        gw = report.cell(GATEWAY, w)
        for s in report.servers():
            c = report.cell(s, w)
            if c is None:
                continue
            if c.error:
                out.append([w, c.label, "FAILED", "", "", "", "", "", "", c.error[:60]])
                continue
            lost = f"{c.lost:,}"
            if c.sent and c.lost:
                lost += f" ({100 * c.lost / c.sent:.1f}%)"
            if c.lost_half:
                lost += f" +{c.lost_half:,}@50%"
            is_gw = s == GATEWAY or gw is None or gw.error
            out.append(
                [
                    w,
                    c.label,
                    _qps(c.qps),
                    _num(c.mean_ms),
                    _num(c.p50_ms, 3),
                    _num(c.p99_ms, 3),
                    lost,
                    "-" if c.peak_rss_kb is None else f"{c.peak_rss_kb / 1024:,.1f}",
                    "" if is_gw else _ratio(gw.qps if gw else None, c.qps),
                    "" if is_gw else _ratio(gw.p99_ms if gw else None, c.p99_ms),
                ]
            )
    return out


def text_table(report: Report) -> str:
    body = rows(report)
    widths = [max(len(r[i]) for r in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5, 6, 7, 8, 9}

    def fmt(r: list[str]) -> str:
        return "  ".join(
            r[i].rjust(widths[i]) if i in numeric else r[i].ljust(widths[i]) for i in range(len(r))
        ).rstrip()

    lines = [report.header, report.params, report.data, "", fmt(list(COLUMNS))]
    lines.append("  ".join("-" * w for w in widths))
    last = None
    for r in body:
        if last is not None and r[0] != last:
            lines.append("")
        last = r[0]
        lines.append(fmt(r))
    lines.append("")
    lines += [f"  {k}: {v}" for k, v in ((w, WORKLOADS[w].title) for w in report.workloads())]
    for name, why in report.unavailable.items():
        lines.append(f"  {name}: not available: {why}")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    body = rows(report)
    out = [
        f"Measured {report.header}.",
        "",
        report.params + ".",
        report.data + ".",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    out.append("")
    out += [f"- {w}: {WORKLOADS[w].title}" for w in report.workloads()]
    out += [f"- {k}: not available: {v}" for k, v in report.unavailable.items()]
    out += [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def write_json(report: Report, path: Path) -> None:
    doc = {
        "header": report.header,
        "params": report.params,
        "data": report.data,
        "unavailable": report.unavailable,
        "notes": report.notes,
        "meta": report.meta.to_json(),
        "results": [asdict(c) for c in report.cells],
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def plot(report: Report, path: Path) -> None:
    """Grouped bars: queries/s and p99 per workload, one bar per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = report.workloads()
    servers = report.servers()
    fig, axes = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    width = 0.8 / max(1, len(servers))
    for si, server in enumerate(servers):
        xs = [wi + (si - (len(servers) - 1) / 2) * width for wi in range(len(workloads))]
        qps: list[float] = []
        p99: list[float] = []
        for w in workloads:
            c = report.cell(server, w)
            qps.append((c.qps or 0.0) if c and not c.error else 0.0)
            p99.append((c.p99_ms or 0.0) if c and not c.error else 0.0)
        axes[0].bar(xs, qps, width, label=server)
        axes[1].bar(xs, p99, width, label=server)
    for ax, title in zip(
        axes, ("queries/s at peak (higher is better)", "p99 latency ms at 50% load"), strict=True
    ):
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels([f"{w}\n{WORKLOADS[w].short}" for w in workloads], fontsize=9)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.suptitle(report.header, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: Report, results_dir: Path, stamp: str, plot_path: Path | None) -> None:
    """Print the table; write JSON and Markdown to ``results_dir`` (and the plot if asked)."""
    print(text_table(report), flush=True)
    json_path = results_dir / f"bench-{stamp}.json"
    md_path = results_dir / f"bench-{stamp}.md"
    write_json(report, json_path)
    md_path.write_text(markdown(report))
    log(f"wrote {json_path} and {md_path}")
    if plot_path is not None:
        plot(report, plot_path)
        log(f"wrote {plot_path}")
