"""The project's benchmark: the gateway against dnsmasq, Consul's DNS and CoreDNS.

``python -m bench`` (or ``make bench``) for the throughput/latency table,
``python -m bench.scale`` (or ``python -m bench --scale``) for catalog scale,
``python -m bench.freshness`` and ``python -m bench.workers`` for the Consul side.

By job: environment (machine, versions), servers (the peers and the data behind them),
dnsperf + measuring (the passes), reporting (tables, JSON, Markdown, plot), cli (flags
and the run); catalog and workloads generate the data. Processes come from ``harness``.
"""

import sys
from pathlib import Path

# harness (the process toolkit) lives at the repo root beside bench/ and is not installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
