"""The project's benchmark: the gateway against dnsmasq, Consul's DNS and CoreDNS.

``python -m bench`` (or ``make bench``) for the throughput/latency table,
``python -m bench.scale`` (or ``python -m bench --scale``) for catalog scale.
"""

import sys
from pathlib import Path

# tests.support (the Consul, Knot, dnsmasq and gateway fixtures) lives at the repo root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
