"""Weighted random order of answer records.

Consul shuffles A/AAAA records uniformly and ignores ``Weights``; we order
them so that a record of weight w comes first with probability w / sum, and
the rest follow in weighted order too (Efraimidis-Spirakis sampling without
replacement: key = u ** (1 / w), largest keys first). Clients that take the
first address then spread load by weight.

Per-query cost matters (``fastpath.py``), so the first position is drawn
exactly per query from cumulative weights (one ``random()`` and a bisect),
and the order of the remaining records comes from a few orderings prepared
for each possible first record. Above MANY_RECORDS records, RING_SIZE
whole weighted orderings are cycled through instead (memory stays linear).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

# How many prepared orderings of the rest per possible first record.
ORDERINGS_PER_FIRST = 4
# Above this many records, prepare this many whole orderings instead of a
# set per first record (memory stays linear in the record count).
MANY_RECORDS = 32
RING_SIZE = 64
# Weight 0 (Consul allows Warning: 0) sorts last but is still returned.
_ZERO_WEIGHT_KEY = -1.0


def weighted_order(
    weights: Sequence[float], rng: random.Random, *, first: int | None = None, k: int = 0
) -> list[int]:
    """Indexes in weighted random order; ``first`` forced first; at most ``k``."""
    keyed: list[tuple[float, int]] = []
    for i, w in enumerate(weights):
        if i == first:
            continue
        u = rng.random()
        key = u ** (1.0 / w) if w > 0 else _ZERO_WEIGHT_KEY * u
        keyed.append((key, i))
    keyed.sort(reverse=True)
    order = [i for _, i in keyed]
    if first is not None:
        order.insert(0, first)
    return order[:k] if k > 0 else order


class FirstPicker:
    """Draws the index of the first record, exactly by weight."""

    __slots__ = ("_cumulative", "_random", "_total")

    def __init__(self, weights: Sequence[float], rng: random.Random) -> None:
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1]
        self._random = rng.random

    def __call__(self) -> int:
        return bisect_right(self._cumulative, self._random() * self._total)
