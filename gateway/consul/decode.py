"""Consul's JSON answers turned into catalog values.

Everything here takes a response body and returns values: no sockets, no
clock, no logging, so the rules (health checks → an instance's status,
maintenance, Consul's defaults for missing fields) are tested without a
Consul. A body of the wrong shape raises :class:`BadResponse`, which the
watch loop treats like a failed request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.catalog.model import (
    CRITICAL,
    MAINTENANCE,
    PASSING,
    WARNING,
    Instance,
    Node,
    PreparedResult,
    worst_status,
)
from gateway.consul.http import HTTPResult

# Consul marks maintenance with critical checks of these IDs (agent/structs).
NODE_MAINTENANCE_CHECK = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"
# The tagged address holding a Connect service's virtual IP (agent/structs).
VIRTUAL_TAGGED_ADDRESS = "consul-virtual"

_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadResponse(ValueError):
    """Consul answered 200 with a body we cannot use (wrong JSON shape)."""


def json_body(result: HTTPResult) -> Any:
    """The response body as JSON."""
    try:
        return json.loads(result.body)
    except ValueError:
        raise BadResponse(f"not JSON: {result.body[:100]!r}") from None


# -- health entries -> instances ------------------------------------------


def check_status(check: Mapping[str, Any]) -> str:
    """One check's status; maintenance checks (critical in Consul) say so."""
    check_id = str(check.get("CheckID") or "")
    if check_id == NODE_MAINTENANCE_CHECK or check_id.startswith(SERVICE_MAINTENANCE_PREFIX):
        return MAINTENANCE
    status = check.get("Status")
    # An unknown status must never make an instance look healthy.
    return status if status in (PASSING, WARNING, CRITICAL) else CRITICAL


def node_from_json(obj: Mapping[str, Any], datacenter: str) -> Node:
    """A ``Node`` object of /v1/catalog/nodes or of a health entry."""
    name = obj.get("Node")
    if not isinstance(name, str) or not name:
        raise BadResponse(f"node without a name: {obj!r:.200}")
    return Node(
        name=name,
        address=_str(obj.get("Address")),
        datacenter=(_str(obj.get("Datacenter")) or datacenter).lower(),
        meta=_str_map(obj.get("Meta")),
    )


def instance_from_entry(entry: Mapping[str, Any], datacenter: str) -> Instance:
    """One /v1/health/service (or query execute) entry: Node, Service, Checks.

    The status is the worst of all checks in the entry, which Consul
    fills with the node's checks (serfHealth, node maintenance) and this
    service's own checks.
    """
    node_obj, service = entry.get("Node"), entry.get("Service")
    if not isinstance(node_obj, Mapping) or not isinstance(service, Mapping):
        raise BadResponse(f"health entry without Node or Service: {entry!r:.200}")
    checks = entry.get("Checks") or []
    if not isinstance(checks, list):
        raise BadResponse("Checks is not a list")
    return instance_on_node(node_from_json(node_obj, datacenter), service, checks)


def instance_on_node(node: Node, service: Mapping[str, Any], checks: list[Any]) -> Instance:
    """A ``Service`` object on ``node`` with the checks that decide its status."""
    name = service.get("Service")
    if not isinstance(name, str) or not name:
        raise BadResponse(f"service without a name: {service!r:.200}")
    weights = service.get("Weights") or {}
    if not isinstance(weights, Mapping):
        raise BadResponse("Weights is not an object")
    tags = service.get("Tags") or []
    if not isinstance(tags, list):
        raise BadResponse("Tags is not a list")
    return Instance(
        service=name,
        service_id=_str(service.get("ID")) or name,
        node=node,
        # Empty means "the node's address": Instance.effective_address.
        address=_str(service.get("Address")),
        port=_int(service.get("Port"), 0),
        tags=tuple(str(t) for t in tags),
        meta=_str_map(service.get("Meta")),
        weight_passing=_int(weights.get("Passing"), 1),
        weight_warning=_int(weights.get("Warning"), 1),
        status=worst_status(check_status(c) for c in checks if isinstance(c, Mapping)),
        virtual_ip=_virtual_ip(service.get("TaggedAddresses")),
    )


