"""Requests to Consul: read parameters, stale retries, liveness, counters, ACL logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.consul.http import ConsulStatusError, ConsulTransportError, HTTPResult
from gateway.consul.liveness import Liveness
from gateway.consul.reader import Reader, read_params, too_stale
from tests.unit.consul.fakes import FakeClock


def test_too_stale() -> None:
    assert not too_stale(None, 10)
    assert not too_stale(10_000, 10)
    assert too_stale(10_001, 10)


def test_read_params() -> None:
    assert read_params("dc1") == [("dc", "dc1"), ("stale", "")]
    assert read_params("dc2", index=7, wait_s=60, stale=False) == [
        ("dc", "dc2"),
        ("index", "7"),
        ("wait", "60000ms"),
    ]
    # A cluster peer's data is imported into the local datacenter: ?peer=, no dc.
    assert read_params("pa.peer") == [("peer", "pa"), ("stale", "")]


class ScriptedHTTP:
    """Answers each GET with the next outcome; records what was asked."""

    def __init__(self, *outcomes: HTTPResult | ConsulTransportError) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, dict[str, str], float]] = []

    async def get(self, path: str, params: list[tuple[str, str]], timeout_s: float) -> HTTPResult:
        self.calls.append((path, dict(params), timeout_s))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, ConsulTransportError):
            raise outcome
        return outcome

    async def close(self) -> None:
        return None


def reader(http: ScriptedHTTP, *, token: bool = False) -> tuple[Reader, Liveness]:
    liveness = Liveness(
        FakeClock(),
        address="http://127.0.0.1:8500",
        view_max_age_s=60.0,
        ready=lambda: True,
        on_back=lambda: None,
        on_expired=lambda: None,
    )
    return Reader(http, liveness, local="dc1", max_stale_s=2.0, token_set=token), liveness


def test_a_too_stale_read_is_asked_again_of_the_leader_with_the_same_wait() -> None:
    http = ScriptedHTTP(HTTPResult(200, "[]", 5, 2_001), HTTPResult(200, "[]", 5, 0))
    read, _ = reader(http)
    result = asyncio.run(read.read("/v1/catalog/nodes", "dc1", index=4, wait_s=16.0))
    assert result.last_contact_ms == 0
    (_, stale, timeout_s), (_, leader, again_s) = http.calls
    assert stale == {"dc": "dc1", "index": "4", "wait": "16000ms", "stale": ""}
    assert leader == {"dc": "dc1", "index": "4", "wait": "16000ms"}
    # A blocking read may take its wait, Consul's jitter (wait/16) and a margin.
    assert timeout_s == again_s == 16.0 + 1.0 + 5.0
    assert (read.requests, read.errors, read.stale_retries) == (2, 0, 1)


def test_a_plain_read_has_the_request_timeout() -> None:
    http = ScriptedHTTP(HTTPResult(200, "[]", 5))
    read, _ = reader(http)
    asyncio.run(read.read("/v1/catalog/nodes", "dc2"))
    assert http.calls == [("/v1/catalog/nodes", {"dc": "dc2", "stale": ""}, 10.0)]


@pytest.mark.parametrize(
    ("outcome", "local", "down"),
    [
        (ConsulTransportError("refused"), True, True),
        (ConsulTransportError("refused"), False, False),  # the WAN, not our agent
        (HTTPResult(500, "rpc error"), True, True),
        (HTTPResult(500, "rpc error"), False, False),
        (HTTPResult(500, "No path to datacenter"), True, False),  # Consul answered
        (HTTPResult(404, "no such query"), True, False),
    ],
)
def test_failures_of_local_requests_mark_consul_down(
    outcome: HTTPResult | ConsulTransportError, local: bool, down: bool
) -> None:
    http = ScriptedHTTP(outcome)
    read, liveness = reader(http)
    with pytest.raises((ConsulTransportError, ConsulStatusError)):
        asyncio.run(read.request("/v1/query/q/execute", local=local))
    assert liveness.down is down
    assert (read.requests, read.errors) == (1, 1)


def test_an_answer_marks_consul_up() -> None:
    http = ScriptedHTTP(ConsulTransportError("refused"), HTTPResult(200, "[]"))
    read, liveness = reader(http)
    with pytest.raises(ConsulTransportError):
        asyncio.run(read.request("/v1/catalog/datacenters"))
    assert liveness.down
    asyncio.run(read.request("/v1/catalog/datacenters"))
    assert not liveness.down


def test_acl_trouble_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    denied = HTTPResult(403, "Permission denied")
    filtered = HTTPResult(200, "[]", filtered=True)
    http = ScriptedHTTP(denied, denied, filtered, filtered)
    read, _ = reader(http, token=True)

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(ConsulStatusError):
                await read.request("/v1/health/service/web")
        for _ in range(2):
            await read.request("/v1/catalog/services")

    asyncio.run(main())
    assert caplog.text.count("Consul denied /v1/health/service/web") == 1
    assert caplog.text.count("filtered the answer to /v1/catalog/services") == 1
    assert "deploy/consul-acl-policy.hcl" in caplog.text


def test_default_deny_without_a_token_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    deny = HTTPResult(200, "[]", default_deny=True)
    for token, logged in ((True, False), (False, True)):
        caplog.clear()
        read, _ = reader(ScriptedHTTP(deny), token=token)
        asyncio.run(read.request("/v1/catalog/services"))
        assert ("no token is set" in caplog.text) is logged
