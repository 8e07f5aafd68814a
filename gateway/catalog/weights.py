"""Weighted random order of answer records.

Consul shuffles A/AAAA records uniformly and ignores ``Weights``; we order
them so that a record of weight w comes first with probability w / sum, and
the rest follow in weighted order too (Efraimidis-Spirakis sampling without
replacement: key = u ** (1 / w), largest keys first). Clients that take the
first address then spread load by weight.

Per-query cost matters (``fastpath.py``): the order of the records after
the first comes from a few orderings prepared for each possible first
record, and the first is drawn exactly by weight, DRAWS queries at a time
(:class:`SlotDraws`: random bytes mapped through a table in C, so a query
pays a byte read instead of a ``random()``, a bisect and two calls). Above
MANY_RECORDS records, RING_SIZE whole weighted orderings are cycled through
instead (memory stays linear).
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
# Draws made at a time (one byte each), and the byte that means "drawn from
# the remainder" in a draw table (slots are below it: at most
# ORDERINGS_PER_FIRST x MANY_RECORDS = 128).
DRAWS = 512
_BYTE_VALUES = 256
_REMAINDER = 255
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


class SlotDraws:
    """Prepared-ordering slots for the next DRAWS queries; the first record exactly by weight.

    A slot is ``first * per_first + j``: the first record and one of its
    ``per_first`` prepared orderings. :meth:`draw` maps DRAWS random bytes
    through a 256-entry table (``bytes.translate``, in C). Record f owns
    floor(256 p_f) entries of the table, p_f = w_f / sum; the entries left
    over mean "draw again from the remainder", whose weights are the parts
    cut off, 256 p_f - floor(256 p_f), drawn exactly (:class:`FirstPicker`).
    So P(first = f) = floor(256 p_f) / 256 + (256 p_f - floor(256 p_f)) / 256
    = p_f, exactly, and the remainder is rare (at most a record count in 256
    draws). The orderings of one first record share its entries evenly.
    """

    __slots__ = ("_per_first", "_random_bytes", "_remainder", "_table")

    def __init__(self, weights: Sequence[float], per_first: int, rng: random.Random) -> None:
        if sum(weights) <= 0:
            weights = [1.0] * len(weights)
        assert len(weights) * per_first <= _REMAINDER
        total = float(sum(weights))
        table = bytearray([_REMAINDER]) * _BYTE_VALUES
        cut: list[float] = []
        at = 0
        for first, w in enumerate(weights):
            share = _BYTE_VALUES * (w / total)
            whole = min(int(share), _BYTE_VALUES - at)
            for j in range(whole):
                table[at + j] = first * per_first + j % per_first
            at += whole
            cut.append(max(share - whole, 0.0))
        self._table = bytes(table)
        self._per_first = per_first
        self._random_bytes = rng.randbytes
        self._remainder = FirstPicker(cut, rng) if at < _BYTE_VALUES else None

    def draw(self) -> bytes:
        """DRAWS slots, each with its first record drawn independently by weight."""
        draws = self._random_bytes(DRAWS).translate(self._table)
        remainder = self._remainder
        if remainder is None or _REMAINDER not in draws:
            return draws
        slots = bytearray(draws)
        per_first = self._per_first
        at = slots.find(_REMAINDER)
        while at >= 0:
            slots[at] = remainder() * per_first + at % per_first
            at = slots.find(_REMAINDER, at + 1)
        return bytes(slots)
