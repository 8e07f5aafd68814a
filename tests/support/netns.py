"""Private network namespaces joined by veth pairs: non-loopback addresses for tests.

Every address outside loopback lives inside namespaces made here (never in the
root namespace), and :meth:`Lan.close` deletes them, which deletes their veth
links too. :func:`entered` moves only the calling *thread* into a namespace
for a block: a socket made or a process started in the block lives there for
good, so the harness's processes (which start from the calling thread and
probe readiness from it) run unchanged inside a namespace, on its loopback.

Needs root (CAP_SYS_ADMIN) and iproute2's ``ip``, both part of the test machines.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

# linux/sched.h
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    # os.setns arrived in Python 3.12; the gateway supports 3.11.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """The calling thread inside network namespace ``namespace`` for the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"{NETNS_RUN_DIR}/{namespace}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass(frozen=True)
class Link:
    """A veth pair: ``host_ns`` holds ``host_address``, ``peer_ns`` holds ``peer_address``."""

    host_ns: str
    host_address: str  # with prefix length, e.g. 10.99.0.1/24
    peer_ns: str
    peer_address: str


class Lan:
    """Namespaces made with unique names; :meth:`close` removes every one of them."""

    def __init__(self, tag: str) -> None:
        # Unique per test process, so parallel or leftover runs never collide.
        self._prefix = f"{tag}{os.getpid()}"
        self.namespaces: list[str] = []
        self._links = 0

    def namespace(self, role: str) -> str:
        name = f"{self._prefix}-{role}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, host_ns: str, host_address: str, peer_ns: str, peer_address: str) -> Link:
        """A veth pair made directly inside the two namespaces (never in the root one)."""
        self._links += 1
        # Interface names: at most 15 characters.
        host_if = f"h{self._links}x{os.getpid()}"[:15]
        peer_if = f"p{self._links}x{os.getpid()}"[:15]
        ip("link", "add", host_if, "netns", host_ns, "type", "veth",
           "peer", "name", peer_if, "netns", peer_ns)  # fmt: skip
        ends = ((host_ns, host_if, host_address), (peer_ns, peer_if, peer_address))
        for ns, ifname, address in ends:
            ip("-n", ns, "addr", "add", address, "dev", ifname)
            ip("-n", ns, "link", "set", ifname, "up")
        return Link(host_ns, host_address, peer_ns, peer_address)

    def route(self, ns: str, via: str) -> None:
        ip("-n", ns, "route", "add", "default", "via", via)

    def close(self) -> None:
        for name in reversed(self.namespaces):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", name)
        self.namespaces.clear()
