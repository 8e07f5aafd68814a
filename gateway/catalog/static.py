"""A catalog from Consul agent configuration files, for use without Consul.

Each JSON file is what ``consul agent -config-dir`` reads: ``service`` (one)
or ``services`` (a list) with name, id, address, port, tags, meta, weights
and checks, plus the agent-level keys that place them: ``node_name``,
``advertise_addr`` (or ``bind_addr``), ``datacenter``, ``node_meta``.
A check's initial ``status`` (passing/warning/critical, as Consul accepts
it) sets the instance's health, so demos and tests can show weighting by
health with files Consul itself would load. Connect is expressed as Consul
expresses it: ``connect.native`` makes an instance answer ``<name>.connect``,
and a ``kind: connect-proxy`` definition answers ``<destination>.connect``
(``proxy.destination_service_name``). Virtual IPs (Consul allocates them)
and ingress gateways (a config entry lists their services) cannot be said in
a service definition, so ``.virtual`` and ``.ingress`` stay empty. Keys are accepted in Consul's
snake_case and CamelCase spellings.

Everything is checked here, at load, so that a file either loads whole or
is refused with its name and the problem: every value has the type the
answers need, and every name an answer is built from (node, datacenter,
service, host addresses) becomes a DNS name under each domain. Garbage
that loaded could otherwise fail on every query that touches it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import dns.exception
import dns.name

from gateway.catalog.model import (
    CONNECT,
    CRITICAL,
    PASSING,
    WARNING,
    Instance,
    Node,
    Snapshot,
    worst_status,
)
from gateway.errors import StartupError

DEFAULT_NODE = "static"
DEFAULT_NODE_ADDRESS = "127.0.0.1"
_SERVICE_KEYS = {
    "name", "id", "address", "port", "tags", "meta", "weights", "check", "checks",
    "enable_tag_override", "kind", "token", "tagged_addresses", "connect", "proxy",
    "socket_path", "namespace", "partition", "locality",
}  # fmt: skip
_AGENT_KEYS = {
    "service", "services", "node_name", "advertise_addr", "bind_addr", "datacenter",
    "node_meta",
}  # fmt: skip
# Consul's limits on node and service meta (agent/structs ValidateMetadata):
# they keep the node-meta TXT records of an answer small.
MAX_META_PAIRS = 64
MAX_META_KEY_CHARS = 128
MAX_META_VALUE_CHARS = 512
# RFC 1035 2.3.4: a label is at most 63 octets.
MAX_LABEL_BYTES = 63
# The longest owner an answer builds from a catalog name: "<hex of an IPv6
# address>.addr.<dc>.<domain>" (32 characters) is longer than
# "<node>.node.<dc>.<domain>" only for short node names; both are checked.
_ADDR_LABEL = "0" * 32


CONNECT_PROXY = "connect-proxy"


class CatalogFileError(StartupError):
    """A service-definition file that cannot be used; names the file and key."""


class Loaded(NamedTuple):
    """One service definition: its instance, and the service whose
    ``<name>.connect`` it answers (None: not Connect-capable)."""

    instance: Instance
    connect_for: str | None


def _snake(key: str) -> str:
    out = []
    for i, ch in enumerate(key):
        if ch.isupper() and i and not key[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _normalise(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {_snake(k): v for k, v in obj.items()}


def _known_keys(obj: Any, allowed: set[str], where: str, not_object: str) -> dict[str, Any]:
    """A JSON object with snake_case keys, all of them ``allowed``."""
    if not isinstance(obj, dict):
        raise CatalogFileError(f"{where}: {not_object}")
    normal = _normalise(obj)
    unknown = set(normal) - allowed
    if unknown:
        raise CatalogFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return normal


def load(path: Path, default_datacenter: str, domains: tuple[str, ...] = ("consul",)) -> Snapshot:
    """Reads a file or every ``*.json`` in a folder (sorted) into a snapshot.

    ``domains`` are the domains the names are answered under: every name an
    answer builds from the files must fit in a DNS name below each of them.
    """
    services: dict[tuple[str, str], list[Instance]] = {}
    connect: dict[tuple[str, str], list[Instance]] = {}
    nodes: dict[tuple[str, str], Node] = {}
    for file in catalog_files(path):
        for inst, connect_for in load_file(file, default_datacenter, domains):
            dc = inst.node.datacenter
            services.setdefault((dc, inst.service.lower()), []).append(inst)
            if connect_for is not None:
                connect.setdefault((dc, connect_for.lower()), []).append(inst)
            nodes[(dc, inst.node.name.lower())] = inst.node
    return Snapshot(
        services={k: tuple(v) for k, v in services.items()},
        endpoints={CONNECT: {k: tuple(v) for k, v in connect.items()}},
        nodes=nodes,
        datacenters=frozenset(dc for dc, _ in nodes) | {default_datacenter},
        complete=True,
    )


def catalog_files(path: Path) -> list[Path]:
    """The ``*.json`` files of a folder (sorted), or the file itself.

    A folder that cannot be listed is an error, not an empty catalog.
    """
    try:
        if not path.is_dir():
            return [path]
        return sorted(p for p in path.iterdir() if p.suffix == ".json")
    except OSError as exc:
        raise CatalogFileError(f"{path}: cannot read the catalog folder: {exc.strerror}") from None


def load_file(
    file: Path, default_datacenter: str, domains: tuple[str, ...] = ("consul",)
) -> list[Loaded]:
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise CatalogFileError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        reason = f"{exc.reason} at byte {exc.start}"
        raise CatalogFileError(f"{file}: not UTF-8 text: {reason}") from None
    except RecursionError:
        raise CatalogFileError(f"{file}: not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise CatalogFileError(f"{file}: not valid JSON: {exc}") from None
    agent = _known_keys(
        data, _AGENT_KEYS, str(file), "expected a JSON object with 'service' or 'services'"
    )
    node = Node(
        name=_label(_text(agent, "node_name", file, DEFAULT_NODE), "node_name", str(file)),
        address=_host(
            _text(agent, "advertise_addr", file, "")
            or _text(agent, "bind_addr", file, DEFAULT_NODE_ADDRESS),
            "advertise_addr",
            str(file),
        ),
        datacenter=_label(
            _text(agent, "datacenter", file, default_datacenter), "datacenter", str(file)
        ).lower(),
        meta=_string_map(agent.get("node_meta", {}), "node_meta", file),
    )
    _check_names_fit(node, str(file), domains)
    raw: list[Any] = []
    if "service" in agent:
        raw.append(agent["service"])
    if "services" in agent:
        if not isinstance(agent["services"], list):
            raise CatalogFileError(f"{file}: key 'services' must be a list")
        raw.extend(agent["services"])
    return [_instance(item, node, file, i, domains) for i, item in enumerate(raw)]


def _instance(item: Any, node: Node, file: Path, index: int, domains: tuple[str, ...]) -> Loaded:
    where = f"{file}: service #{index + 1}"
    svc = _known_keys(item, _SERVICE_KEYS, where, "expected an object")
    name = svc.get("name")
    if not isinstance(name, str) or not name:
        raise CatalogFileError(f"{where}: key 'name' is required")
    where = f"{file}: service {name!r}"
    _label(name, "name", where)
    for domain in domains:
        # PTR answers name a service address "<name>.service.<dc>.<domain>".
        _fits(f"{name}.service.{node.datacenter}.{domain}", "name", where)
    port = svc.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise CatalogFileError(f"{where}: key 'port' must be 0-65535")
    tags = svc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CatalogFileError(f"{where}: key 'tags' must be a list of strings")
    weights = svc.get("weights") or {}
    if not isinstance(weights, dict):
        raise CatalogFileError(f"{where}: key 'weights' must be an object")
    weights = _normalise(weights)
    passing = weights.get("passing", 1)
    warning = weights.get("warning", 1)
    for key, value in (("passing", passing), ("warning", warning)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise CatalogFileError(f"{where}: key 'weights.{key}' must be 0-65535")
    if passing < 1:
        raise CatalogFileError(f"{where}: key 'weights.passing' must be at least 1")
    checks: list[Any] = []
    if "check" in svc:
        checks.append(svc["check"])
    more = svc.get("checks") or []
    if not isinstance(more, list):
        raise CatalogFileError(f"{where}: key 'checks' must be a list")
    checks.extend(more)
    statuses = []
    for check in checks:
        if not isinstance(check, dict):
            raise CatalogFileError(f"{where}: a check must be an object")
        status = _normalise(check).get("status", PASSING)
        if status not in (PASSING, WARNING, CRITICAL):
            raise CatalogFileError(
                f"{where}: check key 'status' must be passing, warning or critical"
            )
        statuses.append(status)
    address = svc.get("address", "")
    if not isinstance(address, str):
        raise CatalogFileError(f"{where}: key 'address' must be a string")
    if address:
        _host(address, "address", where)
    service_id = svc.get("id") or name
    if not isinstance(service_id, str):
        raise CatalogFileError(f"{where}: key 'id' must be a string")
    instance = Instance(
        service=name,
        service_id=service_id,
        node=node,
        address=address,
        port=port,
        tags=tuple(tags),
        meta=_string_map(svc.get("meta", {}), "meta", file),
        weight_passing=passing,
        weight_warning=warning,
        status=worst_status(statuses),
    )
    return Loaded(instance, _connect_for(svc, name, where))


def _connect_for(svc: Mapping[str, Any], name: str, where: str) -> str | None:
    """The service whose ``<name>.connect`` this definition answers, if any:
    its own with ``connect.native``, the destination of a ``connect-proxy``."""
    kind = svc.get("kind", "")
    if not isinstance(kind, str):
        raise CatalogFileError(f"{where}: key 'kind' must be a string")
    connect = svc.get("connect") or {}
    if not isinstance(connect, dict):
        raise CatalogFileError(f"{where}: key 'connect' must be an object")
    native = _normalise(connect).get("native", False)
    if not isinstance(native, bool):
        raise CatalogFileError(f"{where}: key 'connect.native' must be true or false")
    if kind == CONNECT_PROXY:
        proxy = svc.get("proxy")
        if not isinstance(proxy, dict):
            raise CatalogFileError(f"{where}: kind connect-proxy needs the object 'proxy'")
        destination = _normalise(proxy).get("destination_service_name")
        if not isinstance(destination, str) or not destination:
            raise CatalogFileError(
                f"{where}: key 'proxy.destination_service_name' is required for a connect-proxy"
            )
        return _label(destination, "proxy.destination_service_name", where)
    return name if native else None


def _text(obj: Mapping[str, Any], key: str, file: Path, default: str) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise CatalogFileError(f"{file}: key {key!r} must be a string")
    return value


def _string_map(value: Any, key: str, file: Path) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CatalogFileError(f"{file}: key {key!r} must map strings to strings")
    if len(value) > MAX_META_PAIRS:
        raise CatalogFileError(f"{file}: key {key!r} has more than {MAX_META_PAIRS} pairs")
    for k, v in value.items():
        if len(k) > MAX_META_KEY_CHARS or len(v) > MAX_META_VALUE_CHARS:
            raise CatalogFileError(
                f"{file}: key {key!r}: {k[:40]!r} is over {MAX_META_KEY_CHARS} characters "
                f"or its value over {MAX_META_VALUE_CHARS}"
            )
    return dict(value)


def _label(value: str, key: str, where: str) -> str:
    """``value`` if it is one DNS label as answers write it, else an error naming ``key``."""
    if not value:
        raise CatalogFileError(f"{where}: key {key!r} must not be empty")
    if not value.isascii():
        raise CatalogFileError(f"{where}: key {key!r} must be ASCII (a DNS label): {value!r}")
    if len(value) > MAX_LABEL_BYTES:
        raise CatalogFileError(
            f"{where}: key {key!r} is longer than a DNS label "
            f"({len(value)} > {MAX_LABEL_BYTES} characters)"
        )
    if "." in value or "\\" in value:
        raise CatalogFileError(f"{where}: key {key!r} must be one DNS label, without '.' or '\\'")
    return value


def _host(value: str, key: str, where: str) -> str:
    """``value`` if it is an IP address or a host name (answered as a CNAME)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _fits(value, key, where)
    return value


def _fits(name: str, key: str, where: str) -> None:
    """Raises unless ``name`` (text) is a valid DNS name."""
    try:
        dns.name.from_text(name)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise CatalogFileError(f"{where}: key {key!r} does not make a DNS name ({exc})") from None


def _check_names_fit(node: Node, where: str, domains: tuple[str, ...]) -> None:
    """The node's names in answers (SRV targets, PTR) fit below every domain."""
    for domain in domains:
        _fits(f"{node.name}.node.{node.datacenter}.{domain}", "node_name", where)
        _fits(f"{_ADDR_LABEL}.addr.{node.datacenter}.{domain}", "datacenter", where)
