"""Real Consul agents (one dev agent, or a three-server cluster) and their HTTP API.

The gateway is tested and benchmarked against a real Consul (built by
``tools/build-consul.sh``), never against an imitation of its HTTP API: Consul's own DNS
on the agent's DNS port is the reference the gateway's answers are compared with.

An agent is a :class:`~harness.process.ServerProcess` like every other server here:
loopback only, ports picked free at start, killed with its owner. It is ready once a
leader is elected and its own node is in the catalog.

The HTTP helpers use plain ``urllib`` (no ``requests``) so that mypy needs no stub package.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from harness.ports import LOOPBACK, free_ports
from harness.process import Closing, Probe, ServerProcess, ServerStartError, wait_for

__all__ = [
    "GATEWAY_GET_PATHS",
    "TELEMETRY_HCL",
    "ConsulAPIError",
    "ConsulAgent",
    "ConsulClient",
    "ConsulCluster",
    "ConsulStartError",
    "consul_binary",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-consul.sh"

# Start-up can take a while on a loaded two-core CI machine (leader election, first
# anti-entropy sync); 60 s is far above the usual 1-3 s but keeps flakes away.
DEFAULT_START_TIMEOUT = 60.0
# Per-request timeout: everything is on loopback, so anything slower is a hang (for
# example a read forwarded to a leader that is gone), which polling loops must survive.
HTTP_TIMEOUT = 5.0

# The agent's telemetry in Prometheus form (cumulative request counts per endpoint).
TELEMETRY_HCL = 'telemetry { prometheus_retention_time = "600s" disable_hostname = true }'
# The gateway's GETs, as Consul's telemetry names them (the path with / as _).
GATEWAY_GET_PATHS = ("v1_health_service_", "v1_catalog_", "v1_internal_ui_nodes", "v1_query_")

# Operations per PUT /v1/txn: Consul 1.16 takes at most 128.
TXN_BATCH = 64

# Values accepted by set_check, mapped to the endpoint verb of /v1/agent/check/<verb>/<id>.
_CHECK_VERBS = {
    "pass": "pass",
    "passing": "pass",
    "warn": "warn",
    "warning": "warn",
    "fail": "fail",
    "critical": "fail",
}


class ConsulStartError(ServerStartError):
    """The agent did not come up (or died) in time; the message holds its log tail."""


class ConsulAPIError(RuntimeError):
    """Consul's HTTP API answered with an error status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body.strip()[:500]}")
        self.status = status
        self.body = body


