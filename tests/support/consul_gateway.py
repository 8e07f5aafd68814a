"""The gateway as a subprocess in front of a real Consul, with its metrics endpoint.

Shared by the ``test_consul_*`` integration tests and ``bench/freshness.py``. The
environment's ``CONSUL_HTTP_*`` variables are blanked so that only the flags given
here point the gateway at a Consul (and a developer's token never leaks into a test).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from tests.support.gateway_proc import GatewayProcess
from tests.support.ports import LOOPBACK, free_port

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


class ConsulGateway(GatewayProcess):
    """``python -m gateway --consul URL --upstream UPSTREAM --metrics-listen ... *args``.

    Readiness is probed with ``consul. SOA``, which the gateway answers itself
    whatever state Consul is in. ``env`` sets variables such as CONSUL_HTTP_TOKEN.
    """

    def __init__(
        self, consul_addr: str, upstream: str, *args: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.metrics_port = free_port()
        super().__init__(
            "--consul",
            consul_addr,
            "--upstream",
            upstream,
            "--metrics-listen",
            f"{LOOPBACK}:{self.metrics_port}",
            *args,
            env={**_BLANK_CONSUL_ENV, **(env or {})},
            probe_name="consul.",
        )

    def metrics(self) -> dict[str, float]:
        """The metrics endpoint as {name without the dns_gateway_ prefix: value}."""
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("dns_gateway_"):
                values[name.removeprefix("dns_gateway_")] = float(value)
        return values
