"""The two UDP paths of the listener, for tests that run in both.

``--udp-batch auto`` uses the compiled helper (``gateway/server/_batchio``,
built by ``make``); ``off`` the pure-Python loop. The helper's absence is a
failure, not a skip, unless ``GATEWAY_TEST_UDP_BATCH=off`` is set for the
whole run (how the suite is run on a build without it; the harness then
starts every gateway with ``--udp-batch off``, except where a test sets a mode).
"""

from __future__ import annotations

import os

import pytest

from gateway.server import batchio
from harness.gateway import UDP_BATCH_ENV

ENV = UDP_BATCH_ENV

MODES = ("auto", "off")
# The run's own setting, read before any fixture sets it for its gateways.
RUN_MODE = os.environ.get(ENV)


def compiled_helper() -> batchio.BatchIO:
    """The compiled helper; a failure when it is missing (see the module's doc)."""
    helper = batchio.load()
    if helper is None:
        if RUN_MODE == "off":
            pytest.skip(f"the compiled helper is not built ({ENV}=off for this run)")
        pytest.fail(f"gateway/server/_batchio is not built: run make (or set {ENV}=off)")
    return helper


def expected_batch_io(mode: str) -> int:
    """The ``udp_batch_io`` gauge a gateway started with ``--udp-batch mode`` shows."""
    if mode == "off":
        return 0
    compiled_helper()  # fails or skips where the helper is missing
    return 1
