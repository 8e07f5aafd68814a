"""Longest-suffix routing of a name to exactly one answerer."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Kind(enum.Enum):
    CATALOG = "catalog"
    ZONE = "zone"
    FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    suffix: str  # the domain or zone origin that matched; "" for FORWARD


FORWARD = Route(Kind.FORWARD, "")


class Router:
    """Maps names to the catalog (Consul domains), a local zone, or the forwarder.

    The longest matching suffix wins, so a zone ``svc.consul`` would take
    its names away from the catalog, and ``consul`` zone files cannot
    shadow the catalog by accident: the same suffix twice is an error.
    """

    def __init__(self, domains: Iterable[str], zone_origins: Iterable[str]) -> None:
        self._routes: dict[str, Route] = {}
        for domain in domains:
            self._add(domain, Route(Kind.CATALOG, domain))
        for origin in zone_origins:
            self._add(origin, Route(Kind.ZONE, origin))

    def _add(self, suffix: str, route: Route) -> None:
        if suffix in self._routes:
            raise ValueError(
                f"{suffix!r} is both {self._routes[suffix].kind.value} and {route.kind.value}"
            )
        self._routes[suffix] = route

    def route(self, qname: str) -> Route:
        """``qname``: lower case, no final dot ("" for the root)."""
        routes = self._routes
        name = qname
        while name:
            found = routes.get(name)
            if found is not None:
                return found
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
        return FORWARD
