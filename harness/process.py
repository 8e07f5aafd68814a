"""The one process base of the toolkit: start, readiness, stop, log tail and clean-up.

Every server the tests and the benchmark start (Knot, dnsmasq, CoreDNS, Consul, the
gateway) is a :class:`ServerProcess`: a child on loopback with its own work directory
and a log file that is appended to across restarts, so a failure message shows the whole
history. It is ready when its readiness probe says so: a DNS answer for the DNS servers
(:class:`DnsServerProcess`), an elected leader for Consul.

Every child is killed when its owner is closed, garbage collected or the interpreter
exits -- and, through PR_SET_PDEATHSIG, even when the test runner itself is SIGKILLed, so
no run leaves processes holding ports behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import grp
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self, TypeVar

import dns.message
import dns.rcode

from harness.ports import LOOPBACK, free_port, host_port, is_loopback

T = TypeVar("T")

# A readiness probe, called repeatedly while a server starts: None once it is ready, else
# why not yet (the last reason goes into the start error).
Probe = Callable[[], str | None]


class ServerStartError(RuntimeError):
    """A server exited or never became ready; the message has its command and log tail."""


def find_binary(name: str) -> str:
    """Absolute path of ``name``; also looks in sbin, which a non-root PATH may lack."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/local/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} not found (is the Debian package installed?)")
    return found


def current_user_group() -> tuple[str, str]:
    """Our own user and group names.

    Knot and dnsmasq switch to an unprivileged user by default; naming the user we already
    are makes that a no-op whether or not we are root.
    """
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Exceptions from the predicate count as "not yet" (a server that is restarting refuses
    connections for a moment); the last one is reported if the wait times out.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: T | None = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
        except Exception as exc:  # any failure just means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_exc!r}" if last_exc else f"; last value: {last_value!r}"
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}{detail}")
        time.sleep(interval)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block.

    A long run (the benchmark) stopped by ``kill`` or a CI timeout then unwinds its
    ``with`` blocks and ExitStacks, which stop every server in order.
    """
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- process lifetime -------------------------------------------------------------------

# Every child still running; killed at interpreter exit as a last resort (the weakref
# finalizers of their owners normally get there first).
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _kill_process(proc: subprocess.Popen[bytes], *, graceful: bool, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout=timeout if graceful else 5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5.0)
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def _kill_all_at_exit() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _kill_process(proc, graceful=False)


# Registered at import, so it runs after the finalizers of objects created later (atexit is
# LIFO) and catches anything they missed.
atexit.register(_kill_all_at_exit)


def _die_with_parent() -> None:
    """Child-side (preexec): ask the kernel to SIGKILL us when the parent dies.

    Covers the case no Python code can: the runner being SIGKILLed (CI timeouts), which
    would otherwise leave servers holding ports. Failure to set it is harmless.
    """
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def spawn(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr appended to ``log_path``; tracked for clean-up."""
    # PDEATHSIG fires when the *thread* that forked exits, so it is only safe to use from the
    # main thread; servers started from a helper thread rely on the finalizers instead.
    in_main = threading.current_thread() is threading.main_thread()
    # The child keeps its own copy of the log descriptor; ours can close right away.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            # Own session: a Ctrl-C in the terminal reaches the runner only, which then stops
            # the servers in order instead of them dying mid-test.
            start_new_session=True,
            preexec_fn=_die_with_parent if in_main else None,
        )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    return proc


