"""A real agent with ACLs (default deny) and one with HTTPS and client certificates."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from gateway.options import REPO_ROOT
from harness.consul import ConsulAgent, consul_binary
from harness.gateway import ConsulGateway
from harness.knot import KnotUpstream
from harness.ports import free_port
from harness.process import wait_for
from tests.support.dnsclient import query

pytestmark = pytest.mark.timeout(90)

MANAGEMENT_TOKEN = "8c2e4d3a-0000-4000-8000-000000000001"
POLICY = REPO_ROOT / "deploy" / "consul-acl-policy.hcl"


class _TokenHeader(urllib.request.BaseHandler):
    """Adds the management token to the fixture's own API calls."""

    def __init__(self, token: str) -> None:
        self.token = token

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        request.add_unredirected_header("X-Consul-Token", self.token)
        return request


class AclAgent(ConsulAgent):
    """A dev agent with ``default_policy = "deny"``; its helpers use the management token."""

    def __init__(self) -> None:
        super().__init__(
            hcl=[
                'acl { enabled = true default_policy = "deny" tokens { '
                f'initial_management = "{MANAGEMENT_TOKEN}" agent = "{MANAGEMENT_TOKEN}" }} }}'
            ]
        )
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _TokenHeader(MANAGEMENT_TOKEN)
        )


def a_records(gw: ConsulGateway, name: str) -> tuple[str, set[str]]:
    msg = query(gw.host, gw.port, name, "A")
    return dns.rcode.to_text(msg.rcode()), {r.to_text() for s in msg.answer for r in s}


def test_read_only_token_from_the_policy_file(knot: KnotUpstream) -> None:
    with AclAgent() as agent:
        agent.put("/v1/acl/policy", {"Name": "dns-gateway", "Rules": POLICY.read_text()})
        token: dict[str, Any] = agent.put(
            "/v1/acl/token", {"Description": "gateway", "Policies": [{"Name": "dns-gateway"}]}
        )
        secret = str(token["SecretID"])
        agent.register_service("web", address="127.0.0.10", port=80)
        agent.create_prepared_query("pq", "web")

        with ConsulGateway(
            agent.http_addr,
            knot.address,
            "--log-level",
            "debug",
            env={"CONSUL_HTTP_TOKEN": secret},
        ) as gw:
            for name in ("web.service.consul", "pq.query.consul"):
                wait_for(
                    lambda n=name: a_records(gw, n) == ("NOERROR", {"127.0.0.10"}),  # type: ignore[misc]
                    timeout=10,
                    message=f"{name} with the read-only token",
                )
            assert a_records(gw, "dev1.node.consul") == ("NOERROR", {"127.0.0.1"})
            assert gw.metrics()["consul_http_errors_total"] == 0
            log = gw.log_text()
        assert secret not in log
        assert "X-Consul-Token" not in log

        # Without a token, or with too weak a one, Consul filters the answers silently
        # (as its own DNS would: NXDOMAIN); the gateway says why in its log.
        agent.put(
            "/v1/acl/policy", {"Name": "nodes", "Rules": 'node_prefix "" { policy = "read" }'}
        )
        weak: dict[str, Any] = agent.put("/v1/acl/token", {"Policies": [{"Name": "nodes"}]})
        for env, warning in (
            ({}, "default ACL policy is deny and no token is set"),
            ({"CONSUL_HTTP_TOKEN": str(weak["SecretID"])}, "filtered the answer"),
        ):
            with ConsulGateway(agent.http_addr, knot.address, env=env) as gw:
                wait_for(lambda w=warning: w in gw.log_text(), timeout=10, message=warning)  # type: ignore[misc]
                # The warning comes with the first filtered read; until the rest of the
                # first view is in, Consul names are SERVFAIL (not yet known).
                wait_for(
                    lambda: a_records(gw, "web.service.consul")[0] != "SERVFAIL",
                    timeout=10,
                    message="the first Consul view",
                )
                assert a_records(gw, "web.service.consul")[0] == "NXDOMAIN"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, server and client certificates made by ``consul tls`` (for 127.0.0.1)."""
    folder = tmp_path_factory.mktemp("tls")
    for args in (["ca", "create"], ["cert", "create", "-server"], ["cert", "create", "-client"]):
        subprocess.run([consul_binary(), "tls", *args], cwd=folder, check=True, capture_output=True)
    return folder


def test_https_with_ca_and_client_certificate(knot: KnotUpstream, certs: Path) -> None:
    https_port = free_port()
    ca = certs / "consul-agent-ca.pem"
    tls = (
        f'tls {{ https {{ ca_file = "{ca}" cert_file = "{certs / "dc1-server-consul-0.pem"}" '
        f'key_file = "{certs / "dc1-server-consul-0-key.pem"}" verify_incoming = true }} }}'
    )
    client = [
        "--consul-cert",
        str(certs / "dc1-client-consul-0.pem"),
        "--consul-key",
        str(certs / "dc1-client-consul-0-key.pem"),
    ]
    url = f"https://127.0.0.1:{https_port}"
    with ConsulAgent(hcl=[tls, f"ports {{ https = {https_port} }}"]) as agent:
        agent.register_service("web", address="127.0.0.10", port=80)

        with ConsulGateway(url, knot.address, "--consul-ca", str(ca), *client) as gw:
            wait_for(
                lambda: a_records(gw, "web.service.consul") == ("NOERROR", {"127.0.0.10"}),
                timeout=10,
                message="an answer over verified HTTPS with a client certificate",
            )
        # Verification off still presents the client certificate.
        with ConsulGateway(url, knot.address, "--no-consul-tls-verify", *client) as gw:
            wait_for(
                lambda: a_records(gw, "web.service.consul") == ("NOERROR", {"127.0.0.10"}),
                timeout=10,
                message="an answer with verification off",
            )
        # Without the CA the server's certificate is not trusted: no view, SERVFAIL.
        with ConsulGateway(url, knot.address, *client) as gw:
            wait_for(
                lambda: "CERTIFICATE_VERIFY_FAILED" in gw.log_text(),
                timeout=10,
                message="a certificate error in the log",
            )
            assert a_records(gw, "web.service.consul")[0] == "SERVFAIL"