@functools.cache
def consul_binary() -> str:
    """Path of the Consul binary: ``$CONSUL_BIN`` or the one ``tools/build-consul.sh`` gives.

    Never skips: a missing Consul is a broken test set-up, not an optional feature. Cached
    because the script runs ``consul version`` each time even when the binary is built.
    """
    env = os.environ.get("CONSUL_BIN", "").strip()
    if env:
        return env
    proc = subprocess.run(
        [str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{BUILD_SCRIPT} failed (exit {proc.returncode}); set CONSUL_BIN to a Consul "
            f"v1.16.x binary or fix the build.\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    # The script prints the path last; build logs go to stderr.
    return lines[-1].strip()


# --- HTTP API helpers -------------------------------------------------------------------


class ConsulClient:
    """Thin helpers over Consul's HTTP API for setting up a catalog in tests and benchmarks.

    Kept to the handful of endpoints the tests need, with Consul's own JSON field names, so a
    test reads like the API documentation.
    """

    datacenter: str = "dc1"

    def __init__(self, http_addr: str) -> None:
        self.http_addr = http_addr
        # One opener for the object's life (the urllib counterpart of a requests.Session). No
        # proxies: a proxy from the environment must never see loopback test traffic.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # Generic access, for endpoints without a dedicated helper.
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> Any:
        """Call ``path`` (e.g. ``/v1/catalog/nodes``) and return the decoded JSON (or None)."""
        url = self.http_addr + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ConsulAPIError(
                method, url, exc.code, exc.read().decode(errors="replace")
            ) from None
        if not raw:
            return None
        text = raw.decode()
        try:
            return json.loads(text)
        except ValueError:
            # A few endpoints (agent/check/*) answer plain text.
            return text

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def put(self, path: str, body: Any = None, **params: str) -> Any:
        return self.request("PUT", path, body, params=params or None)

    # Status and reads.
    def leader(self) -> str:
        """The raft address (``127.0.0.1:<server port>``) of the leader, or "" if none."""
        return str(self.get("/v1/status/leader") or "")

    def catalog_nodes(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/catalog/nodes"))

    def health_service(self, name: str, *, passing: bool = False) -> list[dict[str, Any]]:
        params = {"passing": "true"} if passing else {}
        return list(self.get(f"/v1/health/service/{_q(name)}", **params))

    # Agent-local services and checks (they live on this agent's node).
    def register_service(
        self,
        name: str,
        *,
        service_id: str | None = None,
        address: str | None = None,
        port: int = 0,
        tags: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        weights: Mapping[str, int] | None = None,
        ttl_check: bool = True,
        check_ttl: str = "1h",
        check_status: str = "passing",
    ) -> str:
        """Register a service on this agent; returns its ID.

        With ``ttl_check`` it gets a TTL check with ID ``service:<id>`` (flip it with
        :meth:`set_check`); the TTL is long so it never expires on its own in a test.
        ``weights`` is ``{"Passing": n, "Warning": m}`` (Consul's SRV weights).
        """
        sid = service_id or name
        body: dict[str, Any] = {"Name": name, "ID": sid, "Port": port, "Tags": list(tags)}
        if address is not None:
            body["Address"] = address
        if meta:
            body["Meta"] = dict(meta)
        if weights:
            body["Weights"] = dict(weights)
        if ttl_check:
            body["Check"] = {
                "CheckID": f"service:{sid}",
                "Name": f"ttl {sid}",
                "TTL": check_ttl,
                "Status": check_status,
            }
        self.put("/v1/agent/service/register", body)
        return sid

    def deregister_service(self, service_id: str) -> None:
        self.put(f"/v1/agent/service/deregister/{_q(service_id)}")

    def set_check(self, check_id: str, status: str, note: str = "") -> None:
        """Set a TTL check: ``status`` is pass/warn/fail (or passing/warning/critical)."""
        try:
            verb = _CHECK_VERBS[status]
        except KeyError:
            raise ValueError(f"unknown check status {status!r}") from None
        params = {"note": note} if note else {}
        self.put(f"/v1/agent/check/{verb}/{_q(check_id)}", **params)

    def maintenance(self, service_id: str, enable: bool, reason: str = "") -> None:
        """Put a service in (or out of) maintenance mode: a critical check named
        ``_service_maintenance:<id>`` that hides it from DNS and passing health queries."""
        params = {"enable": "true" if enable else "false"}
        if reason:
            params["reason"] = reason
        self.put(f"/v1/agent/service/maintenance/{_q(service_id)}", **params)

    # Catalog entries for external nodes (not this agent's; no anti-entropy touches them).
    def catalog_register(
        self,
        node: str,
        address: str,
        *,
        node_meta: Mapping[str, str] | None = None,
        service: Mapping[str, Any] | None = None,
        checks: Sequence[Mapping[str, Any]] | None = None,
        tagged_addresses: Mapping[str, str] | None = None,
    ) -> None:
        """Register an external node (IPv4 or IPv6 ``address``), optionally with a service.

        ``service`` and ``checks`` use the API's field names (``{"Service": "db", "ID": ...,
        "Port": 5432, "Tags": [...], "Address": "::1"}``; checks ``{"CheckID": ..,
        "Status": "passing", "ServiceID": ..}``).
        """
        body: dict[str, Any] = {"Datacenter": self.datacenter, "Node": node, "Address": address}
        if node_meta:
            body["NodeMeta"] = dict(node_meta)
        if tagged_addresses:
            body["TaggedAddresses"] = dict(tagged_addresses)
        if service is not None:
            body["Service"] = dict(service)
        if checks:
            body["Checks"] = [dict(c) for c in checks]
        self.put("/v1/catalog/register", body)

    def answered_gets(self, paths: Sequence[str]) -> int:
        """GETs Consul has answered so far whose path starts with one of ``paths``, in
        its telemetry's spelling (``v1_health_service_``). Needs :data:`TELEMETRY_HCL`;
        requests still blocking are not counted yet."""
        text = self.request("GET", "/v1/agent/metrics", params={"format": "prometheus"})
        total = 0
        for line in str(text).splitlines():
            ours = any(f'path="{p}' in line for p in paths)
            if line.startswith("consul_api_http_count{") and 'method="GET"' in line and ours:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def catalog_register_services(
        self, node: str, services: Sequence[Mapping[str, Any]], *, batch: int = TXN_BATCH
    ) -> None:
        """Put ``services`` (API field names) on the existing ``node``, ``batch`` per
        transaction (``PUT /v1/txn``): 1,000 services in 16 requests."""
        for first in range(0, len(services), batch):
            ops = [
                {"Service": {"Verb": "set", "Node": node, "Service": dict(service)}}
                for service in services[first : first + batch]
            ]
            self.put("/v1/txn", ops)

    def catalog_deregister(self, node: str, *, service_id: str | None = None) -> None:
        """Remove an external node (or only one of its services)."""
        body: dict[str, Any] = {"Datacenter": self.datacenter, "Node": node}
        if service_id is not None:
            body["ServiceID"] = service_id
        self.put("/v1/catalog/deregister", body)

    # Prepared queries (answered by Consul's DNS as <name>.query.consul).
    def create_prepared_query(
        self,
        name: str,
        service: str,
        *,
        only_passing: bool = False,
        tags: Sequence[str] = (),
        ttl: str | None = None,
    ) -> str:
        """Create a prepared query and return its ID; ``ttl`` like "10s" sets its DNS TTL."""
        body: dict[str, Any] = {
            "Name": name,
            "Service": {"Service": service, "OnlyPassing": only_passing, "Tags": list(tags)},
        }
        if ttl is not None:
            body["DNS"] = {"TTL": ttl}
        result = self.request("POST", "/v1/query", body)
        return str(result["ID"])

    def delete_prepared_query(self, query_id: str) -> None:
        self.request("DELETE", f"/v1/query/{_q(query_id)}")

    # Cluster peering (both agents started with ``peering=True``).
    def peer_with(self, other: ConsulClient, name: str, *, as_name: str) -> None:
        """Peers this cluster with ``other``: ``other`` is peer ``name`` here, and
        this cluster is peer ``as_name`` there. Returns once the token is accepted;
        use :meth:`export_services` on ``other`` and wait for the import."""
        token = self.request("POST", "/v1/peering/token", {"PeerName": name})["PeeringToken"]
        other.request("POST", "/v1/peering/establish", {"PeerName": as_name, "PeeringToken": token})

    def export_services(self, services: Sequence[str], peer: str) -> None:
        """Exports ``services`` of this cluster to ``peer`` (config entry ``exported-services``)."""
        consumers = [{"Peer": peer}]
        body = {
            "Kind": "exported-services",
            "Name": "default",
            "Services": [{"Name": name, "Consumers": consumers} for name in services],
        }
        self.put("/v1/config", body)

    def config_entry(self, entry: Mapping[str, Any]) -> None:
        """Writes a config entry (``Kind``, ``Name`` and its fields)."""
        self.put("/v1/config", dict(entry))

    # Kept as a method too so tests holding only an agent need no extra import.
    wait_for = staticmethod(wait_for)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class ConsulAgent(ConsulClient, ServerProcess):
    """One Consul agent on loopback, by default a ``-dev`` server (in-memory, own leader).

    ``hcl`` strings are passed as ``-hcl`` flags (e.g. ``"dns_config { only_passing = true }"``,
    ``'recursors = ["127.0.0.1:5300"]'``). ``extra_args`` and ``dev=False`` are what
    :class:`ConsulCluster` uses to run real servers. ``port`` is the agent's DNS port.
    """

    start_timeout = DEFAULT_START_TIMEOUT
    # A clean leave of a real server takes a few seconds.
    stop_timeout = 10.0
    start_error = ConsulStartError

    def __init__(
        self,
        node_name: str = "dev1",
        *,
        hcl: Sequence[str] = (),
        binary: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        log_level: str = "warn",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        dev: bool = True,
        extra_args: Sequence[str] = (),
        peering: bool = False,
    ) -> None:
        """``peering`` opens the gRPC TLS port cluster peering needs (on a free port)."""
        self.node_name = node_name
        self.peering = peering
        self.label = f"consul agent {node_name}"
        self.datacenter = "dc1"
        self.hcl = list(hcl)
        self.binary = binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.dev = dev
        self.extra_args = list(extra_args)
        self._pick_ports()
        own = Path(tempfile.mkdtemp(prefix=f"consul-{node_name}-")) if workdir is None else None
        where = Path(workdir) if workdir is not None else own
        assert where is not None
        ServerProcess.__init__(
            self, port=self.dns_port, workdir=where, log_path=where / "consul.log"
        )
        # Only a directory made here is deleted on close(); a given one (pytest's tmp_path)
        # is the caller's and keeps the log for inspection.
        self._life.owned_dir = own
        self.data_dir = self.workdir / "data"
        ConsulClient.__init__(self, self.http_addr)

    def _pick_ports(self) -> None:
        (
            self.http_port,
            self.dns_port,
            self.serf_lan_port,
            self.serf_wan_port,
            self.server_port,
            self.grpc_tls_port,
        ) = free_ports(6)
        self.port = self.dns_port
        self.http_addr = f"http://{LOOPBACK}:{self.http_port}"

    @property
    def server_addr(self) -> str:
        """This server's raft address, as /v1/status/leader reports it."""
        return f"{LOOPBACK}:{self.server_port}"

    @property
    def dns_addr(self) -> tuple[str, int]:
        return (LOOPBACK, self.dns_port)

    def args(self) -> list[str]:
        """The full command line."""
        args = [self.binary or consul_binary(), "agent"]
        if self.dev:
            args.append("-dev")
        args += [
            f"-node={self.node_name}",
            f"-datacenter={self.datacenter}",
            f"-bind={LOOPBACK}",
            f"-client={LOOPBACK}",
            f"-http-port={self.http_port}",
            f"-dns-port={self.dns_port}",
            f"-serf-lan-port={self.serf_lan_port}",
            f"-serf-wan-port={self.serf_wan_port}",
            f"-server-port={self.server_port}",
            # gRPC (xDS for Connect) is not needed and would take fixed ports 8502/8503;
            # peering streams over the TLS one.
            "-grpc-port=-1",
            f"-grpc-tls-port={self.grpc_tls_port if self.peering else -1}",
            f"-log-level={self.log_level}",
            f"-data-dir={self.data_dir}",
            # No call home from tests (the -dev default, spelt out for real servers).
            "-hcl=disable_update_check = true",
        ]
        args += self.extra_args
        args += [f"-hcl={h}" for h in self.hcl]
        return args

    def command(self) -> list[str]:
        return self.args()

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Consul's log says nothing of how it was started; the header tells the restarts
        # of one agent apart in the shared log.
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.args())}\n".encode())

    def start(self, timeout: float | None = None) -> Self:
        """Start and wait until there is a leader and this node is in the catalog.

        Ports are picked free just before start, so another process can grab one in between:
        a dev agent that dies with "address already in use" is retried on fresh ports.
        """
        for attempt in range(3):
            try:
                return super().start(timeout)
            except ConsulStartError:
                port_race = "address already in use" in self.log_tail(20000)
                if not (self.dev and port_race and attempt < 2):
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def is_ready(self) -> bool:
        """Leader elected and own node registered (so DNS and the catalog answer)."""
        if not self.leader():
            return False
        node = self.request("GET", f"/v1/catalog/node/{_q(self.node_name)}", timeout=2.0)
        return bool(node and node.get("Node"))

    @contextlib.contextmanager
    def readiness(self) -> Iterator[Probe]:
        def probe() -> str | None:
            try:
                if self.is_ready():
                    return None
                reason = "no leader yet, or own node not in the catalog"
            except (OSError, ConsulAPIError) as exc:  # not listening yet / no leader yet
                reason = f"last error: {exc!r}"
            time.sleep(0.1)
            return reason

        yield probe

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ConsulAgent {self.node_name} {self.http_addr} dns={self.dns_port} {state}>"


# --- a three-server cluster -------------------------------------------------------------


class ConsulCluster(Closing):
    """Three (``size``) Consul servers on loopback that elect a leader among themselves.

    For leader-loss tests: :meth:`kill` a server (SIGKILL) and :meth:`wait_for_new_leader`.
    ``raft_multiplier = 1`` (production timing) makes a new election take a few seconds
    instead of the default's ~5x longer.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        hcl: Sequence[str] = (),
        binary: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        log_level: str = "warn",
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.size = size
        self.hcl = list(hcl)
        self.binary = binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.datacenter = "dc1"
        self._owned: Path | None = None
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="consul-cluster-"))
            self._owned = self.workdir
            # Created before the servers' finalizers, so at exit it runs after them (LIFO):
            # processes are dead before their directories go.
            weakref.finalize(self, shutil.rmtree, self.workdir, True)
        else:
            self.workdir = Path(workdir)
        self.servers: list[ConsulAgent] = []
        self._build()

    def _build(self) -> None:
        self.servers = [
            ConsulAgent(
                f"s{i + 1}",
                binary=self.binary,
                workdir=self.workdir / f"c{i + 1}",
                log_level=self.log_level,
                start_timeout=self.start_timeout,
                dev=False,
                hcl=["performance { raft_multiplier = 1 }", *self.hcl],
            )
            for i in range(self.size)
        ]
        join = f"-retry-join={LOOPBACK}:{self.servers[0].serf_lan_port}"
        for server in self.servers:
            # The default retry interval is 30 s: a server that tries before s1 listens
            # would sit out half a minute, which was most of the start-up time.
            server.extra_args = [
                "-server",
                f"-bootstrap-expect={self.size}",
                join,
                "-retry-interval=1s",
            ]

    @property
    def http_addrs(self) -> list[str]:
        return [s.http_addr for s in self.servers]

    @property
    def dns_ports(self) -> list[int]:
        return [s.dns_port for s in self.servers]

    def live(self) -> list[int]:
        """Indexes of the servers whose process is running."""
        return [i for i, s in enumerate(self.servers) if s.running]

    def start(self) -> Self:
        """Start all servers at once (bootstrap needs all three) and wait for one leader that
        every server knows and for every node in the catalog."""
        for attempt in range(3):
            for server in self.servers:
                server.launch()
            try:
                self.wait_for_leader(self.start_timeout)
                wait_for(
                    lambda: all(s.is_ready() for s in self.servers),
                    self.start_timeout,
                    interval=0.1,
                    message="all servers registered in the catalog",
                )
                return self
            except (TimeoutError, ConsulStartError) as exc:
                tails = "\n".join(
                    f"--- {s.node_name} log tail ---\n{s.log_tail(2000)}" for s in self.servers
                )
                port_race = "address already in use" in tails
                self._kill_all()
                if not port_race or attempt == 2:
                    raise ConsulStartError(f"consul cluster did not start: {exc}\n{tails}") from exc
                for server in self.servers:
                    server.close()
                    # Raft state remembers the old ports: a retry must bootstrap afresh.
                    shutil.rmtree(server.workdir, ignore_errors=True)
                self._build()
        raise AssertionError("unreachable")

    def _kill_all(self) -> None:
        for server in self.servers:
            server.kill()

    def leader_index(self, via: int | None = None) -> int | None:
        """Index of the leader as server ``via`` (default: the first live one) sees it."""
        indexes = [via] if via is not None else self.live()
        for i in indexes:
            with contextlib.suppress(OSError, ConsulAPIError):
                return self._index_of(self.servers[i].leader())
        return None

    def _index_of(self, raft_addr: str) -> int | None:
        for i, server in enumerate(self.servers):
            if raft_addr == server.server_addr:
                return i
        return None

    def _agreed_leader(self, excluding: int | None = None) -> int | None:
        """The leader every live server reports (None while they disagree or have none)."""
        seen = set()
        for i in self.live():
            seen.add(self._index_of(self.servers[i].leader()))
        if len(seen) != 1:
            return None
        leader = seen.pop()
        if leader is None or leader == excluding or not self.servers[leader].running:
            return None
        return leader

    def wait_for_leader(self, timeout: float = DEFAULT_START_TIMEOUT) -> int:
        def check() -> int | None:
            for server in self.servers:
                proc = server.proc
                if proc is not None and proc.poll() is not None:
                    raise ConsulStartError(f"{server.node_name} exited ({proc.returncode})")
            leader = self._agreed_leader()
            # Index 0 is a valid leader: box it so wait_for sees a truthy value.
            return None if leader is None else leader + 1

        try:
            return wait_for(check, timeout, interval=0.1, message="a leader known to all") - 1
        except TimeoutError:
            # A server that died is the real cause; report it rather than the timeout.
            check()
            raise

    def wait_for_new_leader(self, excluding: int, timeout: float = DEFAULT_START_TIMEOUT) -> int:
        """Wait until the live servers agree on a leader other than ``excluding``."""

        def check() -> int | None:
            leader = self._agreed_leader(excluding)
            return None if leader is None else leader + 1

        message = f"a new leader (not s{excluding + 1}) known to all live servers"
        return wait_for(check, timeout, interval=0.1, message=message) - 1

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (0-based); its data dir stays, :meth:`restart` brings it back."""
        self.servers[i].kill()

    def restart(self, i: int, timeout: float | None = None) -> None:
        server = self.servers[i]
        server.launch()
        server.wait_ready(self.start_timeout if timeout is None else timeout)

    def api(self, via: int | None = None) -> ConsulAgent:
        """The server whose HTTP API helpers to use: ``via`` or the first live one."""
        if via is not None:
            return self.servers[via]
        live = self.live()
        if not live:
            raise RuntimeError("no live consul server")
        return self.servers[live[0]]

    # Catalog helpers on one server (writes are forwarded to the leader by it).
    def catalog_register(
        self,
        node: str,
        address: str,
        *,
        node_meta: Mapping[str, str] | None = None,
        service: Mapping[str, Any] | None = None,
        checks: Sequence[Mapping[str, Any]] | None = None,
        via: int | None = None,
    ) -> None:
        self.api(via).catalog_register(
            node, address, node_meta=node_meta, service=service, checks=checks
        )

    def catalog_deregister(self, node: str, *, via: int | None = None) -> None:
        self.api(via).catalog_deregister(node)

    def register_service(self, name: str, *, via: int | None = None, **kwargs: Any) -> str:
        """Agent registration on server ``via`` (the service lives on that server's node)."""
        return self.api(via).register_service(name, **kwargs)

    def close(self) -> None:
        """Stop every server for good and remove a self-made work directory."""
        for server in self.servers:
            server.close()
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)
