"""The paired statistics against hand-worked answers: McNemar's exact test, the paired bootstraps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from suite.stats import bootstrap_pairs_examples, clears, mcnemar_exact, paired_effect, t_interval, widest


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


def test_t_interval_by_hand() -> None:
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, df=2) = 4.302652729911275
    interval = t_interval(np.array([1.0, 2.0, 3.0]), np.zeros(3), kind="difference")
    half = 4.302652729911275 / math.sqrt(3)
    assert (interval.effect, interval.low, interval.high, interval.pairs) == pytest.approx((2.0, 2 - half, 2 + half, 3))
    assert interval.method == "t" and "Student t over 3 pairs" in interval.describe()


def test_t_interval_matches_scipy() -> None:
    from scipy import stats

    a, b = np.array([0.91, 0.88, 0.93, 0.90]), np.array([0.85, 0.86, 0.89, 0.84])
    d = a - b
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    interval = t_interval(a, b, kind="difference")
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-12)


def test_three_agreeing_seeds_are_not_enough_when_they_spread() -> None:
    # All three pairs favour A, but their spread is large against the mean: a bootstrap over pairs would
    # give their range [0.01, 0.2] (and a verdict); Student t with 2 degrees of freedom does not.
    interval = t_interval(np.array([0.01, 0.05, 0.2]), np.zeros(3), kind="difference")
    assert interval.low < 0 < interval.high


def test_identical_pairs_give_a_point_and_one_pair_no_interval() -> None:
    interval = t_interval(np.array([0.9, 0.8, 0.7]), np.array([0.6, 0.5, 0.4]), kind="difference")
    assert interval.low == pytest.approx(0.3) and interval.high == pytest.approx(0.3)
    ratio = t_interval(np.array([64.0, 64.0]), np.array([2.0, 2.0]), kind="ratio")
    assert (ratio.effect, ratio.low, ratio.high) == pytest.approx((32.0, 32.0, 32.0))
    assert t_interval(np.array([0.9]), np.array([0.5]), kind="difference") is None


def test_the_interval_is_the_union_of_seeds_and_examples() -> None:
    seeds = t_interval(np.array([0.8, 0.9, 0.85]), np.array([0.7, 0.7, 0.7]), kind="difference")
    a = np.array([[1.0] * 8 + [0.0] * 2, [1.0] * 9 + [0.0], [1.0] * 8 + [0.0] * 2])
    b = np.array([[1.0] * 7 + [0.0] * 3] * 3)
    examples = bootstrap_pairs_examples(a, b, kind="difference", rng=np.random.default_rng(0))
    both = widest(seeds, examples)
    assert both.low == min(seeds.low, examples.low) and both.high == max(seeds.high, examples.high)
    assert both.method == "t+bootstrap" and "the wider of Student t over 3 pairs" in both.describe()
    assert widest(None, examples) == examples


def test_bootstrap_with_a_fixed_generator_is_repeatable() -> None:
    a = np.array([[1.0, 0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0, 0.0]])
    first = bootstrap_pairs_examples(a, b, kind="difference", rng=np.random.default_rng(42))
    second = bootstrap_pairs_examples(a, b, kind="difference", rng=np.random.default_rng(42))
    assert first == second and first.low <= first.effect <= first.high


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
