"""One typed, frozen configuration; every option declared once, on its field.

Each field of :class:`Config` carries its option's declaration
(:func:`declare`): default, converter (type and range), environment variable,
whether it repeats, metavar and meaning. From these come the command-line
flags (``gateway.__main__``), the TOML keys (the field names), the
environment mapping (:func:`read_environment`), the checks of
:func:`convert`, and the README's option table (:func:`markdown_table`,
``python -m gateway.options --markdown``).

Sources, later ones winning: defaults, a dnsmasq configuration
(``--dnsmasq-conf``, read by ``gateway.dnsmasq_conf``), environment, a TOML
file (``--config``), command-line flags. Reading a source is one step
(:func:`read_toml`, :func:`read_environment`), checking its values another
(:func:`convert`); either raises :class:`ConfigError` naming the option and
the source (the file, "environment" or "command line").

:func:`build` returns the configuration as given: an unset ``upstream``,
``catalog`` or ``zones`` stays ``None``. :func:`with_system_defaults` fills
them from this machine (/etc/resolv.conf, the embedded files) and is called
once, where the gateway starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from gateway.errors import StartupError

if TYPE_CHECKING:  # both import from here
    from gateway.dnsmasq_conf import Notice
    from gateway.forward.rules import AddressRule, ServerRule

DEFAULT_DNS_PORT = 53
REPO_ROOT = Path(__file__).resolve().parent.parent
# The embedded default: shipped beside the package in the source tree.
EMBEDDED_CATALOG = REPO_ROOT / "zones" / "catalog"
EMBEDDED_ZONES = REPO_ROOT / "zones"
RESOLV_CONF = Path("/etc/resolv.conf")
DAY_SECONDS = 86400.0
# RFC 2181 section 8: a TTL is an unsigned 31-bit number of seconds.
MAX_TTL_SECONDS = 2**31 - 1
# Upper bound for durations that have no natural limit; catches typos in units.
MAX_DURATION_SECONDS = 10 * 365 * DAY_SECONDS

# --allow / --allow-recursion: the keyword for "loopback and the subnets of the
# interfaces we listen on" (dnsmasq's local-service), computed at start.
LOCAL_NETWORKS: Final = "local"
REFUSE_ACTIONS = ("refuse", "drop")
# --udp-batch: recvmmsg/sendmmsg where the compiled helper loads, or never.
UDP_BATCH_MODES = ("auto", "off")
CHAOS_ACTIONS = ("answer", "refuse")
ClientNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network | Literal["local"]


class ConfigError(StartupError, ValueError):
    """A bad setting; the message names the option and its source."""


# Linux interface names: at most IFNAMSIZ - 1 = 15 bytes, no '/', ':' or blanks.
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,15}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # an IP address; in --listen before start-up, maybe an interface name
    port: int

    @property
    def is_interface(self) -> bool:
        """True when ``host`` names an interface (``--listen lo``), not an address."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int | None) -> Endpoint:
    """HOST:PORT, [V6]:PORT, or HOST (then ``default_port``)."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"missing ']' in {text!r}")
        host = text[1:close]
        rest = text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':PORT' after ']' in {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} has no port (HOST:PORT)")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return Endpoint(host, port)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "yes", "1", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "no", "0", "off"}:
        return False
    raise ValueError(f"{value!r} is not true or false")


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is not a whole number")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if not lo <= number <= hi:
            raise ValueError(f"{number} is out of range {lo}-{hi}")
        return number

    return convert


def _float_range(lo: float, hi: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        except OverflowError:  # a TOML integer beyond any float
            raise ValueError(f"{str(value)[:20]}... is out of range {lo:g}-{hi:g}") from None
        if not lo <= number <= hi:
            raise ValueError(f"{number:g} is out of range {lo:g}-{hi:g}")
        return number

    return convert


def _domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a domain name")
    name = value.strip().strip(".").lower()
    labels = name.split(".")
    if not name or any(not lbl or len(lbl) > 63 for lbl in labels) or len(name) > 253:
        raise ValueError(f"{value!r} is not a valid domain name")
    if not all(ch.isalnum() or ch in "-_." for ch in name):
        raise ValueError(f"{value!r} has characters not allowed in a domain name")
    return name


def _label(value: Any) -> str:
    name = _domain(value)
    if "." in name:
        raise ValueError(f"{value!r} must be a single label")
    return name


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


def _path(value: Any) -> Path:
    return Path(_string(value)).expanduser()


def _existing_path(value: Any) -> Path:
    path = _path(value)
    try:
        path.stat()
    except FileNotFoundError:
        raise ValueError(f"{str(path)!r} does not exist") from None
    except OSError as exc:  # a name too long, a folder on the way unreadable
        raise ValueError(f"{str(path)[:200]!r}: {exc.strerror}") from None
    return path


def _url(value: Any) -> str:
    text = _string(value).strip()
    if "://" not in text:
        text = "http://" + text
    scheme = text.split("://", 1)[0]
    if scheme not in {"http", "https"}:
        raise ValueError(f"{value!r}: scheme must be http or https")
    return text.rstrip("/")


def _listen_endpoint(text: str) -> Endpoint:
    """HOST:PORT as for :func:`parse_endpoint`, or an interface name (``lo``, ``eth0:5353``).

    An interface stays a name here (``Endpoint.is_interface``); its addresses are
    read where the gateway starts (:func:`with_system_defaults`).
    """
    name, _, port_text = text.strip().partition(":")
    if (
        ":" in port_text
        or not _INTERFACE_NAME.fullmatch(name)
        or not Endpoint(name, 0).is_interface
    ):
        return parse_endpoint(text, DEFAULT_DNS_PORT)
    # The port as parse_endpoint checks it, with a stand-in address.
    return Endpoint(name, parse_endpoint(f"0.0.0.0:{port_text or DEFAULT_DNS_PORT}", None).port)


def _listen_list(value: Any) -> tuple[Endpoint, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("needs at least one HOST:PORT or interface name")
    return tuple(_listen_endpoint(_string(v)) for v in items)


def _upstream_list(value: Any) -> tuple[Endpoint, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(parse_endpoint(_string(v), DEFAULT_DNS_PORT) for v in items)


def _endpoint(value: Any) -> Endpoint:
    return parse_endpoint(_string(value), None)


def _ttl_map(value: Any) -> Mapping[str, int]:
    """``{"*": 5, "web": 30}`` in TOML, or ``web=30,*=5`` on the command line."""
    pairs: dict[str, Any]
    if isinstance(value, Mapping):
        pairs = dict(value)
    elif isinstance(value, str | list | tuple):
        items = value.split(",") if isinstance(value, str) else list(value)
        pairs = {}
        for item in items:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"{item!r} is not NAME=SECONDS")
            name, _, ttl = item.partition("=")
            pairs[name.strip()] = ttl.strip()
    else:
        raise ValueError(f"{value!r} is not a table of service name to seconds")
    result = {"*": 0}
    for name, ttl in pairs.items():
        result[str(name).lower()] = _TTL(ttl)
    return result


_BYTE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _byte_size(lo: int, hi: int) -> Callable[[Any], int]:
    """A size in bytes: a whole number, or one with a K, M or G suffix (powers of 1024)."""
    whole = _int_range(lo, hi)

    def convert(value: Any) -> int:
        if isinstance(value, str) and value[-1:].upper() in _BYTE_UNITS:
            digits = value[:-1].strip()
            if not digits.isdigit():
                raise ValueError(f"{value!r} is not a size (e.g. 64M)")
            return whole(int(digits) * _BYTE_UNITS[value[-1].upper()])
        return whole(value)

    return convert


def _log_level(value: Any) -> str:
    level = _string(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"{value!r} is not one of debug, info, warning, error")
    return level


def _network_list(value: Any) -> tuple[ClientNetwork, ...]:
    """CIDRs (a bare address is a /32 or /128) or the keyword ``local``."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError(f"needs at least one CIDR or {LOCAL_NETWORKS!r}")
    networks: list[ClientNetwork] = []
    for item in items:
        text = _string(item).strip()
        if text.lower() == LOCAL_NETWORKS:
            networks.append(LOCAL_NETWORKS)
            continue
        try:
            # Host bits are masked off (10.0.0.1/8 is 10.0.0.0/8), as iptables does.
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a CIDR (e.g. 10.0.0.0/8) or {LOCAL_NETWORKS!r}"
            ) from None
    return tuple(networks)


