"""The gateway as a real subprocess (``python -m gateway``), for end-to-end tests.

Running it out of process exercises the real CLI, signal handling and socket
setup, and lets a test kill upstreams or the gateway independently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.ports import LOOPBACK
from tests.support.upstream import ServerProcess, ServerStartError, host_port

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["REPO_ROOT", "GatewayProcess", "ServerStartError"]


class GatewayProcess(ServerProcess):
    """``python -m gateway --listen HOST:PORT *args`` with output in a log file.

    ``start()`` returns once any DNS response (even SERVFAIL or REFUSED) to the
    probe query arrives over UDP: that proves the listener is up without
    assuming anything about what the gateway serves. Pass ``probe_name`` (e.g.
    ``"consul."``) to probe a name the gateway answers itself when its upstream
    is deliberately down. ``launcher`` replaces ``[python, -m, gateway]``, e.g.
    to run it under a profiler.
    """

    label = "gateway"

    def __init__(
        self,
        *args: str,
        host: str = LOOPBACK,
        port: int | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        probe_name: str = ".",
        probe_type: str = "SOA",
        launcher: Sequence[str] | None = None,
    ) -> None:
        child_env = dict(os.environ)
        # Unbuffered, so the log tail in a failure message is up to date.
        child_env["PYTHONUNBUFFERED"] = "1"
        if env is not None:
            child_env.update(env)
        super().__init__(host=host, port=port, log_path=log_path, env=child_env, cwd=REPO_ROOT)
        self.args = tuple(args)
        self.probe_name = probe_name
        self.probe_type = probe_type
        self.launcher = (
            tuple(launcher) if launcher is not None else (sys.executable, "-m", "gateway")
        )

    def command(self) -> list[str]:
        return [*self.launcher, "--listen", host_port(self.host, self.port), *self.args]
