"""``--dnsmasq-conf FILE``: a dnsmasq configuration as a source of option values.

Three steps, the first and last pure:

1. :func:`parse_text` splits one file into :class:`Directive` values with
   dnsmasq's own rules (``man dnsmasq``, CONFIG FILE): one option per line,
   ``name`` or ``name=value`` (spaces around ``=`` allowed), ``#`` starts a
   comment at the start of a line or after white space, ``"…"`` quotes hide
   ``#`` and white space and allow ``\\\\ \\" \\t \\e \\b \\r \\n``. We also take a
   leading ``--`` (a line pasted from a command line), which dnsmasq rejects.
2. :func:`read_directives` follows ``conf-file=``, ``conf-dir=DIR[,ext…]`` and
   ``servers-file=`` through a :class:`Files` edge (the real file system by
   default, a dict in tests).
3. :func:`translate` maps the directives to raw values of our options, by
   name (``Config``'s fields), and notices to log. Every dnsmasq option is
   in exactly one table: mapped, of no effect here (a warning naming file and
   line), or not supported (a :class:`~gateway.options.ConfigError` naming
   file and line); a name dnsmasq does not know is an error too.

:func:`load` runs the three and converts each value with its option's own
converter, so a bad value is reported at its file and line.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.options import DEFAULT_DNS_PORT, OPTIONS, ConfigError

# dnsmasq caps min-cache-ttl at one hour "unless recompiled" (man dnsmasq).
DNSMASQ_MIN_CACHE_TTL_LIMIT_S = 3600
# conf-file/conf-dir nesting beyond this is a loop (dnsmasq itself would recurse
# until it runs out of file descriptors).
MAX_INCLUDE_DEPTH = 16
# Escapes allowed inside "…" in a dnsmasq config file, and what they stand for.
_QUOTE_ESCAPES = {"\\": "\\", '"': '"', "t": "\t", "e": "\x1b", "b": "\b", "r": "\r", "n": "\n"}
WILDCARD_LISTEN = ("0.0.0.0", "::")
LOOPBACK_LISTEN = ("127.0.0.1", "::1")
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
LOOPBACK_INTERFACE = "lo"


@dataclass(frozen=True, slots=True)
class Directive:
    """One option line: ``name`` without ``--``, ``value`` None when there is no ``=``."""

    file: str
    line: int
    name: str
    value: str | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def text(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"

    def error(self, problem: str) -> ConfigError:
        """dnsmasq's "… at line N of FILE", as FILE:LINE: OPTION: problem."""
        return ConfigError(f"{self.where}: {self.text}: {problem}")


@dataclass(frozen=True, slots=True)
class Notice:
    """Something to log once the logger is set up; ``warning`` or info."""

    message: str
    warning: bool = True

    def log(self, logger: logging.Logger) -> None:
        logger.log(logging.WARNING if self.warning else logging.INFO, "%s", self.message)


# -- step 1: one file's text -> directives ----------------------------------


def parse_text(text: str, file: str) -> list[Directive]:
    """The option lines of one file, comments and blank lines gone."""
    found: list[Directive] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = _strip_line(raw, file, number)
        if not content:
            continue
        name, sep, value = content.partition("=")
        name = name.strip()
        if name.startswith("--"):
            name = name[2:]
        if not name or " " in name:
            raise ConfigError(f"{file}:{number}: {content}: bad option")
        found.append(Directive(file, number, name, value.strip() if sep else None))
    return found


def _strip_line(raw: str, file: str, number: int) -> str:
    """dnsmasq's read_file(): quotes, white space to one kind, comments, trimmed."""
    out: list[str] = []
    white = True  # at the start of a line or after white space: '#' opens a comment
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == '"':
            close = i + 1
            while close < len(raw) and raw[close] != '"':
                if raw[close] == "\\" and close + 1 < len(raw) and raw[close + 1] in _QUOTE_ESCAPES:
                    out.append(_QUOTE_ESCAPES[raw[close + 1]])
                    close += 2
                    continue
                out.append(raw[close])
                close += 1
            if close >= len(raw):
                raise ConfigError(f'{file}:{number}: missing "')
            i = close + 1
            white = False
            continue
        if ch.isspace():
            out.append(" ")
            white = True
        elif white and ch == "#":
            break
        else:
            out.append(ch)
            white = False
        i += 1
    return "".join(out).strip(" ")


# -- step 2: files, conf-file and conf-dir -----------------------------------


