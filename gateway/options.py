"""One typed, frozen configuration, parsed and validated in one place.

Sources, later ones winning: built-in defaults, a TOML file (``--config``),
command-line flags. Every TOML key is the flag's name with ``_`` for ``-``.
Unknown keys and bad values raise :class:`ConfigError` naming the option
and where it came from (the file, or "command line").
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.errors import StartupError

DEFAULT_DNS_PORT = 53
REPO_ROOT = Path(__file__).resolve().parent.parent
# The embedded default: shipped beside the package in the source tree.
EMBEDDED_CATALOG = REPO_ROOT / "zones" / "catalog"
EMBEDDED_ZONES = REPO_ROOT / "zones"
RESOLV_CONF = Path("/etc/resolv.conf")


class ConfigError(StartupError, ValueError):
    """A bad setting; the message names the option and its source."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the gateway can be told. Durations in seconds."""

    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", DEFAULT_DNS_PORT),)
    upstream: tuple[Endpoint, ...] | None = None  # None: from /etc/resolv.conf
    catalog: Path | None = None
    zones: Path | None = None
    domain: str = "consul"
    alt_domain: str | None = None
    datacenter: str = "dc1"
    # Consul (issue: live catalog)
    consul: str | None = None
    consul_token: str | None = field(default=None, repr=False)
    consul_ca: Path | None = None
    consul_cert: Path | None = None
    consul_key: Path | None = None
    consul_tls_verify: bool = True
    consul_watch_all: bool = False
    consul_max_stale: float = 10.0
    consul_view_max_age: float = 3600.0
    consul_idle_unwatch: float = 600.0
    consul_first_query_timeout: float = 2.0
    consul_wait: float = 60.0
    # Catalog answers
    only_passing: bool = False
    a_record_limit: int = 0
    service_ttl: Mapping[str, int] = field(default_factory=lambda: {"*": 0})
    node_ttl: int = 0
    node_meta_txt: bool = True
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    soa_min_ttl: int = 0
    # Transport
    udp_max_payload: int = 1232
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1024
    workers: int = 1
    # Forwarder and cache
    forward_timeout: float = 1.0
    forward_deadline: float = 3.0
    forward_max_inflight: int = 1024
    cache_size: int = 100_000
    cache_min_ttl: int = 0
    cache_max_ttl: int = 86400
    cache_negative_max_ttl: int = 3600
    serve_stale: float = 86400.0
    stale_answer_ttl: int = 30
    # Operations
    log_level: str = "info"
    metrics_listen: Endpoint | None = None

    def ttl_for_service(self, name: str) -> int:
        ttl = self.service_ttl.get(name.lower())
        if ttl is None:
            ttl = self.service_ttl.get("*", 0)
        return ttl

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.domain,) if self.alt_domain is None else (self.domain, self.alt_domain)


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
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    return path


def _url(value: Any) -> str:
    text = _string(value).strip()
    if "://" not in text:
        text = "http://" + text
    scheme = text.split("://", 1)[0]
    if scheme not in {"http", "https"}:
        raise ValueError(f"{value!r}: scheme must be http or https")
    return text.rstrip("/")


def _listen_list(value: Any) -> tuple[Endpoint, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("needs at least one HOST:PORT")
    return tuple(parse_endpoint(_string(v), DEFAULT_DNS_PORT) for v in items)


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
    ttl_of = _int_range(0, 2**31 - 1)
    result = {"*": 0}
    for name, ttl in pairs.items():
        result[str(name).lower()] = ttl_of(ttl)
    return result


def _log_level(value: Any) -> str:
    level = _string(value).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"{value!r} is not one of debug, info, warning, error")
    return level


_SECONDS = _float_range(0.0, 10 * 365 * 86400.0)
_TTL = _int_range(0, 2**31 - 1)

# One converter per option: the single place where values are checked.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "listen": _listen_list,
    "upstream": _upstream_list,
    "catalog": _existing_path,
    "zones": _existing_path,
    "domain": _domain,
    "alt_domain": _domain,
    "datacenter": _label,
    "consul": _url,
    "consul_token": _string,
    "consul_ca": _existing_path,
    "consul_cert": _existing_path,
    "consul_key": _existing_path,
    "consul_tls_verify": _as_bool,
    "consul_watch_all": _as_bool,
    "consul_max_stale": _SECONDS,
    "consul_view_max_age": _SECONDS,
    "consul_idle_unwatch": _float_range(1.0, 30 * 86400.0),
    "consul_first_query_timeout": _float_range(0.05, 30.0),
    "consul_wait": _float_range(1.0, 600.0),
    "only_passing": _as_bool,
    "a_record_limit": _int_range(0, 10_000),
    "service_ttl": _ttl_map,
    "node_ttl": _TTL,
    "node_meta_txt": _as_bool,
    "soa_refresh": _TTL,
    "soa_retry": _TTL,
    "soa_expire": _TTL,
    "soa_min_ttl": _TTL,
    "udp_max_payload": _int_range(512, 65535),
    "tcp_idle_timeout": _float_range(0.1, 3600.0),
    "tcp_max_connections": _int_range(1, 1_000_000),
    "workers": _int_range(1, 256),
    "forward_timeout": _float_range(0.01, 30.0),
    "forward_deadline": _float_range(0.01, 120.0),
    "forward_max_inflight": _int_range(1, 1_000_000),
    "cache_size": _int_range(0, 100_000_000),
    "cache_min_ttl": _TTL,
    "cache_max_ttl": _TTL,
    "cache_negative_max_ttl": _TTL,
    "serve_stale": _SECONDS,
    "stale_answer_ttl": _TTL,
    "log_level": _log_level,
    "metrics_listen": _endpoint,
}

assert set(CONVERTERS) == {f.name for f in fields(Config)}, "every option needs a converter"


def convert(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Checks raw values from one source; errors name option and source."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        converter = CONVERTERS.get(name)
        if converter is None:
            raise ConfigError(f"{source}: unknown option {key!r}")
        try:
            out[name] = converter(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: option {key!r}: {exc}") from None
    return out


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return convert(data, str(path))


def from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The CONSUL_HTTP_* conventions every Consul tool follows."""
    mapping = {
        "CONSUL_HTTP_ADDR": "consul",
        "CONSUL_HTTP_TOKEN": "consul_token",
        "CONSUL_CACERT": "consul_ca",
        "CONSUL_CLIENT_CERT": "consul_cert",
        "CONSUL_CLIENT_KEY": "consul_key",
    }
    raw = {opt: env[var] for var, opt in mapping.items() if env.get(var)}
    if env.get("CONSUL_HTTP_SSL_VERIFY"):
        raw["consul_tls_verify"] = env["CONSUL_HTTP_SSL_VERIFY"]
    return convert(raw, "environment")


def build(
    cli: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Defaults < environment < TOML file < command line, then cross-checks."""
    merged: dict[str, Any] = {}
    merged.update(from_environment(os.environ if env is None else env))
    if config_file is not None:
        merged.update(load_toml(config_file))
    merged.update(convert(cli, "command line"))
    config = Config(**merged)
    return check(config, config_file)


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
    if config.upstream is None:
        config = replace(config, upstream=system_upstreams(config.listen))
    if config.catalog is None and config.consul is None and EMBEDDED_CATALOG.is_dir():
        config = replace(config, catalog=EMBEDDED_CATALOG)
    if config.zones is None and EMBEDDED_ZONES.is_dir():
        config = replace(config, zones=EMBEDDED_ZONES)
    return config


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
