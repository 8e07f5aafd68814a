"""Command line: ``python -m gateway`` / ``consul-dns-gateway``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import options as cfg
from gateway.dnsmasq_conf import Notice
from gateway.errors import StartupError
from gateway.service import systemd
from gateway.service.reload import ConfigSources

# The exit code of a gateway that cannot start as configured (argparse's, too).
EXIT_BAD_CONFIG = 2
# The exit code when the system refuses (e.g. the listen port is taken).
EXIT_SYSTEM_ERROR = 1


def parser() -> argparse.ArgumentParser:
    """One flag per declared option (``gateway.options.OPTIONS``), in their order."""
    p = argparse.ArgumentParser(
        prog="consul-dns-gateway",
        description="DNS for Consul names from memory, everything else forwarded and cached.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same options")
    for opt in cfg.OPTIONS:
        help_text = opt.help.replace("%", "%%")  # argparse formats help with %
        if opt.is_switch:
            # Not given: None, so the environment or the TOML file decides.
            p.add_argument(
                opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif opt.repeatable:
            p.add_argument(
                opt.flag, dest=opt.name, action="append", metavar=opt.metavar, help=help_text
            )
        else:
            p.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar, help=help_text)
    return p


def _refuse(exc: Exception) -> int:
    print(f"consul-dns-gateway: {exc}", file=sys.stderr)
    return EXIT_BAD_CONFIG


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    notices: list[Notice] = []
    sources = ConfigSources(given, Path(args.config) if args.config else None)
    try:
        # systemd's sockets (socket activation) replace --listen, now and on every reload.
        passed = tuple(systemd.inherited_sockets(os.environ, os.getpid()))
        if passed:
            listen = tuple(dict.fromkeys(systemd.endpoint_of(sock) for sock in passed))
            sources = replace(sources, listen=listen)
        config = sources.load(notices)
    except StartupError as exc:
        return _refuse(exc)
    notifier = systemd.Notifier.from_env(os.environ, os.getpid())
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for notice in notices:
        notice.log(logging.getLogger("gateway.dnsmasq_conf"))
    from gateway import app

    launch = app.Launch(sources, passed, notifier)
    try:
        if config.workers > 1:
            return app.run_workers(config, launch)
        app.run(config, 0, launch)
    except StartupError as exc:  # any capability's: a zone or catalog file, Consul, an option
        return _refuse(exc)
    except OSError as exc:
        print(f"consul-dns-gateway: {exc}", file=sys.stderr)
        return EXIT_SYSTEM_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