class Files(Protocol):
    """The file system as the reader sees it; each method raises OSError."""

    def read_text(self, path: Path) -> str: ...

    def regular_files(self, folder: Path) -> list[str]:
        """Names of the regular files in ``folder`` (not sorted)."""
        ...


class SystemFiles:
    """The real file system."""

    def read_text(self, path: Path) -> str:
        data = path.read_bytes()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 text") from None

    def regular_files(self, folder: Path) -> list[str]:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.is_file()]


def read_directives(path: Path, files: Files | None = None) -> list[Directive]:
    """Every directive of ``path`` and the files it includes, in dnsmasq's order.

    An included file's directives take the place of its ``conf-file=`` line;
    ``conf-dir`` files come in alphabetical order.
    """
    return _read_file(path, files or SystemFiles(), None, (), servers_only=False)


def _read_file(
    path: Path,
    files: Files,
    included_by: Directive | None,
    stack: tuple[Path, ...],
    *,
    servers_only: bool,
) -> list[Directive]:
    prefix = f"{included_by.where}: {included_by.text}" if included_by else f"--dnsmasq-conf {path}"
    if len(stack) >= MAX_INCLUDE_DEPTH or path in stack:
        raise ConfigError(f"{prefix}: includes itself (through {' -> '.join(map(str, stack))})")
    try:
        text = files.read_text(path)
    except OSError as exc:
        raise ConfigError(f"{prefix}: cannot read {path}: {exc.strerror}") from None
    out: list[Directive] = []
    for directive in parse_text(text, str(path)):
        if servers_only and directive.name not in {"server", "rev-server"}:
            # dnsmasq: "illegal option" in a servers-file.
            raise directive.error("only server= and rev-server= may be in a servers-file")
        if directive.name == "conf-file":
            out.extend(
                _read_file(
                    _value_path(directive), files, directive, (*stack, path), servers_only=False
                )
            )
        elif directive.name == "servers-file":
            out.extend(
                _read_file(
                    _value_path(directive), files, directive, (*stack, path), servers_only=True
                )
            )
            out.append(directive)  # translate() says it is read once, at start
        elif directive.name == "conf-dir":
            for included in _conf_dir_files(directive, files):
                out.extend(
                    _read_file(included, files, directive, (*stack, path), servers_only=False)
                )
        else:
            out.append(directive)
    return out


def _value_path(directive: Directive) -> Path:
    if not directive.value:
        raise directive.error("missing parameter")
    if directive.value == "-":
        raise directive.error("reading the configuration from stdin is not supported")
    return Path(directive.value)


def conf_dir_selects(name: str, extensions: Sequence[str]) -> bool:
    """dnsmasq's conf-dir rule for one file name.

    Always skipped: names ending in ``~``, starting with ``.``, or starting and
    ending with ``#``. With ``*.ext`` entries only those suffixes are read;
    other entries are suffixes to skip.
    """
    if name.endswith("~") or name.startswith(".") or (len(name) > 1 and name[0] == name[-1] == "#"):
        return False
    wanted = [e[1:] for e in extensions if e.startswith("*")]
    if wanted:
        return any(name.endswith(suffix) for suffix in wanted)
    return not any(name.endswith(e) for e in extensions if e)


def _conf_dir_files(directive: Directive, files: Files) -> list[Path]:
    parts = [p.strip() for p in (directive.value or "").split(",")]
    if not parts[0]:
        raise directive.error("missing parameter")
    folder = Path(parts[0])
    try:
        names = files.regular_files(folder)
    except OSError as exc:
        raise directive.error(f"cannot access directory {folder}: {exc.strerror}") from None
    return [folder / n for n in sorted(names) if conf_dir_selects(n, parts[1:])]


# -- step 3: directives -> our options ---------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What the translation needs from the other sources (flags, environment, TOML)."""

    consul_domains: tuple[str, ...] = ("consul",)
    consul_url: str | None = None


