"""Results: the printed table, the Markdown table for the README, JSON, and the plot."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .workloads import WORKLOADS

GATEWAY = "gateway"

# Labels say what each peer really does for each workload (one dnsmasq instance serves
# both the "dnsmasq with cache" peer and the dnsmasq -> Consul DNS chain).
LABELS: dict[str, dict[str, str]] = {
    "gateway": {"*": "gateway"},
    "dnsmasq": {
        "w1": "dnsmasq -> Consul DNS (chain)",
        "w5": "dnsmasq -> Consul DNS (chain)",
        "w2": "dnsmasq cache -> Knot",
        "w3": "dnsmasq cache -> Knot",
        "*": "dnsmasq (cache; .consul -> Consul)",
    },
    "consul": {
        "w1": "Consul DNS",
        "w5": "Consul DNS",
        "*": "Consul DNS (recursor -> Knot)",
    },
    "coredns": {"*": "CoreDNS forward+cache"},
}


def label(server: str, workload: str) -> str:
    table = LABELS.get(server, {})
    return table.get(workload, table.get("*", server))


@dataclass
class Cell:
    server: str
    workload: str
    label: str
    qps: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    sent: int = 0
    lost: int = 0
    lost_half: int | None = None
    latency_qps: float | None = None
    peak_rss_kb: int | None = None
    rcodes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    header: str
    params: str
    data: str
    cells: list[Cell]
    unavailable: dict[str, str]
    notes: list[str]
    meta: dict[str, Any]

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
        "meta": report.meta,
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
