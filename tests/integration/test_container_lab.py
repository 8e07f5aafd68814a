"""The container lab of ``deploy/lab/``, run for real with podman, brought up both
documented ways (``lab.sh`` and ``compose.yaml`` under podman-compose): three Consul servers,
two app containers each registering the app with its own Consul client agent from a
static service definition with an HTTP health check, a site DNS server, the gateway
image beside a Consul client agent, and a client whose only resolver is the gateway.

The client resolves the app by name (A through libc's ``getent``, SRV through
dnspython reading the client's resolv.conf), a failing health check takes the instance
out of the answers (and its recovery brings it back), names outside Consul resolve
through the gateway's forwarder, and the lab tears down without a trace.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from harness.lab import BUILD_TIMEOUT_S, ComposeLab, ContainerLab, Lab, LabImages, build_images
from harness.process import wait_for

# The first test pays for the image build (cold: debootstrap and the Consul image).
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 900)

APP = "web.service.consul"
APP_SRV = "_web._tcp.service.consul"
APP_PORT = 8080
# deploy/lab/zones/site.lab.zone, served by the site DNS server behind the gateway.
SITE_NAME = "intranet.site.lab"
SITE_ADDRESS = "192.0.2.80"
SITE_MX = "mail.site.lab."
# The Consul servers elect a leader and the agents join and sync: bounded, generous
# for a loaded 2-core machine.
CONVERGE_TIMEOUT_S = 240.0
# A check failing (interval 1 s) and the change reaching the gateway's blocking query.
HEALTH_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 1.0
HEALTH_FILE = "/srv/app/health"
CLIENT_PYTHON = "/opt/consul-dns-gateway/bin/python"
GATEWAY_UID = "10053"

# Runs in the client: dnspython's stub resolver configured from the client's
# /etc/resolv.conf (the gateway), one question, the reply as JSON.
LOOKUP = """
import json, sys
import dns.message, dns.query, dns.rcode, dns.resolver
server = dns.resolver.Resolver().nameservers[0]
query = dns.message.make_query(sys.argv[1], sys.argv[2])
reply = dns.query.udp(query, server, timeout=5)
print(json.dumps({
    "server": server,
    "rcode": dns.rcode.to_text(reply.rcode()),
    "answer": [r.to_text() for rrset in reply.answer for r in rrset],
    "additional": {rrset.name.to_text(): sorted(r.to_text() for r in rrset)
                   for rrset in reply.additional if rrset.rdtype == 1},
}))
"""


@pytest.fixture(scope="module")
def images() -> LabImages:
    return build_images()


@pytest.fixture(scope="module", params=["lab.sh", "compose.yaml"])
def lab(request: pytest.FixtureRequest, images: LabImages) -> Iterator[Lab]:
    """The lab brought up each documented way: the podman script, then podman-compose."""
    kind = ContainerLab if request.param == "lab.sh" else ComposeLab
    with kind(images) as running:
        yield running


def addresses(lab: Lab, name: str) -> frozenset[str]:
    """The IPv4 addresses libc's resolver in the client gets for ``name``."""
    proc = lab.exec("client", "getent", "ahostsv4", name)
    if proc.returncode != 0:
        return frozenset()
    return frozenset(line.split()[0] for line in proc.stdout.splitlines() if line.strip())


def lookup(lab: Lab, name: str, rdtype: str) -> dict[str, object]:
    proc = lab.exec("client", CLIENT_PYTHON, "-c", LOOKUP, name, rdtype)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def srv_targets(lab: Lab) -> set[tuple[int, str]]:
    reply = lookup(lab, APP_SRV, "SRV")
    assert reply["rcode"] == "NOERROR", reply
    answer = reply["answer"]
    assert isinstance(answer, list)
    return {(int(r.split()[2]), r.split()[3]) for r in answer}


def app_addresses(lab: Lab, *hosts: str) -> frozenset[str]:
    return frozenset(lab.address(h) for h in hosts)