def _udp_batch(value: Any) -> str:
    mode = _string(value).lower()
    if mode not in UDP_BATCH_MODES:
        raise ValueError(f"{value!r} is not one of {', '.join(UDP_BATCH_MODES)}")
    return mode


def _chaos_action(value: Any) -> str:
    action = _string(value).lower()
    if action not in CHAOS_ACTIONS:
        raise ValueError(f"{value!r} is not one of {', '.join(CHAOS_ACTIONS)}")
    return action


def _path_list(value: Any) -> tuple[Path, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(_path(v) for v in items)


def _refuse_action(value: Any) -> str:
    action = _string(value).lower()
    if action not in REFUSE_ACTIONS:
        raise ValueError(f"{value!r} is not one of {', '.join(REFUSE_ACTIONS)}")
    return action


def _rule_list(parse_name: str) -> Callable[[Any], tuple[Any, ...]]:
    """A repeatable dnsmasq rule, parsed by ``gateway.forward.rules.<parse_name>``."""

    def convert(value: Any) -> tuple[Any, ...]:
        # Imported here: the rules module needs Endpoint from this one.
        from gateway.forward import rules

        parse = getattr(rules, parse_name)
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(parse(_string(v)) for v in items)

    return convert


_server_list = _rule_list("parse_server")
_rev_server_list = _rule_list("parse_rev_server")
_local_list = _rule_list("parse_local")
_address_list = _rule_list("parse_address")


def _domain_list(value: Any) -> tuple[str, ...]:
    """Domains, each also as dnsmasq's ``/a/b/`` list."""
    items = value if isinstance(value, list | tuple) else [value]
    names: list[str] = []
    for item in items:
        text = _string(item)
        parts = [p for p in text.split("/") if p] if text.startswith("/") else [text]
        if not parts:
            raise ValueError(f"{text!r} names no domain")
        names.extend(_domain(p) for p in parts)
    return tuple(names)


_SECONDS = _float_range(0.0, MAX_DURATION_SECONDS)
_TTL = _int_range(0, MAX_TTL_SECONDS)


@dataclass(frozen=True, slots=True)
class Option:
    """One option's declaration, as :func:`declare` puts it on its field.

    ``name`` and ``default`` are the field's; :data:`OPTIONS` fills them in.
    """

    convert: Callable[[Any], Any]  # raw value (str, TOML value) -> typed value; ValueError if bad
    meaning: str  # Markdown: the README's "meaning" column and, without backticks, --help
    metavar: str | None  # the value's placeholder in --help and the README; None for switches
    env: str | None  # environment variable that sets it (Consul's CONSUL_* conventions)
    repeatable: bool  # the flag may be given more than once; the values form a list
    default_text: str | None  # shown instead of the default where the value alone would mislead
    name: str = ""
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_switch(self) -> bool:
        """A boolean: ``--x`` and ``--no-x`` on the command line."""
        return self.convert is _as_bool

    @property
    def usage(self) -> str:
        if self.is_switch:
            return "--[no-]" + self.flag[2:]
        return f"{self.flag} {self.metavar}"

    @property
    def default_shown(self) -> str:
        """Markdown: the README's "default" column, and the default in --help."""
        shown = self.default_text if self.default_text is not None else _show(self.default)
        if self.env is None:
            return shown
        return f"`${self.env}`" if self.default is None else f"`${self.env}`, else {shown}"

    @property
    def help(self) -> str:
        return f"{_plain(self.meaning)} (default: {_plain(self.default_shown)})"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f"`{value}`"
    raise TypeError(f"{value!r} needs a default_text in its option declaration")


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


_OPTION = "option"  # the dataclass field metadata key of a declaration


def declare(
    convert: Callable[[Any], Any],
    meaning: str,
    *,
    metavar: str | None = None,
    env: str | None = None,
    repeatable: bool = False,
    default_text: str | None = None,
) -> dict[str, Option]:
    """The ``metadata`` of a :class:`Config` field that makes it an option."""
    return {_OPTION: Option(convert, meaning, metavar, env, repeatable, default_text)}


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the gateway can be told. Durations in seconds.

    Every field is an option: ``metadata=declare(...)`` holds its declaration.
    The order of the fields is the order of --help and of the README's table.
    """

    listen: tuple[Endpoint, ...] = field(
        # dnsmasq's default: both loopback addresses.
        default=(Endpoint("127.0.0.1", DEFAULT_DNS_PORT), Endpoint("::1", DEFAULT_DNS_PORT)),
        metadata=declare(
            _listen_list,
            "serve DNS on UDP and TCP; repeatable; IPv6 as `[::1]:53`; an interface name "
            "(`lo`, `docker0:53`) means its addresses, as dnsmasq's `interface=`",
            metavar="HOST:PORT",
            repeatable=True,
            default_text="`127.0.0.1:53` and `[::1]:53`",
        ),
    )
    upstream: tuple[Endpoint, ...] | None = field(
        default=None,  # None: from /etc/resolv.conf, by with_system_defaults()
        metadata=declare(
            _upstream_list,
            "upstream resolver for non-Consul names; repeatable, tried in order with failover",
            metavar="HOST[:PORT]",
            repeatable=True,
            default_text="the nameservers of `/etc/resolv.conf` minus our own listen addresses",
        ),
    )
    catalog: Path | None = field(
        default=None,
        metadata=declare(
            _existing_path,
            "Consul service-definition JSON files (file or folder)",
            metavar="PATH",
            default_text="`zones/catalog` without `--consul`",
        ),
    )
    zones: Path | None = field(
        default=None,
        metadata=declare(
            _existing_path,
            "RFC 1035 zone files (`*.zone`, `*.db`), served authoritatively",
            metavar="PATH",
            default_text="`zones/`",
        ),
    )
    zone_include: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "allow `$INCLUDE` in zone files (it reads any file the gateway can read)",
        ),
    )
    hosts: bool = field(
        default=True,
        metadata=declare(
            _as_bool,
            "answer names and addresses of `--hosts-file` (dnsmasq's `no-hosts` turns it off)",
        ),
    )
    hosts_file: Path = field(
        default=Path("/etc/hosts"),
        metadata=declare(
            _path,
            "the system hosts file read with `--hosts`; re-read when it changes or on SIGHUP",
            metavar="FILE",
            default_text="`/etc/hosts`",
        ),
    )
    addn_hosts: tuple[Path, ...] = field(
        default=(),
        metadata=declare(
            _path_list,
            "more hosts files (dnsmasq's `addn-hosts`), read even with `--no-hosts`; repeatable",
            metavar="FILE",
            repeatable=True,
            default_text="none",
        ),
    )
    local_ttl: int = field(
        default=0,
        metadata=declare(
            _TTL,
            "TTL of answers from hosts files and local names (dnsmasq's `local-ttl`)",
            metavar="S",
        ),
    )
    chaos: str = field(
        default="answer",
        metadata=declare(
            _chaos_action,
            "CHAOS-class `version.bind`, `hostname.bind`, `id.server`: `answer` (our version, "
            "the host name) or `refuse`; never forwarded",
            metavar="ACTION",
        ),
    )
    log_queries: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "one log line per query: client, name, type, rcode, answerer, latency",
        ),
    )
    domain: str = field(
        default="consul", metadata=declare(_domain, "the Consul domain", metavar="NAME")
    )
    alt_domain: str | None = field(
        default=None,
        metadata=declare(_domain, "a second domain answered like `--domain`", metavar="NAME"),
    )
    dnsmasq_conf: Path | None = field(
        default=None,
        metadata=declare(
            _path,
            "a dnsmasq configuration to run with (its `conf-file=`, `conf-dir=` followed); "
            "environment, TOML and flags override it (see Coming from dnsmasq)",
            metavar="FILE",
        ),
    )
    datacenter: str = field(
        default="dc1", metadata=declare(_label, "the local datacenter", metavar="NAME")
    )
    # Consul (issue: live catalog)
    consul: str | None = field(
        default=None,
        metadata=declare(
            _url,
            "Consul HTTP API, e.g. `http://127.0.0.1:8500`",
            metavar="URL",
            env="CONSUL_HTTP_ADDR",
        ),
    )
    consul_token: str | None = field(
        default=None,
        repr=False,
        metadata=declare(
            _string,
            "ACL token, sent as `X-Consul-Token`, never logged",
            metavar="TOKEN",
            env="CONSUL_HTTP_TOKEN",
        ),
    )
    consul_ca: Path | None = field(
        default=None,
        metadata=declare(
            _existing_path, "CA bundle for TLS to Consul", metavar="FILE", env="CONSUL_CACERT"
        ),
    )
    consul_cert: Path | None = field(
        default=None,
        metadata=declare(
            _existing_path,
            "client certificate for TLS to Consul",
            metavar="FILE",
            env="CONSUL_CLIENT_CERT",
        ),
    )
    consul_key: Path | None = field(
        default=None,
        metadata=declare(
            _existing_path, "client key for TLS to Consul", metavar="FILE", env="CONSUL_CLIENT_KEY"
        ),
    )
    consul_tls_verify: bool = field(
        default=True,
        metadata=declare(_as_bool, "verify Consul's certificate", env="CONSUL_HTTP_SSL_VERIFY"),
    )
    consul_watch_all: bool = field(
        default=False,
        metadata=declare(_as_bool, "watch every service up front instead of from its first query"),
    )
    consul_max_stale: float = field(
        default=10.0,
        metadata=declare(
            _SECONDS, "accept stale reads while `X-Consul-LastContact` is below this", metavar="S"
        ),
    )
    consul_view_max_age: float = field(
        default=3600.0,
        metadata=declare(
            _SECONDS,
            "answer from the last good view this long while Consul is away, then SERVFAIL",
            metavar="S",
        ),
    )
    consul_idle_unwatch: float = field(
        default=600.0,
        metadata=declare(
            _float_range(1.0, 30 * DAY_SECONDS),
            "stop watching a service nobody asked for in this long",
            metavar="S",
        ),
    )
    consul_first_query_timeout: float = field(
        default=2.0,
        metadata=declare(
            _float_range(0.05, 30.0),
            "how long the first query of an unwatched service waits for Consul",
            metavar="S",
        ),
    )
    consul_max_connections: int = field(
        default=150,
        metadata=declare(
            _int_range(4, 100_000),
            "HTTP connections to Consul at most; keep below Consul's "
            "`limits.http_max_conns_per_client` (200)",
            metavar="N",
        ),
    )
    consul_wait: float = field(
        default=60.0, metadata=declare(_float_range(1.0, 600.0), "blocking-query wait", metavar="S")
    )
    # Catalog answers
    only_passing: bool = field(
        default=False, metadata=declare(_as_bool, "drop instances whose worst check is warning")
    )
    a_record_limit: int = field(
        default=0,
        metadata=declare(
            _int_range(0, 10_000),
            "at most N A/AAAA records: a weighted sample",
            metavar="N",
            default_text="0 (all)",
        ),
    )
    service_ttl: Mapping[str, int] = field(
        default_factory=lambda: {"*": 0},
        metadata=declare(
            _ttl_map,
            "TTL per service, `*` for the rest; repeatable (TOML: a table)",
            metavar="NAME=S",
            repeatable=True,
            default_text="`*=0`",
        ),
    )
    node_ttl: int = field(
        default=0, metadata=declare(_TTL, "TTL of node, addr and PTR answers", metavar="S")
    )
    node_meta_txt: bool = field(
        default=True,
        metadata=declare(
            _as_bool,
            "node meta as TXT in the additional section "
            "(Consul's `enable_additional_node_meta_txt`)",
        ),
    )
    soa_refresh: int = field(
        default=3600, metadata=declare(_TTL, "SOA refresh of the Consul domain", metavar="S")
    )
    soa_retry: int = field(
        default=600, metadata=declare(_TTL, "SOA retry of the Consul domain", metavar="S")
    )
    soa_expire: int = field(
        default=86400, metadata=declare(_TTL, "SOA expire of the Consul domain", metavar="S")
    )
    soa_min_ttl: int = field(
        default=0,
        metadata=declare(
            _TTL,
            "SOA minimum of the Consul domain: the negative-caching TTL downstream",
            metavar="S",
        ),
    )
    # Transport
    udp_max_payload: int = field(
        default=1232,
        metadata=declare(
            _int_range(512, 65535),
            "largest UDP answer to EDNS clients (DNS flag day 2020; dnsmasq `edns-packet-max`)",
            metavar="N",
        ),
    )
    udp_batch: str = field(
        default="auto",
        metadata=declare(
            _udp_batch,
            "UDP reads and answers in batches (`recvmmsg`/`sendmmsg`): `auto` where the "
            "compiled helper loads, `off` for the pure-Python loop",
            metavar="MODE",
        ),
    )
    tcp_idle_timeout: float = field(
        default=10.0,
        metadata=declare(_float_range(0.1, 3600.0), "close idle TCP connections", metavar="S"),
    )
    tcp_max_connections: int = field(
        default=1024,
        metadata=declare(
            _int_range(1, 1_000_000),
            "concurrent TCP connections per worker; at the limit the oldest idle one is closed",
            metavar="N",
        ),
    )
    tcp_max_per_client: int = field(
        default=64,
        metadata=declare(
            _int_range(1, 1_000_000),
            "concurrent TCP connections from one address: a NAT gateway fits, "
            "one host cannot hold the server's slots",
            metavar="N",
        ),
    )
    tcp_message_timeout: float = field(
        default=2.0,
        metadata=declare(
            _float_range(0.05, 3600.0),
            "a started TCP message must be complete within this, however it trickles in: "
            "room for one lost segment (initial RTO 1 s, RFC 6298)",
            metavar="S",
        ),
    )
    tcp_max_pipelined: int = field(
        default=64,
        metadata=declare(
            _int_range(1, 65535),
            "unanswered queries per TCP connection before it is no longer read "
            "(more than stubs and forwarders keep in flight)",
            metavar="N",
        ),
    )
    tcp_max_queued_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=declare(
            _int_range(65536, 2**40),
            "reply bytes waiting for slow TCP readers, all connections together; above it "
            "the connection with the most is closed (256 of the largest answers at once)",
            metavar="BYTES",
            default_text="16777216 (16 MiB)",
        ),
    )
    workers: int = field(
        default=1,
        metadata=declare(
            _int_range(1, 256), "processes sharing the ports with `SO_REUSEPORT`", metavar="N"
        ),
    )
    # Running as a service (gateway.service)
    user: str | None = field(
        default=None,
        metadata=declare(
            _string,
            "after binding the listen sockets as root, switch to this user (and its group) "
            "before answering any query",
            metavar="NAME",
            default_text="none (stay who we are)",
        ),
    )
    group: str | None = field(
        default=None,
        metadata=declare(
            _string, "the group for `--user`", metavar="NAME", default_text="the user's group"
        ),
    )
    stop_timeout: float = field(
        default=5.0,
        metadata=declare(
            _float_range(0.0, 600.0),
            "on SIGTERM, how long queries in flight and queued TCP replies may take before "
            "the rest is dropped (forwarded queries end at `--forward-deadline` anyway)",
            metavar="S",
        ),
    )
    # Access control and rate limiting
    allow: tuple[ClientNetwork, ...] = field(
        default=(LOCAL_NETWORKS,),
        metadata=declare(
            _network_list,
            "clients that may query at all (CIDR, or `local`); repeatable; "
            "loopback always may; others get `--refuse-action`",
            metavar="CIDR",
            repeatable=True,
            default_text="`local`: loopback and the subnets of the interfaces we listen on",
        ),
    )
    allow_recursion: tuple[ClientNetwork, ...] = field(
        default=(LOCAL_NETWORKS,),
        metadata=declare(
            _network_list,
            "clients (also in `--allow`) that get forwarded answers; others get "
            "`--refuse-action` for names that would be forwarded; repeatable",
            metavar="CIDR",
            repeatable=True,
            default_text="`local`",
        ),
    )
    refuse_action: str = field(
        default="refuse",
        metadata=declare(
            _refuse_action,
            "what clients outside `--allow`/`--allow-recursion` get: `refuse` (REFUSED) or "
            "`drop` (no reply)",
            metavar="ACTION",
        ),
    )
    rate_limit: int = field(
        default=0,
        metadata=declare(
            _int_range(0, 1_000_000),
            "UDP responses per second per client block (/24, /56) and answer (BIND's RRL); "
            "0 disables",
            metavar="N",
            default_text="0 (off)",
        ),
    )
    rate_limit_window: float = field(
        default=15.0,
        metadata=declare(
            _float_range(1.0, 3600.0),
            "RRL window: after a flood, a limited block waits up to this long before it "
            "is answered again",
            metavar="S",
        ),
    )
    rate_limit_slip: int = field(
        default=2,
        metadata=declare(
            _int_range(0, 10),
            "every Nth rate-limited response goes out as an empty TC=1 reply (the client "
            "retries over TCP), the others are dropped; 0 drops all",
            metavar="N",
        ),
    )
    max_amplification: int = field(
        default=10,
        metadata=declare(
            _int_range(0, 1000),
            "UDP answers to non-loopback clients are at most N times the query's size, "
            "else cut with TC=1; 0 disables",
            metavar="N",
        ),
    )
    limit_loopback: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "apply `--rate-limit` and `--max-amplification` to loopback clients too (tests)",
        ),
    )
    # Forwarder and cache
    forward_timeout: float = field(
        default=1.0,
        metadata=declare(
            _float_range(0.01, 30.0), "wait per upstream before trying the next", metavar="S"
        ),
    )
    forward_deadline: float = field(
        default=3.0,
        metadata=declare(
            _float_range(0.01, 120.0),
            "total time for a forwarded query; then stale or SERVFAIL",
            metavar="S",
        ),
    )
    forward_max_inflight: int = field(
        default=1024,
        metadata=declare(
            _int_range(1, 1_000_000),
            "distinct upstream queries in flight; more get SERVFAIL "
            "(dnsmasq `dns-forward-max`, default 150 there)",
            metavar="N",
        ),
    )
    # dnsmasq's forwarding policy (gateway.forward.rules, gateway.forward.private)
    server: tuple[ServerRule, ...] = field(
        default=(),
        metadata=declare(
            _server_list,
            "dnsmasq's `server=`: `IP[#PORT]` a standard upstream (with the resolv file's); "
            "`/DOM/[DOM/]IP[#PORT]` names under DOM go there (longest domain wins); "
            "`/DOM/#` DOM goes to the standard upstreams; `/DOM/` local only; repeatable",
            metavar="RULE",
            repeatable=True,
            default_text="none",
        ),
    )
    rev_server: tuple[ServerRule, ...] = field(
        default=(),
        metadata=declare(
            _rev_server_list,
            "dnsmasq's `rev-server=`: the reverse zone of the range goes to that upstream; "
            "repeatable",
            metavar="CIDR,IP[#PORT]",
            repeatable=True,
            default_text="none",
        ),
    )
    local: tuple[ServerRule, ...] = field(
        default=(),
        metadata=declare(
            _local_list,
            "dnsmasq's `local=`: names under DOM are answered from local data only, "
            "else NXDOMAIN, never forwarded; repeatable",
            metavar="/DOM/[DOM/]",
            repeatable=True,
            default_text="none",
        ),
    )
    address: tuple[AddressRule, ...] = field(
        default=(),
        metadata=declare(
            _address_list,
            "dnsmasq's `address=`: DOM and every name under it get this A or AAAA (other "
            "questions go on upstream); `/DOM/#` 0.0.0.0 and ::; `/DOM/` NXDOMAIN; repeatable",
            metavar="/DOM/[DOM/]IP",
            repeatable=True,
            default_text="none",
        ),
    )
    domain_needed: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "A and AAAA questions for names without a dot are never forwarded: "
            "NXDOMAIN unless local data has them (dnsmasq `domain-needed`)",
        ),
    )
    bogus_priv: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "PTR questions for private addresses (RFC 6303) get NXDOMAIN instead of going "
            "upstream, unless a `--server`/`--rev-server` covers them (dnsmasq `bogus-priv`)",
        ),
    )
    stop_dns_rebind: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "an upstream answer with a private or loopback A/AAAA becomes an empty NOERROR; "
            "the Consul domains exempt (dnsmasq `stop-dns-rebind`)",
        ),
    )
    rebind_domain_ok: tuple[str, ...] = field(
        default=(),
        metadata=declare(
            _domain_list,
            "names under this domain are exempt from `--stop-dns-rebind`; repeatable, "
            "also dnsmasq's `/DOM/[DOM/]` (dnsmasq `rebind-domain-ok`)",
            metavar="DOM",
            repeatable=True,
            default_text="none",
        ),
    )
    resolv_file: Path = field(
        default=RESOLV_CONF,
        metadata=declare(
            _path,
            "where the standard upstreams come from when `--upstream` is not given "
            "(dnsmasq `resolv-file`)",
            metavar="FILE",
            default_text="`/etc/resolv.conf`",
        ),
    )
    resolv: bool = field(
        default=True,
        metadata=declare(
            _as_bool,
            "read `--resolv-file`; `--no-resolv` is dnsmasq's `no-resolv` (`--upstream` also "
            "turns it off)",
        ),
    )
    poll_resolv: bool = field(
        default=True,
        metadata=declare(
            _as_bool,
            "re-read `--resolv-file` when it changes; `--no-poll-resolv` is dnsmasq's `no-poll`",
        ),
    )
    strict_order: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "ask the upstreams always in the order given, never reordered by failures "
            "(dnsmasq `strict-order`)",
        ),
    )
    all_servers: bool = field(
        default=False,
        metadata=declare(
            _as_bool,
            "send each question to every upstream at once, the first answer wins "
            "(dnsmasq `all-servers`)",
        ),
    )
    neg_ttl: int = field(
        default=0,
        metadata=declare(
            _TTL,
            "cache negative answers that carry no SOA this long; 0: not cached (dnsmasq `neg-ttl`)",
            metavar="S",
        ),
    )
    max_ttl: int = field(
        default=0,
        metadata=declare(
            _TTL,
            "largest TTL handed to clients for forwarded answers (the cache keeps the real "
            "one); 0: no bound (dnsmasq `max-ttl`)",
            metavar="S",
            default_text="0 (off)",
        ),
    )
    negcache: bool = field(
        default=True,
        metadata=declare(
            _as_bool,
            "cache negative answers (NXDOMAIN, NODATA); `--no-negcache` is dnsmasq's `no-negcache`",
        ),
    )
    cache_size: int = field(
        default=100_000,
        metadata=declare(
            _int_range(0, 100_000_000),
            "forwarded answers kept (LRU); 0 disables (dnsmasq `cache-size`)",
            metavar="N",
        ),
    )
    cache_min_ttl: int = field(
        default=0,
        metadata=declare(_TTL, "lower bound on cached TTLs (dnsmasq `min-cache-ttl`)", metavar="S"),
    )
    cache_max_ttl: int = field(
        default=86400,
        metadata=declare(_TTL, "upper bound on cached TTLs (dnsmasq `max-cache-ttl`)", metavar="S"),
    )
    cache_negative_max_ttl: int = field(
        default=3600, metadata=declare(_TTL, "upper bound on negative-cache TTLs", metavar="S")
    )
    serve_stale: float = field(
        default=86400.0,
        metadata=declare(
            _SECONDS,
            "serve expired answers this long when every upstream fails (RFC 8767); 0 disables",
            metavar="S",
        ),
    )
    stale_answer_ttl: int = field(
        default=30, metadata=declare(_TTL, "TTL of stale answers (RFC 8767 §4)", metavar="S")
    )
    stale_answer_client_timeout: float = field(
        default=1.8,
        metadata=declare(
            _float_range(0.0, 120.0),
            "a client waiting this long for an upstream gets the stale answer, if one is kept, "
            "while the refresh goes on (RFC 8767 §5); 0 disables",
            metavar="S",
        ),
    )
    cache_max_bytes: int = field(
        default=32 << 20,
        metadata=declare(
            _byte_size(1 << 20, 1 << 40),
            "memory for forwarded answers (estimated; suffix K, M, G), least recently used go",
            metavar="BYTES",
            default_text="32M",
        ),
    )
    prepared_max_bytes: int = field(
        default=32 << 20,
        metadata=declare(
            _byte_size(1 << 20, 1 << 40),
            "memory for catalog and zone answers kept ready to send (estimated; suffix K, M, G)",
            metavar="BYTES",
            default_text="32M",
        ),
    )
    # Operations
    log_level: str = field(
        default="info",
        metadata=declare(
            _log_level, "how much to log: debug, info, warning, error", metavar="LEVEL"
        ),
    )
    metrics_listen: Endpoint | None = field(
        default=None,
        metadata=declare(
            _endpoint,
            "HTTP endpoint: Prometheus metrics at /metrics, /health and /ready",
            metavar="HOST:PORT",
            default_text="off",
        ),
    )

    def ttl_for_service(self, name: str) -> int:
        ttl = self.service_ttl.get(name.lower())
        if ttl is None:
            ttl = self.service_ttl.get("*", 0)
        return ttl

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.domain,) if self.alt_domain is None else (self.domain, self.alt_domain)


def _declared(f: dataclasses.Field[Any]) -> Option:
    declared = f.metadata.get(_OPTION)
    assert isinstance(declared, Option), f"Config.{f.name} needs metadata=declare(...)"
    # A switch shows as --[no-]x, everything else as --x METAVAR.
    assert (declared.metavar is None) == (declared.convert is _as_bool), f.name
    default = f.default_factory() if callable(f.default_factory) else f.default
    return replace(declared, name=f.name, default=default)


# Every option, in Config's field order: the one list the rest is derived from.
OPTIONS: tuple[Option, ...] = tuple(_declared(f) for f in fields(Config))
_BY_NAME: dict[str, Option] = {opt.name: opt for opt in OPTIONS}


def convert(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Checks raw values from one source; errors name option and source."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        declared = _BY_NAME.get(name)
        if declared is None:
            raise ConfigError(f"{source}: unknown option {key!r}")
        try:
            out[name] = declared.convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: option {key!r}: {exc}") from None
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """The file's raw keys and values, unchecked; errors name the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 (tomllib decodes before parsing)
        raise ConfigError(
            f"{path}: not valid TOML: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None


def toml_key_lines(path: Path, raw: Mapping[str, Any]) -> dict[str, int]:
    """The line (from 1) where each top-level key of ``raw`` is set in the file.

    tomllib gives values, not positions; an error about a value should still
    point at its line. A key is found as ``key =`` or as a ``[key]`` table
    header, bare or quoted; a key not found has no entry.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, int] = {}
    in_table = False  # top-level keys come before the first [table] header
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = True
            key = stripped.lstrip("[").split("]", 1)[0].strip()
        elif not in_table and "=" in stripped:
            key = stripped.split("=", 1)[0].strip()
        else:
            continue
        key = key.strip("\"'")
        if key in raw and key not in found:
            found[key] = number
    return found


def read_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The raw values of the declared variables (the CONSUL_* conventions of Consul's tools).

    An empty variable counts as unset, as in Consul's own tools.
    """
    return {opt.name: env[opt.env] for opt in OPTIONS if opt.env is not None and env.get(opt.env)}


def build(
    cli: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    notices: list[Notice] | None = None,
) -> Config:
    """Defaults < dnsmasq configuration < environment < TOML file < command line,
    then cross-checks.

    Reads nothing but the given files (the TOML file, ``dnsmasq_conf`` and what
    it includes): see :func:`with_system_defaults`. What the dnsmasq
    configuration has to say (options of no effect here, the Consul domain
    taken over by the catalog) is appended to ``notices``, to be logged once
    logging is set up.
    """
    merged: dict[str, Any] = {}
    merged.update(convert(read_environment(os.environ if env is None else env), "environment"))
    if config_file is not None:
        raw = read_toml(config_file)
        lines = toml_key_lines(config_file, raw)
        for key, value in raw.items():
            # file:line, as compilers say it, where the key's line is found.
            line = lines.get(key)
            where = f"{config_file}:{line}" if line is not None else str(config_file)
            merged.update(convert({key: value}, where))
    merged.update(convert(cli, "command line"))
    dnsmasq_path = merged.get("dnsmasq_conf")
    if dnsmasq_path is not None:
        # Imported here: gateway.dnsmasq_conf builds on this module's declarations.
        from gateway import dnsmasq_conf

        domain = merged.get("domain", _BY_NAME["domain"].default)
        alt_domain = merged.get("alt_domain")
        context = dnsmasq_conf.Context(
            consul_domains=(domain,) if alt_domain is None else (domain, alt_domain),
            consul_url=merged.get("consul"),
        )
        below, found = dnsmasq_conf.load(dnsmasq_path, context)
        if notices is not None:
            notices.extend(found)
        merged = {**below, **merged}
    return check(Config(**merged), config_file)


def check(config: Config, config_file: Path | None) -> Config:
    """Rules that involve more than one option."""
    source = str(config_file) if config_file else "command line"
    if config.cache_min_ttl > config.cache_max_ttl:
        raise ConfigError(f"{source}: option 'cache_min_ttl' is above 'cache_max_ttl'")
    if config.forward_timeout > config.forward_deadline:
        raise ConfigError(f"{source}: option 'forward_timeout' is above 'forward_deadline'")
    if config.alt_domain is not None and config.alt_domain == config.domain:
        raise ConfigError(f"{source}: option 'alt_domain' equals 'domain'")
    if (config.consul_cert is None) != (config.consul_key is None):
        raise ConfigError(f"{source}: options 'consul_cert' and 'consul_key' go together")
    if config.strict_order and config.all_servers:
        raise ConfigError(f"{source}: options 'strict_order' and 'all_servers' exclude each other")
    if config.upstream is not None and config.resolv:
        # An explicit upstream list replaces the resolv file (as it always has).
        config = replace(config, resolv=False)
    return config


def with_system_defaults(
    config: Config, resolv_conf: Path | None = None, *, user_config: bool = False
) -> Config:
    """The defaults that depend on this machine, for what the config leaves unset.

    Interface names in ``listen`` become their addresses; upstreams come
    from ``resolv_conf`` (default: ``--resolv-file``; minus our own listen
    addresses) unless ``--no-resolv``; without Consul, the embedded static
    catalog. The embedded zones (the ``home.arpa`` demo) only make up the
    embedded default: not with Consul, nor with a configuration file of the
    user's (``user_config``), unless ``--zones`` names them.
    """
    if any(ep.is_interface for ep in config.listen):
        config = replace(config, listen=resolve_interfaces(config.listen))
    if config.upstream is None:
        resolv = resolv_conf if resolv_conf is not None else config.resolv_file
        found = system_upstreams(config.listen, resolv) if config.resolv else ()
        config = replace(config, upstream=found)
    if config.catalog is None and config.consul is None and EMBEDDED_CATALOG.is_dir():
        config = replace(config, catalog=EMBEDDED_CATALOG)
    embedded = config.consul is None and not user_config
    if config.zones is None and embedded and EMBEDDED_ZONES.is_dir():
        config = replace(config, zones=EMBEDDED_ZONES)
    return config


def resolve_interfaces(listen: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
    """``listen`` with each interface name replaced by that interface's addresses.

    Reads this machine's interfaces (rtnetlink); an unknown interface, or one
    without a usable address, is a ConfigError naming it.
    """
    from gateway.server import interfaces  # the edge reading the kernel's tables

    try:
        known = interfaces.read_addresses()
    except OSError as exc:
        raise ConfigError(f"option 'listen': cannot read the interfaces: {exc}") from None
    resolved: list[Endpoint] = []
    for ep in listen:
        if not ep.is_interface:
            resolved.append(ep)
            continue
        try:
            hosts = interfaces.addresses_of(ep.host, known)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"option 'listen': {exc}") from None
        resolved.extend(Endpoint(host, ep.port) for host in hosts)
    # The same address twice (an interface and its address both given) binds once.
    return tuple(dict.fromkeys(resolved))


def system_upstreams(
    listen: tuple[Endpoint, ...], resolv_conf: Path = RESOLV_CONF
) -> tuple[Endpoint, ...]:
    """Nameservers of resolv.conf, minus any address we listen on ourselves.

    Without this, making the gateway the system's nameserver would have it
    forward to itself in a loop.
    """
    try:
        text = resolv_conf.read_text()
    except OSError:
        return ()
    found: list[Endpoint] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            host = parts[1].split("%")[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                continue
            candidate = Endpoint(host, DEFAULT_DNS_PORT)
            if not _is_self(candidate, listen):
                found.append(candidate)
    return tuple(found)


def _is_self(candidate: Endpoint, listen: tuple[Endpoint, ...]) -> bool:
    address = ipaddress.ip_address(candidate.host)
    for ep in listen:
        if ep.port != candidate.port:
            continue
        bound = ipaddress.ip_address(ep.host)
        if bound == address:
            return True
        # A wildcard listener answers on every local address, loopback included.
        if bound.is_unspecified and (address.is_loopback or address.is_unspecified):
            return True
    return False


def markdown_table() -> str:
    """The README's option table (section "Configuration"), one row per option."""
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for opt in OPTIONS:
        cells = (f"`{opt.usage}`", opt.default_shown, opt.meaning)
        assert not any("|" in cell for cell in cells), f"{opt.name}: '|' would split the row"
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.options --markdown``: print the README's option table."""
    parser = argparse.ArgumentParser(prog="python -m gateway.options")
    parser.add_argument(
        "--markdown", action="store_true", required=True, help="print the README's option table"
    )
    parser.parse_args(argv)
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
