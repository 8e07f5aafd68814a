"""Fixtures shared by the integration tests: the Knot upstream (one per module) and the
gateway in front of it with the embedded default catalog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.gateway import GatewayProcess
from harness.knot import KnotUpstream
from tests.support.udp_paths import ENV, MODES


@pytest.fixture(scope="module")
def knot() -> Iterator[KnotUpstream]:
    with KnotUpstream() as server:
        yield server


@pytest.fixture(scope="module", params=MODES)
def udp_batch(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each UDP path in turn (``--udp-batch``, through its environment variable):
    gateways started while it is set use it."""
    mode: str = request.param
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV, mode)
        yield mode


@pytest.fixture(scope="module")
def gateway(knot: KnotUpstream, udp_batch: str) -> Iterator[GatewayProcess]:
    """The embedded default (zones/ catalog and zones) with Knot as the upstream."""
    with GatewayProcess("--upstream", knot.address, probe_name="consul.") as gw:
        yield gw