def wait(lab: Lab, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Bounded polling for a state of the lab; on timeout the gateway's log tells why."""
    try:
        wait_for(predicate, timeout=timeout, interval=POLL_INTERVAL_S, message=what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\ngateway log:\n{lab.logs('gateway')}") from None


def wait_addresses(lab: Lab, expected: frozenset[str], what: str) -> None:
    wait(
        lab,
        lambda: addresses(lab, APP) == expected,
        HEALTH_TIMEOUT_S,
        f"{APP} to resolve to {sorted(expected)} ({what})",
    )


def check_status(lab: Lab, app: str) -> str:
    """The status of the app's check as its own Consul agent reports it."""
    proc = lab.exec(
        app,
        "python3",
        "-c",
        "import json, urllib.request;"
        "print(json.load(urllib.request.urlopen("
        "'http://127.0.0.1:8500/v1/agent/checks', timeout=5))['web-http']['Status'])",
    )
    return proc.stdout.strip()


def test_client_resolves_the_app_by_name(lab: Lab) -> None:
    both = app_addresses(lab, "app-1", "app-2")
    wait(lab, lambda: addresses(lab, APP) == both, CONVERGE_TIMEOUT_S, f"{APP}: both apps")
    resolv = lab.exec("client", "cat", "/etc/resolv.conf").stdout
    nameservers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")]
    assert nameservers == [lab.address("gateway")]

    reply = lookup(lab, APP_SRV, "SRV")
    assert reply["server"] == lab.address("gateway")
    assert reply["rcode"] == "NOERROR"
    assert srv_targets(lab) == {
        (APP_PORT, "app-1.node.dc1.consul."),
        (APP_PORT, "app-2.node.dc1.consul."),
    }
    # The glue: each target's address in the additional section.
    assert reply["additional"] == {
        "app-1.node.dc1.consul.": [lab.address("app-1")],
        "app-2.node.dc1.consul.": [lab.address("app-2")],
    }


def test_gateway_runs_unprivileged(lab: Lab) -> None:
    assert lab.exec("gateway", "id", "-u").stdout.strip() == GATEWAY_UID
    # The serving process itself (PID 1 of the gateway container), not just exec's user.
    status = lab.exec("gateway", "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [GATEWAY_UID] * 4


def test_failing_health_check_removes_the_instance(lab: Lab) -> None:
    both = app_addresses(lab, "app-1", "app-2")
    wait_addresses(lab, both, "both healthy")
    assert lab.exec("app-1", "rm", HEALTH_FILE).returncode == 0
    try:
        wait(
            lab,
            lambda: check_status(lab, "app-1") == "critical",
            HEALTH_TIMEOUT_S,
            "app-1's check to turn critical",
        )
        wait_addresses(lab, app_addresses(lab, "app-2"), "app-1 critical")
        assert srv_targets(lab) == {(APP_PORT, "app-2.node.dc1.consul.")}
    finally:
        lab.exec("app-1", "touch", HEALTH_FILE)
    wait(
        lab,
        lambda: check_status(lab, "app-1") == "passing",
        HEALTH_TIMEOUT_S,
        "app-1's check to pass again",
    )
    wait_addresses(lab, both, "app-1 healthy again")
    assert len(srv_targets(lab)) == 2


def test_other_names_resolve_through_the_gateway(lab: Lab) -> None:
    assert addresses(lab, SITE_NAME) == {SITE_ADDRESS}
    reply = lookup(lab, "site.lab", "MX")
    assert reply["server"] == lab.address("gateway")
    assert reply["rcode"] == "NOERROR"
    assert reply["answer"] == [f"10 {SITE_MX}"]
    # A name the site's zone does not have: its NXDOMAIN comes through the gateway.
    missing = lookup(lab, "missing.site.lab", "A")
    assert (missing["rcode"], missing["answer"]) == ("NXDOMAIN", [])
    assert addresses(lab, "missing.site.lab") == frozenset()


def test_lab_tears_down(lab: Lab) -> None:
    assert lab.containers(), "the lab should be running before it is torn down"
    proc = lab.down()
    assert proc is not None
    assert proc.returncode == 0, proc.stderr
    assert lab.containers() == []
    assert lab.networks() == []
    assert not lab.netns_exists()