@dataclass
class Translation:
    """Raw option values (for ``Config``'s converters), where each came from, notices."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, list[tuple[Directive, Any]]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)

    def set(self, name: str, value: Any, directive: Directive) -> None:
        self.values[name] = value
        self.origin[name] = [(directive, value)]

    def add(self, name: str, value: Any, directive: Directive) -> None:
        self.values.setdefault(name, []).append(value)
        self.origin.setdefault(name, []).append((directive, [value]))

    def warn(self, directive: Directive, message: str) -> None:
        self.notices.append(Notice(f"{directive.where}: {directive.text}: {message}"))


@dataclass
class _Listening:
    """listen-address, interface, port and local-service, combined at the end."""

    addresses: list[tuple[str, Directive]] = field(default_factory=list)
    interfaces: list[tuple[str, Directive]] = field(default_factory=list)
    port: int = DEFAULT_DNS_PORT
    port_directive: Directive | None = None
    local_service: Directive | None = None


_Handler = Callable[[Directive, Translation, _Listening, Context], None]

# Options that take no value, and those that need one (dnsmasq: "extraneous
# parameter", "missing parameter"). Options with an optional value are in neither.
_SWITCHES = frozenset(
    {
        "no-resolv",
        "no-poll",
        "no-hosts",
        "domain-needed",
        "bogus-priv",
        "stop-dns-rebind",
        "strict-order",
        "all-servers",
        "no-negcache",
        "no-ident",
    }
)


def _switch(option: str, value: bool) -> _Handler:
    def handle(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
        out.set(option, value, d)

    return handle


def _single(option: str) -> _Handler:
    def handle(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
        out.set(option, d.value, d)

    return handle


def _repeated(option: str) -> _Handler:
    def handle(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
        out.add(option, d.value, d)

    return handle


def _server(d: Directive, out: Translation, _listen: _Listening, ctx: Context) -> None:
    """server=: the Consul domain's servers give way to the live catalog when we have one."""
    value = d.value or ""
    if not value.startswith("/") or ctx.consul_url is None:
        out.add("server", value, d)
        return
    *domains, address = value[1:].split("/")
    kept = [dom for dom in domains if not _under(dom, ctx.consul_domains)]
    if len(kept) == len(domains):
        out.add("server", value, d)
        return
    out.notices.append(
        Notice(
            f"{d.where}: {d.text}: {', '.join(ctx.consul_domains)} answered from the live "
            f"catalog of {ctx.consul_url} instead",
            warning=False,
        )
    )
    if kept:
        out.add("server", "/" + "/".join(kept) + "/" + address, d)


def _local(d: Directive, out: Translation, listen: _Listening, ctx: Context) -> None:
    """local= is dnsmasq's alias of server=; only the ``/DOM/`` form means "local only"."""
    value = d.value or ""
    if value.startswith("/") and value.endswith("/"):
        out.add("local", value, d)
    else:
        _server(d, out, listen, ctx)


