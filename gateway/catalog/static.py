"""A catalog from Consul agent configuration files, for use without Consul.

Each JSON file is what ``consul agent -config-dir`` reads: ``service`` (one)
or ``services`` (a list) with name, id, address, port, tags, meta, weights
and checks, plus the agent-level keys that place them: ``node_name``,
``advertise_addr`` (or ``bind_addr``), ``datacenter``, ``node_meta``.
A check's initial ``status`` (passing/warning/critical, as Consul accepts
it) sets the instance's health, so demos and tests can show weighting by
health with files Consul itself would load. Keys are accepted in Consul's
snake_case and CamelCase spellings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.catalog.model import CRITICAL, PASSING, WARNING, Instance, Node, Snapshot, worst_status
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


class CatalogFileError(StartupError):
    """A service-definition file that cannot be used; names the file and key."""


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


def load(path: Path, default_datacenter: str) -> Snapshot:
    """Reads a file or every ``*.json`` in a folder (sorted) into a snapshot."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    services: dict[tuple[str, str], list[Instance]] = {}
    nodes: dict[tuple[str, str], Node] = {}
    for file in files:
        for inst in load_file(file, default_datacenter):
            dc = inst.node.datacenter
            services.setdefault((dc, inst.service.lower()), []).append(inst)
            nodes[(dc, inst.node.name.lower())] = inst.node
    return Snapshot(
        services={k: tuple(v) for k, v in services.items()},
        nodes=nodes,
        datacenters=frozenset(dc for dc, _ in nodes) | {default_datacenter},
        complete=True,
    )


def load_file(file: Path, default_datacenter: str) -> list[Instance]:
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise CatalogFileError(f"{file}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CatalogFileError(f"{file}: not valid JSON: {exc}") from None
    agent = _known_keys(
        data, _AGENT_KEYS, str(file), "expected a JSON object with 'service' or 'services'"
    )
    node = Node(
        name=_text(agent, "node_name", file, DEFAULT_NODE),
        address=_text(agent, "advertise_addr", file, "")
        or _text(agent, "bind_addr", file, DEFAULT_NODE_ADDRESS),
        datacenter=_text(agent, "datacenter", file, default_datacenter).lower(),
        meta=_string_map(agent.get("node_meta", {}), "node_meta", file),
    )
    raw: list[Any] = []
    if "service" in agent:
        raw.append(agent["service"])
    if "services" in agent:
        if not isinstance(agent["services"], list):
            raise CatalogFileError(f"{file}: key 'services' must be a list")
        raw.extend(agent["services"])
    return [_instance(item, node, file, i) for i, item in enumerate(raw)]


def _instance(item: Any, node: Node, file: Path, index: int) -> Instance:
    where = f"{file}: service #{index + 1}"
    svc = _known_keys(item, _SERVICE_KEYS, where, "expected an object")
    name = svc.get("name")
    if not isinstance(name, str) or not name:
        raise CatalogFileError(f"{where}: key 'name' is required")
    where = f"{file}: service {name!r}"
    port = svc.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise CatalogFileError(f"{where}: key 'port' must be 0-65535")
    tags = svc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CatalogFileError(f"{where}: key 'tags' must be a list of strings")
    weights = _normalise(svc.get("weights") or {})
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
    checks.extend(svc.get("checks") or [])
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
    service_id = svc.get("id") or name
    return Instance(
        service=name,
        service_id=str(service_id),
        node=node,
        address=address,
        port=port,
        tags=tuple(tags),
        meta=_string_map(svc.get("meta", {}), "meta", file),
        weight_passing=passing,
        weight_warning=warning,
        status=worst_status(statuses),
    )


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
    return dict(value)