def _virtual_ip(tagged: Any) -> str:
    """The ``consul-virtual`` tagged address Consul gives Connect services (1.11+)."""
    if not isinstance(tagged, Mapping):
        return ""
    entry = tagged.get(VIRTUAL_TAGGED_ADDRESS)
    return _str(entry.get("Address")) if isinstance(entry, Mapping) else ""


def instances_from_health(body: Any, datacenter: str) -> tuple[Instance, ...]:
    """The body of /v1/health/service/<name>: a list of entries."""
    if not isinstance(body, list):
        raise BadResponse("health answer is not a list")
    return tuple(instance_from_entry(e, datacenter) for e in body if isinstance(e, Mapping))


def services_from_dump(body: Any, datacenter: str) -> dict[str, tuple[Instance, ...]]:
    """The body of /v1/internal/ui/nodes: every service's instances, by lower-case name.

    The dump lists each node with its services and all its checks. An
    instance's checks are the node's own (no ``ServiceID``: serfHealth,
    node maintenance) and those bound to its service ID, which is what
    /v1/health/service/<name> puts in each entry, so both reads give the
    same instances.
    """
    if not isinstance(body, list):
        raise BadResponse("node dump is not a list")
    found: dict[str, list[Instance]] = {}
    for info in body:
        if not isinstance(info, Mapping):
            continue
        services, checks = info.get("Services") or [], info.get("Checks") or []
        if not isinstance(services, list) or not isinstance(checks, list):
            raise BadResponse(f"node dump entry without lists: {info!r:.200}")
        node = node_from_json(info, datacenter)
        node_checks: list[Any] = []
        service_checks: dict[str, list[Any]] = {}
        for check in checks:
            if isinstance(check, Mapping):
                owner = _str(check.get("ServiceID"))
                (service_checks.setdefault(owner, []) if owner else node_checks).append(check)
        for service in services:
            if isinstance(service, Mapping):
                own = service_checks.get(_str(service.get("ID")), [])
                instance = instance_on_node(node, service, node_checks + own)
                found.setdefault(instance.service.lower(), []).append(instance)
    return {name: tuple(instances) for name, instances in found.items()}


def nodes_from_catalog(body: Any, datacenter: str) -> dict[str, Node]:
    """The body of /v1/catalog/nodes, keyed by lower-case node name."""
    if not isinstance(body, list):
        raise BadResponse("node list is not a list")
    nodes = (node_from_json(n, datacenter) for n in body if isinstance(n, Mapping))
    return {node.name.lower(): node for node in nodes}


def service_names(body: Any) -> frozenset[str]:
    """The body of /v1/catalog/services ({name: [tags]}): lower-case names."""
    if not isinstance(body, Mapping):
        raise BadResponse("service list is not an object")
    return frozenset(str(name).lower() for name in body)


def datacenter_names(body: Any) -> frozenset[str]:
    """The body of /v1/catalog/datacenters."""
    if not isinstance(body, list):
        raise BadResponse("datacenter list is not a list")
    return frozenset(str(dc).lower() for dc in body)


def prepared_result(body: Any, datacenter: str) -> PreparedResult:
    """The body of /v1/query/<name>/execute.

    Consul has already dropped critical instances (and warning ones with
    OnlyPassing); the DNS TTL is the query's ``DNS.TTL`` when set.
    """
    if not isinstance(body, Mapping):
        raise BadResponse("query result is not an object")
    result_dc = (_str(body.get("Datacenter")) or datacenter).lower()
    dns = body.get("DNS") or {}
    ttl_s = parse_duration(_str(dns.get("TTL"))) if isinstance(dns, Mapping) else None
    return PreparedResult(
        instances=instances_from_health(body.get("Nodes") or [], result_dc),
        ttl=None if ttl_s is None else int(ttl_s),
        datacenter=result_dc,
    )


def parse_duration(text: str) -> float | None:
    """A Go duration ("10s", "1m30s", "500ms") in seconds; None if empty or bad."""
    text = text.strip()
    if not text:
        return None
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}