def _no_ident(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
    # dnsmasq then does not answer CHAOS *.bind itself; we never forward them: REFUSED.
    out.set("chaos", "refuse", d)


def _under(domain: str, parents: Iterable[str]) -> bool:
    name = domain.strip().strip(".").lower().lstrip("*").lstrip(".")
    return any(name == p or name.endswith("." + p) for p in parents)


def _resolv_file(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
    if d.value is None or not d.value:
        # dnsmasq: resolv-file with no name replaces the default with nothing.
        out.set("resolv", False, d)
        return
    if "resolv_file" in out.values:
        raise d.error(
            "more than one resolv-file (dnsmasq polls them all and uses the newest) "
            "is not supported: give one"
        )
    out.set("resolv_file", d.value, d)


def _rebind_domain_ok(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
    value = d.value or ""
    names = [n for n in value.split("/") if n] if value.startswith("/") else [value]
    for name in names:
        out.add("rebind_domain_ok", name, d)


def _log_queries(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
    if d.value not in {None, "extra", "proto", "auth"}:
        raise d.error("the value may be extra, proto or auth")
    out.set("log_queries", True, d)


def _min_cache_ttl(d: Directive, out: Translation, _listen: _Listening, _ctx: Context) -> None:
    value = d.value or ""
    if value.isdigit() and int(value) > DNSMASQ_MIN_CACHE_TTL_LIMIT_S:
        out.warn(d, f"dnsmasq limits this to {DNSMASQ_MIN_CACHE_TTL_LIMIT_S}; so do we")
        value = str(DNSMASQ_MIN_CACHE_TTL_LIMIT_S)
    out.set("cache_min_ttl", value, d)


def _listen_address(d: Directive, _out: Translation, listen: _Listening, _ctx: Context) -> None:
    for item in (d.value or "").split(","):
        address = item.strip()
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise d.error(f"{address!r} is not an IP address") from None
        listen.addresses.append((address, d))


def _interface(d: Directive, _out: Translation, listen: _Listening, _ctx: Context) -> None:
    for item in (d.value or "").split(","):
        name = item.strip()
        if not name:
            raise d.error("missing parameter")
        if name.endswith("*"):
            raise d.error("interface wildcards are not supported: name each interface")
        listen.interfaces.append((name, d))


def _port(d: Directive, _out: Translation, listen: _Listening, _ctx: Context) -> None:
    value = d.value or ""
    if not value.isdigit() or int(value) > 65535:
        raise d.error(f"{value!r} is not a port number (0-65535)")
    if int(value) == 0:
        raise d.error("port 0 turns DNS off in dnsmasq; the gateway serves DNS only")
    listen.port = int(value)
    listen.port_directive = d


def _local_service(d: Directive, _out: Translation, listen: _Listening, _ctx: Context) -> None:
    if d.value not in {None, "net", "host"}:
        raise d.error("the value may be net or host")
    listen.local_service = d


_MAPPED: dict[str, _Handler] = {
    "server": _server,
    "local": _local,
    "address": _repeated("address"),
    "rev-server": _repeated("rev_server"),
    "no-resolv": _switch("resolv", False),
    "resolv-file": _resolv_file,
    "no-poll": _switch("poll_resolv", False),
    "no-hosts": _switch("hosts", False),
    "addn-hosts": _repeated("addn_hosts"),
    "domain-needed": _switch("domain_needed", True),
    "bogus-priv": _switch("bogus_priv", True),
    "stop-dns-rebind": _switch("stop_dns_rebind", True),
    "rebind-domain-ok": _rebind_domain_ok,
    "strict-order": _switch("strict_order", True),
    "all-servers": _switch("all_servers", True),
    "listen-address": _listen_address,
    "interface": _interface,
    "port": _port,
    "local-service": _local_service,
    "cache-size": _single("cache_size"),
    "neg-ttl": _single("neg_ttl"),
    "local-ttl": _single("local_ttl"),
    "max-ttl": _single("max_ttl"),
    "min-cache-ttl": _min_cache_ttl,
    "max-cache-ttl": _single("cache_max_ttl"),
    "no-negcache": _switch("negcache", False),
    "dns-forward-max": _single("forward_max_inflight"),
    "edns-packet-max": _single("udp_max_payload"),
    "max-tcp-connections": _single("tcp_max_connections"),
    "log-queries": _log_queries,
    "no-ident": _no_ident,
}

_DHCP = "DHCP is not served here"
_TFTP = "TFTP is not served here"
_RA = "router advertisements are not sent here"
_PROCESS = "process management: run the gateway under systemd (see deploy/) instead"

# Options that change nothing about DNS answers here: a warning naming file and line.
NO_EFFECT: dict[str, str] = {
    "bind-interfaces": "the gateway always binds each listen address itself",
    "bind-dynamic": "the gateway binds its listen addresses at start; addresses that appear "
    "later count from the next start",
    "user": _PROCESS,
    "group": _PROCESS,
    "pid-file": _PROCESS,
    "keep-in-foreground": "the gateway always runs in the foreground",
    "no-daemon": "the gateway always runs in the foreground",
    "log-facility": "the gateway logs to stderr",
    "log-async": "the gateway logs to stderr",
    "log-debug": "use --log-level debug",
    "enable-dbus": "there is no D-Bus interface: upstreams come from the configuration",
    "enable-ubus": "there is no ubus interface: upstreams come from the configuration",
    "query-port": "upstream queries always use random source ports (RFC 5452)",
    "min-port": "upstream queries always use random source ports (RFC 5452)",
    "max-port": "upstream queries always use random source ports (RFC 5452)",
    "port-limit": "upstream queries always use random source ports (RFC 5452)",
    "no-round-robin": "the order of forwarded records is the upstream's",
    "cache-rr": "every record type is cached",
    "clear-on-reload": "cached answers keep their TTLs when the upstreams change",
    "dns-loop-detect": "the gateway never takes its own listen addresses as upstreams",
    "dumpfile": "packet dumps are not written",
    "dumpmask": "packet dumps are not written",
    "domain": "it names the domain of DHCP clients; " + _DHCP,
    "read-ethers": _DHCP,
    "no-ping": _DHCP,
    "bootp-dynamic": _DHCP,
    "leasefile-ro": _DHCP,
    "script-arp": _DHCP,
    "script-on-renewal": _DHCP,
    "tag-if": _DHCP,
    "bridge-interface": _DHCP,
    "shared-network": _DHCP,
    "log-dhcp": _DHCP,
    "quiet-dhcp": _DHCP,
    "quiet-dhcp6": _DHCP,
    "no-dhcp-interface": _DHCP,
    "no-dhcpv4-interface": _DHCP,
    "no-dhcpv6-interface": _DHCP,
    "enable-tftp": _TFTP,
    "quiet-tftp": _TFTP,
    "pxe-prompt": _TFTP,
    "pxe-service": _TFTP,
    "enable-ra": _RA,
    "ra-param": _RA,
    "quiet-ra": _RA,
}
_NO_EFFECT_PREFIXES = {"dhcp-": _DHCP, "tftp-": _TFTP}

_RECORDS = (
    "records defined in the dnsmasq configuration are not supported: "
    "put them in a zone file under --zones"
)
_DNSSEC = "DNSSEC validation is not done here (DNSSEC records and the AD bit are passed through)"
_AUTH = "dnsmasq's authoritative mode is not supported: serve the zone from a file under --zones"
_EDNS = "EDNS options are not added to or removed from upstream queries"
_FIREWALL = "firewall sets are not filled from answers"
_FILTER = "answers are not filtered or rewritten"
_UNSUPPORTED_GROUPS = {
    _RECORDS: "cname host-record txt-record srv-host mx-host mx-target localmx selfmx ptr-record "
    "naptr-record caa-record dns-rr interface-name synth-domain dynamic-host",
    _DNSSEC: "dnssec dnssec-check-unsigned dnssec-debug dnssec-limits dnssec-no-timecheck "
    "dnssec-timestamp trust-anchor proxy-dnssec",
    _AUTH: "auth-server auth-zone auth-soa auth-sec-servers auth-peer auth-ttl",
    _EDNS: "add-cpe-id add-mac add-subnet strip-mac strip-subnet umbrella",
    _FIREWALL: "ipset nftset connmark-allowlist connmark-allowlist-enable conntrack",
    _FILTER: "filterwin2k filter-A filter-AAAA filter-rr bogus-nxdomain ignore-address alias",
}

# dnsmasq options that would change answers and that the gateway does not do:
# start-up stops with an error naming file and line.
UNSUPPORTED: dict[str, str] = {
    **{name: why for why, names in _UNSUPPORTED_GROUPS.items() for name in names.split()},
    "expand-hosts": "hosts-file names are answered as written; write the full names",
    "hostsdir": "use addn-hosts= with the folder (read at start and on SIGHUP)",
    "localise-queries": "hosts-file answers do not depend on the interface a query came in on",
    "rebind-localhost-ok": "not supported",
    "except-interface": "name the interfaces or addresses to listen on instead",
    "use-stale-cache": "stale answers are served only when upstreams fail "
    "(see --serve-stale, --stale-answer-client-timeout)",
    "fast-dns-retry": "the gateway retries with --forward-timeout and --forward-deadline",
    "conf-script": "running a program to make configuration is not supported",
    "test": "a command, not a setting",
    "help": "a command, not a setting",
    "version": "a command, not a setting",
}


def _no_effect(name: str) -> str | None:
    """Why ``name`` changes nothing here, or None if it does."""
    if name in NO_EFFECT:
        return NO_EFFECT[name]
    return next((why for p, why in _NO_EFFECT_PREFIXES.items() if name.startswith(p)), None)


# Options read by read_directives() before translation.
_INCLUDES = frozenset({"conf-file", "conf-dir"})


def translate(directives: Iterable[Directive], context: Context) -> Translation:
    """Our options' raw values for the directives, or a ConfigError at the first bad one."""
    out = Translation()
    listen = _Listening()
    single_seen: dict[str, Directive] = {}
    for d in directives:
        handler = _MAPPED.get(d.name)
        if handler is not None:
            _check_arity(d)
            if d.name in _ONCE:
                if d.name in single_seen:
                    first = single_seen[d.name]
                    raise d.error(f"illegal repeated keyword (first at {first.where})")
                single_seen[d.name] = d
            handler(d, out, listen, context)
        elif d.name == "servers-file":
            out.warn(d, "read once at start; SIGHUP does not re-read it")
        elif d.name in _INCLUDES:
            pass  # only if handed in unread; read_directives() follows them
        elif (why := _no_effect(d.name)) is not None:
            out.warn(d, f"no effect here: {why}")
        elif d.name in UNSUPPORTED:
            raise d.error(f"not supported: {UNSUPPORTED[d.name]}")
        else:
            raise d.error("unknown option (dnsmasq: bad option)")
    _finish_listening(listen, out)
    return out


# dnsmasq's ARG_ONE options among the mapped ones: given twice in files, it stops
# with "illegal repeated keyword".
_ONCE = frozenset(
    {
        "port",
        "cache-size",
        "neg-ttl",
        "local-ttl",
        "max-ttl",
        "min-cache-ttl",
        "max-cache-ttl",
        "dns-forward-max",
        "edns-packet-max",
        "max-tcp-connections",
    }
)
# Mapped options whose value is optional.
_OPTIONAL_VALUE = frozenset({"log-queries", "local-service", "resolv-file"})


def _check_arity(d: Directive) -> None:
    if d.name in _SWITCHES:
        if d.value is not None:
            raise d.error("extraneous parameter")
    elif d.name not in _OPTIONAL_VALUE and d.value is None:
        raise d.error("missing parameter")


def _finish_listening(listen: _Listening, out: Translation) -> None:
    """dnsmasq's rules: interface= adds lo; neither it nor listen-address: every interface.

    A file that says nothing about listening still sets ``listen``: dnsmasq would
    serve every interface on port 53, and so does the gateway unless flags,
    environment or TOML say otherwise.
    """
    service = listen.local_service
    chosen = [*listen.addresses, *listen.interfaces]
    if service is not None and chosen:
        out.warn(service, "no effect with interface= or listen-address= (as in dnsmasq)")
        service = None
    if service is not None and service.value == "host":
        # "listens only on lo interface and accepts queries from localhost only"
        hosts = list(LOOPBACK_LISTEN)
        out.set("allow", list(LOOPBACK_NETWORKS), service)
        out.set("allow_recursion", list(LOOPBACK_NETWORKS), service)
    elif chosen:
        hosts = [a for a, _ in listen.addresses]
        names = [n for n, _ in listen.interfaces]
        if names and LOOPBACK_INTERFACE not in names:
            names.append(LOOPBACK_INTERFACE)  # "dnsmasq automatically adds the loopback"
        hosts += names
    else:
        hosts = list(WILDCARD_LISTEN)
        if service is not None:  # our `local` is dnsmasq's local-service
            out.set("allow", ["local"], service)
            out.set("allow_recursion", ["local"], service)
    values = [_listen_value(h, listen.port) for h in hosts]
    out.values["listen"] = values
    anchor = chosen[0][1] if chosen else (listen.port_directive or service)
    out.origin["listen"] = [] if anchor is None else [(anchor, values)]


def _listen_value(host: str, port: int) -> str:
    """A ``listen`` value: an address or an interface name, with the port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- all three, and the conversion --------------------------------------------


def convert(translation: Translation) -> dict[str, Any]:
    """Typed values by ``Config``'s own converters; a bad value names its file and line."""
    declared = {opt.name: opt for opt in OPTIONS}
    typed: dict[str, Any] = {}
    for name, raw in translation.values.items():
        option = declared.get(name)
        origin = translation.origin.get(name, [])
        if option is None:
            d = origin[0][0] if origin else None
            where = f"{d.where}: {d.text}" if d else "--dnsmasq-conf"
            raise ConfigError(f"{where}: not supported by this build (no option {name!r})")
        for d, part in origin:  # each line alone first, so an error names its line
            try:
                option.convert(part)
            except ValueError as exc:
                raise d.error(str(exc)) from None
        try:
            typed[name] = option.convert(raw)
        except ValueError as exc:
            where = origin[0][0].where if origin else "--dnsmasq-conf"
            raise ConfigError(f"{where}: option {name!r}: {exc}") from None
    return typed


def load(
    path: Path, context: Context, files: Files | None = None
) -> tuple[dict[str, Any], list[Notice]]:
    """The typed option values of a dnsmasq configuration, and what to log about it."""
    translation = translate(read_directives(path, files), context)
    return convert(translation), translation.notices


def describe(name: str) -> str:
    """What happens to one dnsmasq option: for the README's table and tests."""
    if name in _MAPPED:
        return "mapped"
    if _no_effect(name) is not None:
        return "warning"
    if name in UNSUPPORTED:
        return "error"
    if name in _INCLUDES or name == "servers-file":
        return "followed"
    return "unknown"
