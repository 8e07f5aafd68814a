"""The listening end of sd_notify: what systemd hears from a service, for tests.

A datagram socket in the abstract namespace (``NOTIFY_SOCKET=@name``, as
systemd itself uses) or at a path; :meth:`NotifyListener.wait_for` reads
messages until one carries a given ``KEY=VALUE`` line. Test-only.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Self

from harness.process import Closing

MAX_MESSAGE = 4096


class NotifyListener(Closing):
    """Receives sd_notify datagrams; ``messages`` keeps each one's lines."""

    def __init__(self) -> None:
        self.name = f"gateway-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())
        self.messages: list[list[str]] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment a service needs to notify us."""
        return {"NOTIFY_SOCKET": "@" + self.name}

    def wait_for(self, line: str, times: int = 1, timeout: float = 15.0) -> int:
        """Reads messages until ``times`` of them had ``line``; the count. TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while self.count(line) < times:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{line!r} not {times}x within {timeout:g} s: {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(MAX_MESSAGE)
            except TimeoutError:
                continue
            self.messages.append(data.decode().split("\n"))
        return self.count(line)

    def count(self, line: str) -> int:
        return sum(line in message for message in self.messages)

    def start(self) -> Self:
        return self  # bound in __init__: the environment is known before the service starts

    def close(self) -> None:
        self.sock.close()
