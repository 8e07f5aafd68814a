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
