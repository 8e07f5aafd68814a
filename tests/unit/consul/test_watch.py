"""The watch loop and its rules: blocking-query index, backoff, retries (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.consul.http import ConsulStatusError, ConsulTransportError, HTTPResult
from gateway.consul.slots import SlotShared
from gateway.consul.watch import Backoff, next_index, watch


@pytest.mark.parametrize(
    ("previous", "received", "expected"),
    [(0, 15, 15), (15, 15, 15), (15, 20, 20), (20, 15, 0), (0, 0, 1), (5, 0, 0)],
)
def test_next_index(previous: int, received: int, expected: int) -> None:
    assert next_index(previous, received) == expected


def test_backoff_doubles_to_its_maximum_with_jitter() -> None:
    high = Backoff(rng=lambda: 1.0)
    assert [round(high.next(), 3) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]
    low = Backoff(rng=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]
    high.reset()
    assert high.next() == pytest.approx(0.1)


class Script:
    """The reads a watch makes, answered one by one from a list of outcomes."""

    def __init__(self, *outcomes: HTTPResult | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.indexes: list[int] = []
        self.naps: list[float] = []
        self.data: list[Any] = []
        self.errors: list[str] = []
        self.unknown_dc = 0
        self.done = asyncio.Event()

    async def read(self, index: int) -> HTTPResult:
        self.indexes.append(index)
        if not self.outcomes:
            self.done.set()
            await asyncio.Event().wait()  # blocks like a quiet blocking query
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def nap(self, delay_s: float) -> None:
        self.naps.append(delay_s)

    async def run(self) -> None:
        task = asyncio.ensure_future(
            watch(
                self.read,
                path="/v1/health/service/web",
                on_data=self.data.append,
                on_unknown_dc=lambda: setattr(self, "unknown_dc", self.unknown_dc + 1),
                on_error=self.errors.append,
                nap=self.nap,
                backoff=Backoff(rng=lambda: 1.0),
            )
        )
        await asyncio.wait_for(self.done.wait(), 1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def ok(index: int, body: Any = ()) -> HTTPResult:
    return HTTPResult(200, json.dumps(body), index)


def test_watch_blocks_on_each_new_index_and_skips_unchanged_answers() -> None:
    script = Script(ok(10, ["a"]), ok(10, ["same index: not parsed"]), ok(12, ["b"]))
    asyncio.run(script.run())
    assert script.indexes == [0, 10, 10, 12]
    assert script.data == [["a"], ["b"]]
    assert script.naps == []


def test_watch_failures_back_off_and_start_over_with_a_plain_read() -> None:
    script = Script(
        ok(10, ["a"]),
        ConsulTransportError("refused"),
        ConsulStatusError(500, "rpc error"),
        ok(3, ["after a restart"]),  # a lower index: the plain read takes it
        HTTPResult(200, "not json", 4),
        ok(5, ["c"]),
    )
    asyncio.run(script.run())
    assert script.indexes == [0, 10, 0, 0, 3, 0, 5]
    assert script.errors == ["refused", "HTTP 500: rpc error", "not JSON: 'not json'"]
    assert script.naps == [0.1, 0.2, 0.1]  # doubling, and from the start after a success
    assert script.data == [["a"], ["after a restart"], ["c"]]


def test_unknown_datacenter_is_reported_as_such() -> None:
    from gateway.consul.http import status_error

    script = Script(status_error(500, "No path to datacenter"), ok(7))
    asyncio.run(script.run())
    assert script.unknown_dc == 1 and script.errors == []
    assert script.indexes == [0, 0, 7]


def test_a_read_cut_short_to_share_slots_reads_the_same_index_again_at_once() -> None:
    script = Script(ok(10, ["a"]), SlotShared(), ok(11, ["b"]))
    asyncio.run(script.run())
    assert script.indexes == [0, 10, 10, 11]
    assert script.naps == [] and script.errors == []


def test_a_bug_in_a_callback_is_an_error_not_the_end_of_the_watch() -> None:
    script = Script(ok(10, {"not": "a list"}), ok(10, ["a"]))
    script.data = []

    def broken(body: Any) -> None:
        if isinstance(body, dict):
            raise RuntimeError("bug")
        script.data.append(body)

    async def main() -> None:
        task = asyncio.ensure_future(
            watch(
                script.read,
                path="/p",
                on_data=broken,
                on_unknown_dc=lambda: None,
                on_error=script.errors.append,
                nap=script.nap,
                backoff=Backoff(rng=lambda: 1.0),
            )
        )
        await asyncio.wait_for(script.done.wait(), 1.0)
        task.cancel()

    asyncio.run(main())
    assert script.errors == ["internal error: RuntimeError('bug')"]
    assert script.data == [["a"]] and script.indexes == [0, 0, 10]
