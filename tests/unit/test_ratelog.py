"""The rate-limited log: a budget of lines per kind and interval, on a fake clock."""

from __future__ import annotations

import logging
from collections import defaultdict

import pytest

from gateway.ratelog import SUPPRESSED_COUNTER, RateLimitedLog


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, counts: defaultdict[str, int]) -> RateLimitedLog:
    return RateLimitedLog(
        logging.getLogger("test.ratelog"), lines=3, interval=10.0, clock=clock, counts=counts
    )


def test_lines_beyond_the_budget_are_counted_not_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, counts = Clock(), defaultdict[str, int](int)
    limited = make(clock, counts)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for i in range(100):
            limited.warning("send", "reply %d not sent", i)
        limited.warning("other", "another kind has its own budget")
    assert [r.getMessage() for r in caplog.records] == [
        "reply 0 not sent",
        "reply 1 not sent",
        "reply 2 not sent",
        "another kind has its own budget",
    ]
    assert counts[SUPPRESSED_COUNTER] == 97
    assert limited.suppressed("send") == 97


def test_the_next_interval_says_how_many_were_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, counts = Clock(), defaultdict[str, int](int)
    limited = make(clock, counts)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for _ in range(5):
            limited.warning("send", "reply not sent")
        clock.now = 9.9  # still the first interval
        limited.warning("send", "reply not sent")
        clock.now = 10.0
        limited.warning("send", "reply not sent")
        limited.warning("send", "reply not sent")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[3:] == [
        "reply not sent [3 similar lines suppressed before this one]",
        "reply not sent",
    ]
    assert limited.suppressed("send") == 0


def test_tracebacks_only_when_asked_and_nothing_below_the_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, counts = Clock(), defaultdict[str, int](int)
    limited = make(clock, counts)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        limited.log(logging.DEBUG, "recv", "not shown and not counted")
        try:
            raise KeyError("a bug")
        except KeyError as exc:
            limited.error("bug", "error answering %s", "a packet", exc_info=exc)
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert counts[SUPPRESSED_COUNTER] == 0
