"""The one-run audit's statistics (suite.audit), checked against what its theorem implies."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import suite.audit
from suite.audit import audit_scores, epsilon_lower_bound, p_value


def _binomial_tail(r: int, v: int, q: float) -> float:
    """P[Binomial(r, q) >= v] by direct summation (independent of scipy)."""
    return sum(math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(v, r + 1))


@pytest.mark.parametrize(("r", "v", "eps"), [(10, 7, 0.0), (40, 30, 1.0), (25, 25, 2.0), (30, 0, 0.5)])
def test_pure_dp_p_value_is_the_randomized_response_tail(r: int, v: int, eps: float) -> None:
    q = math.exp(eps) / (1 + math.exp(eps))
    assert p_value(m=100, r=r, v=v, epsilon=eps) == pytest.approx(_binomial_tail(r, v, q), rel=1e-9)


def test_all_correct_bound_has_a_closed_form() -> None:
    # delta = 0 and v = r: p-value q^r, so the bound solves q^r = 0.05.
    for r in (10, 50, 200):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(m=1000, r=r, v=r) == pytest.approx(math.log(q / (1 - q)), abs=1e-4)


def test_delta_adds_the_papers_term_and_weakens_the_bound() -> None:
    m, r, v, eps, delta = 500, 60, 50, 1.0, 1e-4
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(r + 1)]
    alpha = max(sum(pmf[v - j] for j in range(1, i + 1)) / i for i in range(1, v + 1))
    expected = _binomial_tail(r, v, q) + alpha * 2 * m * delta
    assert p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) == pytest.approx(expected, rel=1e-9)
    assert epsilon_lower_bound(m=m, r=r, v=v, delta=delta) < epsilon_lower_bound(m=m, r=r, v=v)


@settings(max_examples=60, deadline=None)
@given(r=st.integers(2, 120), data=st.data())
def test_bound_is_monotone(r: int, data) -> None:
    v = data.draw(st.integers(0, r - 1))
    m = data.draw(st.integers(r, 4 * r))
    lb = epsilon_lower_bound(m=m, r=r, v=v, delta=1e-5)
    assert lb >= 0
    assert epsilon_lower_bound(m=m, r=r, v=v + 1, delta=1e-5) >= lb  # more correct guesses: a higher bound
    assert epsilon_lower_bound(m=m, r=r, v=v, delta=1e-3) <= lb + 1e-6  # a larger delta: a lower bound
    assert epsilon_lower_bound(m=m, r=r, v=v, delta=1e-5, confidence=0.99) <= lb + 1e-6
    # the p-value grows with epsilon (what the bisection relies on)
    ps = [p_value(m=m, r=r, v=v, epsilon=e, delta=1e-5) for e in np.linspace(0, 6, 25)]
    assert all(b >= a - 1e-12 for a, b in zip(ps, ps[1:]))


def test_at_most_half_right_implies_nothing() -> None:
    for r in (2, 10, 101, 400):
        assert epsilon_lower_bound(m=2 * r, r=r, v=r // 2) == 0.0


def test_random_scores_rarely_give_a_positive_bound() -> None:
    rng = np.random.default_rng(0)
    positives = 0
    for _ in range(200):
        included = rng.random(200) < 0.5
        audit = audit_scores(rng.normal(size=200), included, k_in=25, k_out=25)
        positives += audit.epsilon_lb > 0
    assert positives <= 200 * 0.1  # 5% expected at 95% confidence; the margin covers chance


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_bound_is_sound_and_nearly_tight_on_randomized_response(eps: float) -> None:
    """An eps-DP membership oracle (randomized response on the membership bit): the bound
    exceeds eps in at most ~5% of audits, and is not far below it."""
    rng = np.random.default_rng(int(eps * 10))
    keep = math.exp(eps) / (1 + math.exp(eps))
    m, trials, bounds = 1000, 100, []
    for _ in range(trials):
        included = rng.random(m) < 0.5
        released = np.where(rng.random(m) < keep, included, ~included)
        # scores: the released bit plus a tie-breaking jitter; guess only where the oracle spoke
        scores = released + 0.01 * rng.random(m)
        bounds.append(audit_scores(scores, included, k_in=m // 2, k_out=m // 2).epsilon_lb)
    bounds = np.array(bounds)
    assert np.mean(bounds > eps) <= 0.1
    assert np.median(bounds) > 0.7 * eps


def test_perfect_scores_get_every_guess_right() -> None:
    included = np.array([True, False] * 50)
    audit = audit_scores(included.astype(float), included, k_in=20, k_out=30)
    assert (audit.guesses, audit.correct) == (50, 50)
    assert audit.epsilon_lb == pytest.approx(epsilon_lower_bound(m=100, r=50, v=50))
    assert audit.metrics()["privacy/audit_correct"] == 50.0
    inverted = audit_scores(-included.astype(float), included, k_in=20, k_out=30)
    assert inverted.correct == 0 and inverted.epsilon_lb == 0.0


def test_ties_are_not_broken_by_membership() -> None:
    included = np.array([False] * 50 + [True] * 50)
    # equal scores: IN is guessed on the first ten positions (non-members), OUT on the last ten (members)
    audit = audit_scores(np.zeros(100), included, k_in=10, k_out=10)
    assert audit.correct == 0 and audit.epsilon_lb == 0.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"m": 5, "r": 6, "v": 1, "epsilon": 1.0}, "v <= r <= m"),
    ({"m": 5, "r": 4, "v": 5, "epsilon": 1.0}, "v <= r <= m"),
    ({"m": 5, "r": 4, "v": 1, "epsilon": -1.0}, "epsilon >= 0"),
    ({"m": 5, "r": 4, "v": 1, "epsilon": 1.0, "delta": 2.0}, "delta <= 1"),
])
def test_bad_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        p_value(**kwargs)


def test_bad_audits_are_rejected() -> None:
    with pytest.raises(ValueError, match="k_in \\+ k_out <= 4"):
        audit_scores([1, 2, 3, 4], [True, False, True, False], k_in=3, k_out=2)
    with pytest.raises(ValueError, match="NaN"):
        audit_scores([1, float("nan")], [True, False], k_in=1, k_out=1)
    with pytest.raises(ValueError, match="membership flags"):
        audit_scores([1, 2], [True], k_in=1, k_out=1)
    with pytest.raises(ValueError, match="confidence"):
        epsilon_lower_bound(m=4, r=2, v=2, confidence=1.0)


def test_module_doctests() -> None:
    assert doctest.testmod(suite.audit).failed == 0
