"""The gateway as a real subprocess (``python -m gateway``), alone or in front of Consul.

Running it out of process exercises the real CLI, signal handling and socket set-up, and
lets a test or the benchmark kill upstreams or the gateway independently. Also owns
reading its metrics endpoint.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from harness.ports import LOOPBACK, free_port_run, host_port
from harness.process import DnsServerProcess

REPO_ROOT = Path(__file__).resolve().parents[1]

# The gateway's variables for reaching Consul, blanked so that only the flags given here
# point it at a Consul (and a developer's token never leaks into a test).
_BLANK_CONSUL_ENV = {
    var: ""
    for var in (
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_HTTP_SSL_VERIFY",
    )
}
METRIC_PREFIX = "dns_gateway_"


def http_get(addr: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of ``GET http://addr/path``; error statuses are returned, not raised."""
    # No proxies: a proxy from the environment must never see loopback traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{addr}{path}", timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def scrape_families(addr: str, timeout: float = 5.0) -> list[Metric]:
    """The Prometheus text at ``http://addr/metrics``, parsed by ``prometheus_client``."""
    status, text = http_get(addr, "/metrics", timeout)
    if status != 200:
        raise RuntimeError(f"GET http://{addr}/metrics: HTTP {status}: {text[:200]}")
    return list(text_string_to_metric_families(text))


def sample_key(name: str, labels: Mapping[str, str]) -> str:
    """``name{a="x",b="y"}`` with labels sorted (no labels: the bare name)."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def scrape_metrics(addr: str, timeout: float = 5.0) -> dict[str, float]:
    """Every sample at ``http://addr/metrics`` as ``{full name{labels}: value}``."""
    return {
        sample_key(sample.name, sample.labels): sample.value
        for family in scrape_families(addr, timeout)
        for sample in family.samples
    }


class GatewayProcess(DnsServerProcess):
    """``python -m gateway --listen HOST:PORT *args`` with output in a log file.

    ``start()`` returns once any DNS response (even SERVFAIL or REFUSED) to the probe
    query arrives over UDP: that proves the listener is up without assuming anything about
    what the gateway serves. Pass ``probe_name`` (e.g. ``"consul."``) to probe a name the
    gateway answers itself when its upstream is deliberately down. ``launcher`` replaces
    ``[python, -m, gateway]``, e.g. to run it under a profiler.
    """

    label = "gateway"

    def __init__(
        self,
        *args: str,
        host: str = LOOPBACK,
        port: int | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        probe_name: str = ".",
        probe_type: str = "SOA",
        launcher: Sequence[str] | None = None,
    ) -> None:
        child_env = dict(os.environ)
        # Unbuffered, so the log tail in a failure message is up to date.
        child_env["PYTHONUNBUFFERED"] = "1"
        if env is not None:
            child_env.update(env)
        super().__init__(host=host, port=port, log_path=log_path, env=child_env, cwd=REPO_ROOT)
        self.args = tuple(args)
        self.probe_name = probe_name
        self.probe_type = probe_type
        self.launcher = (
            tuple(launcher) if launcher is not None else (sys.executable, "-m", "gateway")
        )

    def command(self) -> list[str]:
        return [*self.launcher, "--listen", host_port(self.host, self.port), *self.args]


class ConsulGateway(GatewayProcess):
    """``python -m gateway --consul URL --upstream UPSTREAM --metrics-listen ... *args``.

    Readiness is probed by default with ``consul. SOA``, which the gateway answers itself
    whatever state Consul is in. ``env`` sets variables such as CONSUL_HTTP_TOKEN; the
    environment's own CONSUL_HTTP_* variables are blanked.
    """

    def __init__(
        self,
        consul_addr: str,
        upstream: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        probe_name: str = "consul.",
    ) -> None:
        # Worker i serves its metrics on this port + i: all of them free.
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        self.metrics_port = free_port_run(workers)
        super().__init__(
            "--consul",
            consul_addr,
            "--upstream",
            upstream,
            "--metrics-listen",
            f"{LOOPBACK}:{self.metrics_port}",
            *args,
            env={**_BLANK_CONSUL_ENV, **(env or {})},
            log_path=log_path,
            probe_name=probe_name,
        )

    @property
    def metrics_addr(self) -> str:
        """``host:port`` of the metrics endpoint (of the first worker with ``--workers``)."""
        return f"{LOOPBACK}:{self.metrics_port}"

    def metrics(self, worker: int = 0) -> dict[str, float]:
        """The metrics of ``worker`` (``--workers``: worker i serves metrics port + i) as
        {sample name without the dns_gateway_ prefix, with its labels: value}, e.g.
        ``access_refused_total`` or ``queries_total{transport="udp"}``."""
        scraped = scrape_metrics(f"{LOOPBACK}:{self.metrics_port + worker}")
        return {
            name.removeprefix(METRIC_PREFIX): value
            for name, value in scraped.items()
            if name.startswith(METRIC_PREFIX)
        }
