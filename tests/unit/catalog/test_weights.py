from __future__ import annotations

import random
from collections import Counter

from scipy.stats import chisquare

from gateway.catalog import weights


def test_first_picker_follows_weights() -> None:
    w = [1.0, 2.0, 7.0, 0.0]
    pick = weights.FirstPicker(w, random.Random(7))
    counts = Counter(pick() for _ in range(20000))
    assert counts[3] == 0  # weight 0 is never first
    assert chisquare([counts[i] for i in range(3)], [2000, 4000, 14000]).pvalue > 1e-4


def test_all_zero_weights_fall_back_to_uniform() -> None:
    pick = weights.FirstPicker([0.0, 0.0], random.Random(1))
    assert {pick() for _ in range(100)} == {0, 1}


def test_weighted_order_is_a_permutation_and_honours_first_and_k() -> None:
    rng = random.Random(3)
    order = weights.weighted_order([1, 2, 3, 4], rng, first=2)
    assert order[0] == 2 and sorted(order) == [0, 1, 2, 3]
    assert len(weights.weighted_order([1, 2, 3, 4], rng, k=2)) == 2


def test_second_position_is_weighted_too() -> None:
    rng = random.Random(5)
    seconds = Counter(weights.weighted_order([100, 1, 9], rng, first=0)[1] for _ in range(5000))
    assert seconds[2] > seconds[1] * 5


def _firsts(w: list[float], draws: int, seed: int) -> Counter[int]:
    slots = weights.SlotDraws(w, weights.ORDERINGS_PER_FIRST, random.Random(seed))
    counts: Counter[int] = Counter()
    for _ in range(draws // weights.DRAWS):
        counts.update(s // weights.ORDERINGS_PER_FIRST for s in slots.draw())
    return counts


def test_slot_draws_follow_weights_exactly_with_the_remainder_drawn_apart() -> None:
    """1:2:7 fills 255 of the 256 table entries; the last one draws from the remainder."""
    w = [1.0, 2.0, 7.0, 0.0]
    counts = _firsts(w, 40 * weights.DRAWS, 7)
    assert counts[3] == 0  # weight 0 is never first
    total = sum(counts.values())
    assert chisquare([counts[i] for i in range(3)], [total * x / 10 for x in w[:3]]).pvalue > 1e-4


def test_slot_draws_are_exact_where_the_table_cannot_be() -> None:
    """Weights whose shares of 256 are far from whole: the remainder carries the rest.

    With 1 and 999, a table alone would give the light record 0/256 or 1/256 of
    first places (0 or +2.5x); the draws must give it 1/1000.
    """
    counts = _firsts([1.0, 999.0], 400 * weights.DRAWS, 11)
    total = sum(counts.values())
    assert chisquare([counts[0], counts[1]], [total / 1000, total * 999 / 1000]).pvalue > 1e-4
    rng = random.Random(13)
    w = [rng.uniform(0.5, 9.5) for _ in range(weights.MANY_RECORDS)]
    counts = _firsts(w, 100 * weights.DRAWS, 17)
    total = sum(counts.values())
    expected = [total * x / sum(w) for x in w]
    assert chisquare([counts[i] for i in range(len(w))], expected).pvalue > 1e-4


def test_slot_draws_use_every_prepared_ordering_and_fall_back_to_uniform() -> None:
    slots = weights.SlotDraws([3.0, 1.0], weights.ORDERINGS_PER_FIRST, random.Random(3))
    drawn = set(slots.draw())
    assert drawn == set(range(2 * weights.ORDERINGS_PER_FIRST))
    zero = weights.SlotDraws([0.0, 0.0], 1, random.Random(1))
    assert set(zero.draw()) == {0, 1}
