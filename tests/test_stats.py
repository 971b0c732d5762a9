"""The paired statistics against hand-worked answers: McNemar's exact test, the paired bootstraps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from suite.stats import bootstrap_pairs, bootstrap_pairs_examples, clears, mcnemar_exact, paired_effect


@pytest.mark.parametrize("a_only,b_only", [(1, 9), (9, 1), (0, 0), (5, 5), (0, 7), (12, 30), (150, 171)])
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs(a_only: int, b_only: int) -> None:
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_by_hand() -> None:
    # 10 discordant pairs, 1 against 9: P[X <= 1] = (1 + 10) / 1024, doubled.
    assert mcnemar_exact(1, 9) == 22 / 1024
    # 0 against 7: 2 / 128.
    assert mcnemar_exact(0, 7) == 2 / 128
    assert mcnemar_exact(3, 3) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_effects_are_mean_differences_and_geometric_mean_ratios() -> None:
    assert paired_effect(np.array([3.0, 5.0]), np.array([1.0, 2.0]), kind="difference") == 2.5
    # ratios 2 and 8: geometric mean 4
    assert paired_effect(np.array([2.0, 8.0]), np.array([1.0, 1.0]), kind="ratio") == pytest.approx(4.0)


def test_bootstrap_over_two_pairs_spans_their_range() -> None:
    # Two pairs with differences -1 and +1: a replicate's mean is -1 (prob 1/4), 0 (1/2) or +1 (1/4),
    # so the 2.5% and 97.5% quantiles are -1 and +1.
    interval = bootstrap_pairs(np.array([0.0, 2.0]), np.array([1.0, 1.0]), kind="difference",
                               rng=np.random.default_rng(7), replicates=4000)
    assert (interval.effect, interval.low, interval.high, interval.pairs) == (0.0, -1.0, 1.0, 2)


def test_bootstrap_of_constant_differences_is_a_point() -> None:
    interval = bootstrap_pairs(np.array([0.9, 0.8, 0.7]), np.array([0.6, 0.5, 0.4]), kind="difference",
                               rng=np.random.default_rng(0))
    assert interval.low == pytest.approx(0.3) and interval.high == pytest.approx(0.3)
    ratio = bootstrap_pairs(np.array([64.0, 64.0]), np.array([2.0, 2.0]), kind="ratio", rng=np.random.default_rng(0))
    assert (ratio.effect, ratio.low, ratio.high) == pytest.approx((32.0, 32.0, 32.0))


def test_one_pair_has_no_interval_over_pairs() -> None:
    assert bootstrap_pairs(np.array([0.9]), np.array([0.5]), kind="difference", rng=np.random.default_rng(0)) is None


def test_bootstrap_with_a_fixed_generator_is_repeatable() -> None:
    a, b = np.array([0.91, 0.88, 0.93, 0.90]), np.array([0.85, 0.86, 0.89, 0.84])
    first = bootstrap_pairs(a, b, kind="difference", rng=np.random.default_rng(42))
    second = bootstrap_pairs(a, b, kind="difference", rng=np.random.default_rng(42))
    assert first == second
    assert first.low <= first.effect <= first.high


def test_examples_are_resampled_jointly_for_both_sides() -> None:
    # Identical predictions on both sides: whichever examples a replicate draws, the paired difference
    # is 0. Resampling each side on its own draw would spread it.
    same = np.array([[1, 0, 1, 1, 0, 1, 0, 0, 1, 1]], dtype=float)
    interval = bootstrap_pairs_examples(same, same.copy(), kind="difference", rng=np.random.default_rng(1))
    assert (interval.effect, interval.low, interval.high, interval.examples) == (0.0, 0.0, 0.0, 10)


def test_one_pair_two_examples_by_hand() -> None:
    # A right on both examples, B right on the first only: per-example differences 0 and 1. A draw of two
    # examples gives a mean of 0 (1/4), 1/2 (1/2) or 1 (1/4): the interval is [0, 1] around 1/2.
    interval = bootstrap_pairs_examples(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]]), kind="difference",
                                        rng=np.random.default_rng(3), replicates=4000)
    assert (interval.effect, interval.low, interval.high, interval.pairs) == (0.5, 0.0, 1.0, 1)


def test_pairs_are_resampled_as_well_as_examples() -> None:
    # Pair 1: A beats B on every example (difference 1); pair 2: the two agree (difference 0). Within a
    # pair the examples do not matter, so the interval is the two-pair one: [0, 1].
    a = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    interval = bootstrap_pairs_examples(a, b, kind="difference", rng=np.random.default_rng(5), replicates=4000)
    assert (interval.effect, interval.low, interval.high) == (0.5, 0.0, 1.0)


def test_weighted_losses_give_a_perplexity_ratio() -> None:
    # Per-token losses with transform exp: the metric is a perplexity; one block of equal losses per side.
    a = np.array([[math.log(4.0)] * 8])
    b = np.array([[math.log(2.0)] * 8])
    interval = bootstrap_pairs_examples(a, b, kind="ratio", transform="exp", rng=np.random.default_rng(0))
    assert (interval.effect, interval.low, interval.high) == pytest.approx((2.0, 2.0, 2.0))


def test_examples_bootstrap_covers_a_known_difference() -> None:
    # 400 examples, B right with probability 0.7, A flips 10% of B's wrong answers to right: true gain 0.03.
    rng = np.random.default_rng(11)
    b = (rng.random((1, 400)) < 0.7).astype(float)
    a = np.where((b == 0) & (rng.random((1, 400)) < 0.1), 1.0, b)
    interval = bootstrap_pairs_examples(a, b, kind="difference", rng=np.random.default_rng(12))
    assert interval.low > 0 and interval.low < float((a - b).mean()) < interval.high


def test_both_sides_need_the_same_examples() -> None:
    with pytest.raises(ValueError, match="same pairs and examples"):
        bootstrap_pairs_examples(np.ones((1, 3)), np.ones((1, 4)), kind="difference", rng=np.random.default_rng(0))


@pytest.mark.parametrize("low,high,direction,margin,verdict", [
    (0.01, 0.05, "higher", 0.0, "holds"),
    (-0.05, -0.01, "higher", 0.0, "contradicted"),
    (-0.01, 0.05, "higher", 0.0, "inconclusive"),
    (-0.015, 0.01, "higher", -0.02, "holds"),  # within 2 points
    (-0.05, -0.03, "higher", -0.02, "contradicted"),
    (0.98, 1.005, "lower", 1.01, "holds"),  # a ratio below 1.01
    (1.0, 1.02, "lower", 1.01, "inconclusive"),
    (33.0, 33.0, "higher", 32.0, "holds"),
    (0.0, 0.0, "higher", 0.0, "inconclusive"),  # identical results: no effect either way
])
def test_verdicts_follow_the_interval_and_margin(low, high, direction, margin, verdict) -> None:  # noqa: ANN001
    from suite.stats import Interval

    assert clears(Interval(0.0, low, high, 3), direction=direction, margin=margin) == verdict
    assert clears(None, direction=direction, margin=margin) == "inconclusive"
