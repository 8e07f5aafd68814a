"""The container lab of ``deploy/lab/`` driven from Python: images built by
``tools/build-lab-image.sh``, the lab brought up and down in a network namespace of its
own (the host's namespace sees no bridge, no address) either by ``deploy/lab/lab.sh``
(:class:`ContainerLab`) or by podman-compose from ``deploy/lab/compose.yaml``
(:class:`ComposeLab`), and commands run inside its containers with ``podman exec``.

A lab is named ``cdg-lab-test-<pid>`` (``cdg-lab-compose-<pid>``): one left behind by
a runner that was SIGKILLed is recognised by its dead pid and removed before a new one
starts.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from harness.consul import consul_binary
from harness.process import Closing, find_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = REPO_ROOT / "deploy" / "lab"
LAB_SCRIPT = LAB_DIR / "lab.sh"
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-lab-image.sh"
CONTAINERS_CONF = LAB_DIR / "containers.conf"
# A cold build (debootstrap, wheels, two images) took about 2 minutes on an idle
# 2-core VM; the bound leaves room for a loaded machine and a slow mirror.
BUILD_TIMEOUT_S = 1200.0
# Bringing the lab up or down: nine containers, each a few podman calls.
LAB_COMMAND_TIMEOUT_S = 300.0
# One command inside a container (a lookup, touching a file).
EXEC_TIMEOUT_S = 60.0
COMPOSE_FILE = LAB_DIR / "compose.yaml"
NAME_PREFIX = "cdg-lab-test-"
COMPOSE_PREFIX = "cdg-lab-compose-"
LABEL_KEY = "consul-dns-gateway-lab"
# The labels podman-compose puts on what it makes.
COMPOSE_PROJECT_LABEL = "io.podman.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
# compose.yaml's fixed subnet.
COMPOSE_PREFIX_ADDRESS = "10.153.53"
NETNS_DIR = Path("/run/netns")
# Candidate subnets of lab.sh labs: 10.153.<n>.0/24, the first one no podman network
# uses; 10.153.53.0/24 is compose.yaml's.
SUBNET_SECOND_OCTET = 153
SUBNET_THIRD_OCTETS = range(54, 253)
# Test sessions of several checkouts may run at once: choosing a subnet and creating
# the network is done under a lock, and the compose lab (fixed subnet) holds its own
# lock while it lives. Waiting for one is bounded by a lab's whole life under load.
LOCK_DIR = Path("/run/lock")
SUBNET_LOCK = "consul-dns-gateway-lab-subnet.lock"
COMPOSE_LOCK = "consul-dns-gateway-lab-compose.lock"
LOCK_TIMEOUT_S = 1200.0
LOCK_POLL_S = 1.0

# Host parts of the lab's addresses (deploy/lab/lab.sh).
HOSTS = {
    "server-1": 11,
    "server-2": 12,
    "server-3": 13,
    "app-1": 21,
    "app-2": 22,
    "site-dns": 31,
    "gateway": 53,
    "client": 100,
}


@dataclass(frozen=True)
class LabImages:
    gateway: str
    consul: str


def podman_env() -> dict[str, str]:
    """The environment of every podman call: the lab's containers.conf (runc, no ulimits)."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*argv: str, timeout: float = EXEC_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("podman"), *argv],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def build_images() -> LabImages:
    """The gateway and Consul images (cached base; the gateway image from this checkout)."""
    env = {**podman_env(), "PYTHON": sys.executable, "CONSUL_BIN": consul_binary()}
    proc = subprocess.run(
        [str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return LabImages(gateway=lines[0], consul=lines[1])


def used_subnets() -> set[ipaddress.IPv4Network]:
    proc = podman("network", "ls", "--format", "{{range .Subnets}}{{.Subnet}} {{end}}")
    if proc.returncode != 0:
        raise RuntimeError(f"podman network ls: {proc.stderr}")
    found: set[ipaddress.IPv4Network] = set()
    for text in proc.stdout.split():
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv4Network):
            found.add(net)
    return found


def free_prefix() -> str:
    """The first three octets of a /24 no podman network overlaps (podman refuses those)."""
    used = used_subnets()
    for third in SUBNET_THIRD_OCTETS:
        prefix = f"10.{SUBNET_SECOND_OCTET}.{third}"
        candidate = ipaddress.IPv4Network(f"{prefix}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return prefix
    raise RuntimeError("no free 10.153.x.0/24 for the lab")


class FileLock:
    """An exclusive ``flock`` on a file of ``LOCK_DIR``, waited for with bounded polling."""

    def __init__(self, name: str) -> None:
        self.path = LOCK_DIR / name
        self.fd: int | None = None

    def acquire(self, timeout: float = LOCK_TIMEOUT_S) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise TimeoutError(f"{self.path} held for more than {timeout:.0f}s") from None
                time.sleep(LOCK_POLL_S)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _stale(names: list[str], prefix: str, own: str) -> list[str]:
    """Names ``<prefix><pid>`` (maybe with a suffix) of test runners no longer alive."""
    found = []
    for name in names:
        match = re.match(re.escape(prefix) + r"(\d+)", name)
        if match and match.group(0) != own and not _pid_alive(int(match.group(1))):
            found.append(match.group(0))
    return sorted(set(found))


def _netns_add(name: str) -> None:
    if not (NETNS_DIR / name).exists():
        subprocess.run([find_binary("ip"), "netns", "add", name], check=True, timeout=30)
    subprocess.run(
        [find_binary("ip"), "-n", name, "link", "set", "lo", "up"], check=True, timeout=30
    )


def _netns_del(name: str) -> None:
    if (NETNS_DIR / name).exists():
        subprocess.run([find_binary("ip"), "netns", "del", name], check=False, timeout=30)


class Lab(Closing):
    """What the tests see of a running lab, however it was brought up."""

    name: str
    prefix: str

    def container(self, service: str) -> str:
        raise NotImplementedError

    def address(self, host: str) -> str:
        return f"{self.prefix}.{HOSTS[host]}"

    def exec(
        self, service: str, *argv: str, timeout: float = EXEC_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` run in the lab's container of ``service`` (e.g. ``client``)."""
        return podman("exec", self.container(service), *argv, timeout=timeout)

    def logs(self, service: str) -> str:
        proc = podman("logs", "--tail", "30", self.container(service))
        return proc.stdout + proc.stderr

    def containers(self) -> list[str]:
        """Names of the lab's containers, running or not."""
        raise NotImplementedError

    def down(self) -> subprocess.CompletedProcess[str] | None:
        """Tear the lab down; the result of the command, None when there was nothing."""
        raise NotImplementedError

    def networks(self) -> list[str]:
        """Names of the lab's podman networks."""
        proc = podman("network", "ls", "--format", "{{.Name}}")
        if proc.returncode != 0:
            raise RuntimeError(f"podman network ls: {proc.stderr}")
        return [net for net in proc.stdout.split() if net.startswith(self.name)]

    def netns_exists(self) -> bool:
        return (NETNS_DIR / self.name).exists()

    def _ps(self, label: str) -> list[str]:
        proc = podman("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}")
        if proc.returncode != 0:
            raise RuntimeError(f"podman ps: {proc.stderr}")
        return proc.stdout.split()


class ContainerLab(Lab):
    """The lab of ``deploy/lab/lab.sh``: ``start()`` brings it up (after removing labs of
    dead test runners), ``close()`` tears it down and deletes its network namespace."""

    def __init__(self, images: LabImages, name: str | None = None) -> None:
        self.images = images
        self.name = name or f"{NAME_PREFIX}{os.getpid()}"
        self.prefix = ""

    def _env(self, name: str, prefix: str) -> dict[str, str]:
        return {
            **podman_env(),
            "LAB_NAME": name,
            "LAB_NETNS": name,
            "LAB_SUBNET": prefix,
            "LAB_GATEWAY_IMAGE": self.images.gateway,
            "LAB_CONSUL_IMAGE": self.images.consul,
        }

    def _script(self, action: str, name: str, prefix: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LAB_SCRIPT), action],
            env=self._env(name, prefix),
            capture_output=True,
            text=True,
            timeout=LAB_COMMAND_TIMEOUT_S,
            check=False,
        )

    def start(self) -> Self:
        networks = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        for stale in _stale(networks, NAME_PREFIX, self.name):
            self._script("down", stale, "")
        self._script("down", self.name, "")  # a lab of an earlier runner with our pid
        lock = FileLock(SUBNET_LOCK)
        lock.acquire()
        try:
            self.prefix = free_prefix()
            proc = self._script("up", self.name, self.prefix)
        finally:
            lock.release()
        if proc.returncode != 0:
            raise RuntimeError(f"lab.sh up failed (exit {proc.returncode}):\n{proc.stderr}")
        return self

    def down(self) -> subprocess.CompletedProcess[str] | None:
        return self._script("down", self.name, self.prefix)

    def close(self) -> None:
        self.down()

    def container(self, service: str) -> str:
        return f"{self.name}-{service}"

    def containers(self) -> list[str]:
        return self._ps(f"{LABEL_KEY}={self.name}")


class ComposeLab(Lab):
    """The lab of ``deploy/lab/compose.yaml`` under podman-compose, in a network
    namespace of its own. Its subnet is fixed: one at a time (podman refuses a second
    network on it)."""

    def __init__(self, images: LabImages, name: str | None = None) -> None:
        self.images = images
        self.name = name or f"{COMPOSE_PREFIX}{os.getpid()}"
        self.prefix = COMPOSE_PREFIX_ADDRESS
        self.lock = FileLock(COMPOSE_LOCK)

    def _compose(self, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        compose = Path(sys.executable).parent / "podman-compose"
        return subprocess.run(
            [
                find_binary("nsenter"),
                f"--net={NETNS_DIR / name}",
                str(compose),
                "--file",
                str(COMPOSE_FILE),
                "--project-name",
                name,
                *argv,
            ],
            env={
                **podman_env(),
                "LAB_GATEWAY_IMAGE": self.images.gateway,
                "LAB_CONSUL_IMAGE": self.images.consul,
            },
            cwd=LAB_DIR,
            capture_output=True,
            text=True,
            timeout=LAB_COMMAND_TIMEOUT_S,
            check=False,
        )

    def _down(self, name: str) -> subprocess.CompletedProcess[str] | None:
        if not (NETNS_DIR / name).exists():
            return None
        proc = self._compose(name, "down", "--timeout", "0")
        _netns_del(name)
        return proc

    def start(self) -> Self:
        self.lock.acquire()
        names = [p.name for p in NETNS_DIR.iterdir()] if NETNS_DIR.is_dir() else []
        for stale in [*_stale(names, COMPOSE_PREFIX, self.name), self.name]:
            self._down(stale)
        _netns_add(self.name)
        proc = self._compose(self.name, "up", "--detach")
        if proc.returncode != 0:
            raise RuntimeError(
                f"podman-compose up failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        return self

    def down(self) -> subprocess.CompletedProcess[str] | None:
        return self._down(self.name)

    def close(self) -> None:
        try:
            self.down()
        finally:
            self.lock.release()

    def container(self, service: str) -> str:
        proc = podman(
            "ps",
            "--filter",
            f"label={COMPOSE_PROJECT_LABEL}={self.name}",
            "--filter",
            f"label={COMPOSE_SERVICE_LABEL}={service}",
            "--format",
            "{{.Names}}",
        )
        names = proc.stdout.split()
        if len(names) != 1:
            raise RuntimeError(f"no single container for {service}: {names} {proc.stderr}")
        return names[0]

    def containers(self) -> list[str]:
        return self._ps(f"{COMPOSE_PROJECT_LABEL}={self.name}")
