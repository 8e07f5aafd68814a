"""A bounded UDP load loop and the RSS of a process: for the memory tests.

Test-only. The loop sends prepared query packets with a window of queries in flight and
counts the replies; it ends when every packet was sent and answered or waited for, so a
test never runs open-ended. RSS is read from /proc, the figure the issue measured.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable
from pathlib import Path

# Queries in flight at once: enough to keep one gateway process busy on loopback.
DEFAULT_WINDOW = 64
# How long a reply may take before its query counts as lost.
REPLY_TIMEOUT_S = 2.0


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def udp_load(
    host: str, port: int, packets: Iterable[bytes], *, window: int = DEFAULT_WINDOW
) -> tuple[int, int]:
    """Sends every packet, at most ``window`` unanswered at once; (sent, answered).

    Replies are counted, not matched by ID: the window only paces the sender. A window
    that gets no reply for REPLY_TIMEOUT_S is given up (lost) and sending goes on.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sent = answered = given_up = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((host, port))
        sock.setblocking(False)
        for packet in packets:
            while sent - answered - given_up >= window:
                if _receive(sock, REPLY_TIMEOUT_S):
                    answered += 1
                else:
                    given_up = sent - answered
            sock.send(packet)
            sent += 1
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while answered < sent and time.monotonic() < deadline:
            if _receive(sock, deadline - time.monotonic()):
                answered += 1
    return sent, answered


def _receive(sock: socket.socket, timeout: float) -> bool:
    ready, _, _ = select.select([sock], [], [], max(timeout, 0.0))
    if not ready:
        return False
    try:
        sock.recv(65535)
    except (BlockingIOError, ConnectionRefusedError):
        return False
    return True
