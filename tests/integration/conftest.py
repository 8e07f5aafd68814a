"""Fixtures shared by the integration tests: the Knot upstream (one per module) and the
gateway in front of it with the embedded default catalog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream


@pytest.fixture(scope="module")
def knot() -> Iterator[KnotUpstream]:
    with KnotUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(knot: KnotUpstream) -> Iterator[GatewayProcess]:
    """The embedded default (zones/ catalog and zones) with Knot as the upstream."""
    with GatewayProcess("--upstream", knot.address, probe_name="consul.") as gw:
        yield gw
