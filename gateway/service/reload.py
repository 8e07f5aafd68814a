"""What a SIGHUP reads again, and which options it cannot change.

A reload builds a whole new :class:`~gateway.options.Config` from the same
sources as the start did (:class:`ConfigSources`: the same command-line
flags, the same ``--config`` file read again, the environment), so editing
the TOML file and sending SIGHUP is how every option is changed. Some
options are bound to what exists once at start — sockets, processes, the
user we switched to, the Consul client and its watches — and a new value
for them takes a restart: :func:`settle` keeps their old values and says
which they were, so the reload goes ahead with everything else.

Pure logic: the reloader in ``gateway.app`` does the reading (in a thread)
and the swap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway import options
from gateway.dnsmasq_conf import Notice
from gateway.options import Config, Endpoint

# Options bound to sockets, processes and the process's user: a restart.
RESTART_ALWAYS = ("listen", "workers", "user", "group", "metrics_listen", "udp_batch")
# With Consul, the client and its watches are built from these once.
RESTART_WITH_CONSUL = (
    "consul",
    "consul_token",
    "consul_ca",
    "consul_cert",
    "consul_key",
    "consul_tls_verify",
    "consul_watch_all",
    "consul_max_stale",
    "consul_view_max_age",
    "consul_idle_unwatch",
    "consul_wait",
    "datacenter",
)


@dataclass(frozen=True)
class ConfigSources:
    """How the running configuration was made, to make it again on SIGHUP.

    ``listen``: the endpoints of sockets systemd passed (socket activation),
    which replace ``--listen`` whatever the sources say.
    """

    cli: Mapping[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    listen: tuple[Endpoint, ...] | None = None

    def load(self, notices: list[Notice] | None = None) -> Config:
        """The configuration as the sources say now; ConfigError naming option, file, line.

        ``notices`` collects what a dnsmasq configuration has to say (options of no
        effect here), for the caller to log once logging is set up.
        """
        config = options.build(self.cli, config_file=self.config_file, notices=notices)
        if self.listen is not None:
            config = replace(config, listen=self.listen)
        # The demo zone only with no configuration of the user's: a TOML file or a
        # dnsmasq configuration.
        user_config = self.config_file is not None or config.dnsmasq_conf is not None
        return options.with_system_defaults(config, user_config=user_config)


def restart_only(config: Config) -> tuple[str, ...]:
    """The options a reload cannot change for a gateway running with ``config``."""
    if config.consul is None:
        # Without Consul, a new --consul would need the client: a restart too.
        return (*RESTART_ALWAYS, "consul")
    if config.workers > 1:
        # The shared watcher process layers the catalog files under Consul's view.
        return (*RESTART_ALWAYS, *RESTART_WITH_CONSUL, "catalog")
    return RESTART_ALWAYS + RESTART_WITH_CONSUL


def settle(old: Config, new: Config) -> tuple[Config, tuple[str, ...]]:
    """``new`` with the restart-only options kept as in ``old``; the ones that differed."""
    differ = tuple(name for name in restart_only(old) if getattr(old, name) != getattr(new, name))
    if not differ:
        return new, ()
    return replace(new, **{name: getattr(old, name) for name in differ}), differ


def changed(old: Config, new: Config) -> tuple[str, ...]:
    """The options whose values differ, in declaration order (for the log)."""
    return tuple(
        opt.name for opt in options.OPTIONS if getattr(old, opt.name) != getattr(new, opt.name)
    )