class _Lifetime:
    """What must be undone when the owner goes: its child and the directory it made.

    Kept apart from the owner so the weakref finalizer does not keep the owner alive.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.owned_dir: Path | None = None


def _reap(life: _Lifetime) -> None:
    """Finalizer shared by close(), garbage collection and interpreter exit."""
    if life.proc is not None:
        _kill_process(life.proc, graceful=False)
    if life.owned_dir is not None:
        shutil.rmtree(life.owned_dir, ignore_errors=True)


# --- the base ---------------------------------------------------------------------------


class Closing:
    """``with`` for anything that starts and closes: ``start()`` on entry, ``close()`` on
    exit, and ``close()`` too when the start fails (a half-started server holds ports)."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ServerProcess(Closing):
    """A child process serving on ``host``:``port``, logging to a file.

    Subclasses supply :meth:`command` and :meth:`readiness`; :meth:`prepare` runs before
    every (re)start (to write config files). ``stop`` ends the process and keeps its work
    directory, so it can be started again on the same port; ``close`` ends it for good and
    removes the work directory if this object made it.
    """

    label = "server"
    start_timeout = 15.0
    stop_timeout = 5.0
    start_error: type[ServerStartError] = ServerStartError

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        workdir: Path | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"test servers may only use loopback addresses, not {host}")
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._life = _Lifetime()
        # Own the directory only if we made it, so close() never deletes a caller's (e.g.
        # pytest's tmp_path) directory, which keeps the log for inspection.
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=f"{self.label}-"))
            self._life.owned_dir = workdir
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path if log_path is not None else self.workdir / f"{self.label}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._finalizer = weakref.finalize(self, _reap, self._life)

    # ---- to override

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Hook run before every (re)start, e.g. to write config files."""

    def readiness(self) -> contextlib.AbstractContextManager[Probe]:
        """A probe for :meth:`wait_ready`, set up once per start (e.g. one socket)."""
        raise NotImplementedError

    # ---- state

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self._life.proc

    @property
    def pid(self) -> int | None:
        return self._life.proc.pid if self._life.proc is not None else None

    @property
    def running(self) -> bool:
        return self._life.proc is not None and self._life.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._life.proc.poll() if self._life.proc is not None else None

    # ---- life cycle

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster starts all, then waits)."""
        if self.running:
            return
        self.prepare()
        self._life.proc = spawn(self.command(), self.log_path, env=self.env, cwd=self.cwd)

    def wait_ready(self, timeout: float) -> None:
        """Probe until ready; a :attr:`start_error` if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        last = "not probed yet"
        with self.readiness() as probe:
            while True:
                code = self.returncode
                if code is not None:
                    raise self.start_error(
                        self._failure(f"exited with code {code} before it was ready")
                    )
                if time.monotonic() >= deadline:
                    raise self.start_error(self._failure(f"not ready after {timeout:g}s ({last})"))
                reason = probe()
                if reason is None:
                    return
                last = reason

    def start(self, timeout: float | None = None) -> Self:
        """Launch and wait until ready; a process that does not get there is killed."""
        if self.running:
            raise RuntimeError(f"{self.label} already running (pid {self.pid})")
        self.launch()
        try:
            self.wait_ready(self.start_timeout if timeout is None else timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        proc = self._life.proc
        if proc is None:
            return None
        _kill_process(
            proc, graceful=True, timeout=self.stop_timeout if timeout is None else timeout
        )
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL without any chance to clean up, like a crash; ``start`` brings it back."""
        proc = self._life.proc
        if proc is not None:
            _kill_process(proc, graceful=False)

    def restart(self, timeout: float | None = None) -> None:
        """Stop if still running, then start again on the same port."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop for good and remove the work directory if this object made it."""
        self.stop()
        self._finalizer()

    # ---- the log

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def _failure(self, what: str) -> str:
        # First line says what went wrong, last lines say why (the bench's start-failure
        # summary takes exactly these two).
        tail = self.log_tail().rstrip() or "(the log is empty)"
        return (
            f"{self.label} on {self.address} {what}\n"
            f"command: {shlex.join(self.command())}\n"
            f"log tail:\n{tail}"
        )


class DnsServerProcess(ServerProcess):
    """A server that is ready once it answers a probe query over UDP.

    The probe is ``probe_name``/``probe_type``/``probe_class``; ``accept()`` decides
    whether a response proves readiness (any response by default).
    """

    probe_name = "."
    probe_type = "SOA"
    probe_class = "IN"

    def accept(self, response: dns.message.Message) -> bool:
        """Whether a probe response proves readiness; any response by default."""
        return True

    @contextlib.contextmanager
    def readiness(self) -> Iterator[Probe]:
        # One socket for the whole wait, resending the same query every 100 ms: a slow
        # answer to an earlier send still counts, which matters for servers that first try
        # (and time out on) an upstream.
        query = dns.message.make_query(self.probe_name, self.probe_type, self.probe_class)
        wire = query.to_wire()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last = f"no answer to {self.probe_name} {self.probe_type}"
        next_send = 0.0
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)

            def probe() -> str | None:
                nonlocal last, next_send
                now = time.monotonic()
                if now >= next_send:
                    # Unconnected socket: ICMP port-unreachable is not reported, but a
                    # transient send error is no reason to give up either.
                    with contextlib.suppress(OSError):
                        sock.sendto(wire, (self.host, self.port))
                    next_send = now + 0.1
                try:
                    data = sock.recv(65535)
                except (TimeoutError, OSError):
                    return last
                try:
                    response = dns.message.from_wire(data)
                except Exception as err:  # garbage is not readiness, keep waiting
                    last = f"unparsable response: {err}"
                    return last
                if response.id != query.id:
                    return last
                if self.accept(response):
                    return None
                last = f"last rcode {dns.rcode.to_text(response.rcode())}"
                return last

            yield probe


# ---------------------------------------------------------------- process tree, sockets


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (e.g. the gateway's ``--workers``)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                out += [int(p) for p in text.split()]
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (e.g. the gateway's ``--workers`` children)."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += children(p)
    return seen


# /proc/net/tcp's state column: 01 is ESTABLISHED.
_TCP_ESTABLISHED = "01"


def tcp_connections_to(port: int, pids: Sequence[int]) -> dict[int, int]:
    """Established TCP connections to remote ``port`` that each of ``pids`` holds.

    Read from /proc (the sockets' inodes in /proc/net/tcp{,6} matched to each
    process's descriptors), as Consul would count them per client.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == _TCP_ESTABLISHED:
                    inodes.add(fields[9])
    counts: dict[int, int] = {}
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    held += target.startswith("socket:[") and target[8:-1] in inodes
        counts[pid] = held
    return counts
