"""systemd's side of a service: sockets it hands over, and what we tell it.

Socket activation (sd_listen_fds(3)): a ``.socket`` unit binds the
sockets and starts us with them open from file descriptor 3 on;
``LISTEN_FDS`` says how many, ``LISTEN_PID`` whose they are (a forked
child must not take its parent's), ``LISTEN_FDNAMES`` their names. The
variables are removed once read, as ``sd_listen_fds(1)`` does, so nothing
we start thinks they are its own.

Notification (sd_notify(3)): one datagram of ``KEY=VALUE`` lines to the
AF_UNIX socket named in ``NOTIFY_SOCKET`` (a leading ``@`` names an
abstract socket). Written here by hand: it is a sendto, not worth a
dependency. ``WATCHDOG_USEC`` asks for ``WATCHDOG=1`` at least that often;
we send it at half the interval, as sd_watchdog_enabled(3) advises.

Parsing is pure (:func:`parse_listen_fds`, :func:`notify_address`,
:func:`watchdog_interval`); the edges are :func:`inherited_sockets` and
:class:`Notifier`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from gateway.errors import StartupError
from gateway.options import Endpoint

log = logging.getLogger(__name__)

# sd_listen_fds(3): the first passed descriptor.
SD_LISTEN_FDS_START = 3
# Socket activation hands over at most this many descriptors here (two per
# address: UDP and TCP); more is a misconfigured unit, not a use case.
MAX_LISTEN_FDS = 1024
_ACTIVATION_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_USEC_PER_S = 1_000_000


class ActivationError(StartupError):
    """The sockets systemd passed are not what the gateway can serve on."""


@dataclass(frozen=True, slots=True)
class Passed:
    """One descriptor systemd passed: its number and its name (``FileDescriptorName=``)."""

    fd: int
    name: str


def parse_listen_fds(env: Mapping[str, str], pid: int) -> tuple[Passed, ...]:
    """The descriptors passed to process ``pid``; () when none were (or not to us)."""
    count_text = env.get("LISTEN_FDS")
    if not count_text:
        return ()
    pid_text = env.get("LISTEN_PID", "")
    if pid_text and pid_text != str(pid):
        return ()  # meant for our parent, which forked us
    try:
        count = int(count_text)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={count_text!r} is not a number") from None
    if not 0 <= count <= MAX_LISTEN_FDS:
        raise ActivationError(f"LISTEN_FDS={count} is out of range 0-{MAX_LISTEN_FDS}")
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    # systemd names unnamed sockets "unknown" (sd_listen_fds_with_names(3)).
    names += ["unknown"] * (count - len(names))
    return tuple(Passed(SD_LISTEN_FDS_START + i, names[i]) for i in range(count))


def inherited_sockets(env: MutableMapping[str, str], pid: int) -> list[socket.socket]:
    """The UDP and TCP sockets systemd passed to us, non-blocking; removes the variables.

    Every passed descriptor must be an IPv4 or IPv6 datagram socket or a
    listening stream socket: anything else is an :class:`ActivationError`
    naming it (a unit with ``ListenFIFO=`` or an AF_UNIX socket is a mistake
    better reported than ignored).
    """
    passed = parse_listen_fds(env, pid)
    for name in _ACTIVATION_VARIABLES:
        env.pop(name, None)
    sockets: list[socket.socket] = []
    try:
        for item in passed:
            sockets.append(_adopt(item))
    except BaseException:
        for sock in sockets:
            sock.detach()  # the descriptor stays systemd's; we only drop our object
        raise
    return sockets


def _adopt(item: Passed) -> socket.socket:
    what = f"passed socket {item.fd} ({item.name})"
    try:
        sock = socket.socket(fileno=item.fd)
    except OSError as exc:
        raise ActivationError(f"{what}: not a socket ({exc.strerror})") from None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ActivationError(f"{what}: not an IPv4 or IPv6 socket")
        if sock.type == socket.SOCK_STREAM:
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise ActivationError(f"{what}: a stream socket that is not listening")
        elif sock.type != socket.SOCK_DGRAM:
            raise ActivationError(f"{what}: neither UDP nor TCP")
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), False)
    except BaseException:
        sock.detach()
        raise
    return sock


def endpoint_of(sock: socket.socket) -> Endpoint:
    """The address a socket is bound to, as the ``--listen`` endpoint it replaces."""
    host, port = sock.getsockname()[:2]
    return Endpoint(str(host), int(port))


def notify_address(env: Mapping[str, str]) -> str | bytes | None:
    """Where sd_notify messages go: a path, an abstract name (bytes), or None."""
    target = env.get("NOTIFY_SOCKET", "")
    if not target:
        return None
    if target.startswith("@"):
        return b"\0" + target[1:].encode()  # Linux abstract namespace
    if not target.startswith("/"):
        return None  # e.g. vsock: addresses systemd may use for VMs; not ours to reach
    return target


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` messages (half of ``WATCHDOG_USEC``), or None."""
    usec_text = env.get("WATCHDOG_USEC", "")
    pid_text = env.get("WATCHDOG_PID", "")
    if not usec_text or (pid_text and pid_text != str(pid)):
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    return usec / _USEC_PER_S / 2 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages; does nothing when systemd did not ask for them.

    A message that cannot be sent is logged once and dropped: the service
    goes on whether or not its manager hears about it.
    """

    def __init__(self, address: str | bytes | None, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], pid: int) -> Notifier:
        return cls(notify_address(env), watchdog_interval(env, pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self, monotonic_usec: int) -> None:
        """A reload began; :meth:`ready` ends it (``Type=notify-reload`` wants the time)."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
