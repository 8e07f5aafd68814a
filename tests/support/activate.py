"""Starts a command the way systemd's socket activation does: ``python -m tests.support.activate``.

``--udp HOST:PORT`` and ``--tcp HOST:PORT`` (repeatable) are bound (TCP
listening) here, moved to descriptors 3, 4, … in the order given, and the
command after ``--`` is exec'd with ``LISTEN_FDS``, ``LISTEN_PID`` (our own
pid, which exec keeps) and ``LISTEN_FDNAMES`` set, as sd_listen_fds(3)
describes. ``systemd-socket-activate`` cannot pass UDP and TCP sockets
together (``--datagram`` applies to all of them), hence this launcher.

Test-only: it binds what the test says and nothing else.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import sys

# sd_listen_fds(3): passed descriptors start here.
FIRST_FD = 3
TCP_BACKLOG = 128
# Descriptors are parked at or above this while they are moved into place.
PARK_FD = 100


def _address(text: str) -> tuple[int, str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, host, int(port)


def _bind(kind: int, text: str) -> socket.socket:
    family, host, port = _address(text)
    sock = socket.socket(family, kind)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(TCP_BACKLOG)
    return sock


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.activate")
    parser.add_argument("--udp", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--tcp", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to start is needed after --")
    sockets = [_bind(socket.SOCK_DGRAM, a) for a in args.udp]
    sockets += [_bind(socket.SOCK_STREAM, a) for a in args.tcp]
    names = [f"dns-udp-{i}" for i in range(len(args.udp))]
    names += [f"dns-tcp-{i}" for i in range(len(args.tcp))]
    # Above every target first, so moving one never overwrites another.
    parked = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, PARK_FD) for s in sockets]
    for sock in sockets:
        sock.close()
    for index, fd in enumerate(parked):
        os.dup2(fd, FIRST_FD + index, inheritable=True)
        os.close(fd)
    env = dict(os.environ)
    env["LISTEN_FDS"] = str(len(parked))
    env["LISTEN_PID"] = str(os.getpid())
    env["LISTEN_FDNAMES"] = ":".join(names)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
