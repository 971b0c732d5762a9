"""The label-DP maths of the labeldp task, checked against the definition of DP (no training).

* RR and RR-with-prior channels: every likelihood ratio P[out | y] / P[out | y'] is at most
  e^eps (and RR reaches it), ``channel_epsilon`` equals a brute-force check, and the sampler
  draws from the channel it is given (never an output of probability 0);
* ALIBI: eps = 2 / b, the Laplace density ratio of any noisy vector is at most e^eps, and the
  posterior is a distribution that matches Bayes' rule on a hand example;
* PATE: data-dependent RDP never above the data-independent bound, and below it with consensus;
  Proposition 7's q bounds the real disagreement rate; the query budget is the largest count
  within the target, and the data-independent bound agrees with the shared accountants.
"""

from __future__ import annotations

import doctest
import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tasks.labeldp import mechanisms as mech
from tasks.labeldp import pate

epsilons = st.floats(0.05, 12.0)
class_counts = st.integers(2, 10)


def _max_log_ratio(distribution) -> float:
    """max over true labels y, y' and outputs o of log P[o|y] / P[o|y']; inf when P[o|y'] = 0 < P[o|y]."""
    worst = 0.0
    k = len(distribution(0))
    rows = [distribution(y) for y in range(k)]
    for p, q in itertools.product(rows, repeat=2):
        assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
        for po, qo in zip(p, q):
            if po > 0:
                worst = max(worst, math.inf if qo == 0 else math.log(po / qo))
    return worst


# --------------------------------------------------------------------------- channels and RR


@settings(max_examples=40, deadline=None)
@given(eps=epsilons, k=class_counts)
def test_rr_likelihood_ratio_is_exactly_e_eps(eps: float, k: int) -> None:
    channel = mech.rr_channel(epsilon=eps, k=k)
    assert _max_log_ratio(lambda y: channel[y]) == pytest.approx(eps, rel=1e-9)  # at most e^eps, and tight
    assert mech.channel_epsilon(channel) == pytest.approx(eps, rel=1e-9)


def test_likelihood_check_catches_a_leaky_mechanism() -> None:
    """The checker itself can fail: RR run at 2 eps violates eps, and a deterministic map is infinite."""
    assert _max_log_ratio(lambda y: mech.rr_channel(epsilon=2.0, k=5)[y]) > 1.0 + 0.5
    assert _max_log_ratio(lambda y: np.eye(5)[y]) == math.inf


channels = st.integers(2, 6).flatmap(lambda k: st.lists(
    st.lists(st.sampled_from([0.0, 0.01, 0.2, 1.0, 3.0]), min_size=k, max_size=k).filter(lambda r: sum(r) > 0),
    min_size=k, max_size=k)).map(lambda rows: np.array([np.asarray(r) / sum(r) for r in rows]))


@settings(max_examples=80, deadline=None)
@given(channel=channels)
def test_channel_epsilon_is_the_worst_likelihood_ratio(channel: np.ndarray) -> None:
    expected = _max_log_ratio(lambda y: channel[y])
    assert mech.channel_epsilon(channel) == pytest.approx(expected, rel=1e-12)
    # A stack of channels (one per label) is as private as its worst member.
    stack = np.stack([mech.rr_channel(epsilon=0.3, k=len(channel)), channel])
    assert mech.channel_epsilon(stack) == pytest.approx(max(0.3, expected), rel=1e-12)


def test_channel_epsilon_rejects_what_is_not_a_channel() -> None:
    for bad in (np.ones((2, 3)) / 3, np.array([[0.5, 0.6], [0.5, 0.5]]), np.array([[1.5, -0.5], [0.5, 0.5]])):
        with pytest.raises(ValueError):
            mech.channel_epsilon(bad)


def test_sampler_draws_from_the_channel_it_is_given() -> None:
    rng = np.random.default_rng(0)
    noisy = mech.sample_channel(np.full(40_000, 3), mech.rr_channel(epsilon=1.0, k=6), rng=rng)
    np.testing.assert_allclose(np.bincount(noisy, minlength=6) / len(noisy), mech.rr_channel(epsilon=1.0, k=6)[3],
                               atol=0.01)
    keep, other = mech.rr_probabilities(epsilon=1.0, k=6)
    assert keep == pytest.approx(math.e / (math.e + 5)) and other == pytest.approx(1 / (math.e + 5))
    # One channel per label: each label is drawn from its own row.
    stack = np.array([np.eye(3), np.full((3, 3), 1 / 3)])
    labels = np.array([2, 2] * 5000)
    out = mech.sample_channel(labels, np.tile(stack, (5000, 1, 1)), rng=rng)
    assert (out[0::2] == 2).all() and abs(np.mean(out[1::2] == 0) - 1 / 3) < 0.02


def test_sampler_never_draws_an_output_of_probability_zero() -> None:
    """A row whose cumulative sum rounds below 1 must not hand the remainder to an impossible output."""
    row = np.array([0.7, 0.2, 0.1, 0.0])
    assert np.cumsum(row)[-1] < 1.0  # 0.9999999999999999

    class TopOfUnitInterval:  # the largest draw a float64 uniform generator returns
        def random(self, n: int) -> np.ndarray:
            return np.full(n, 1.0 - 2.0**-53)

    assert mech.sample_channel(np.zeros(3, dtype=int), np.tile(row, (4, 1)), rng=TopOfUnitInterval()).tolist() == [2] * 3


# --------------------------------------------------------------------------- RR-with-prior

priors = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=10).filter(lambda p: sum(p) > 1e-3).map(
    lambda p: np.asarray(p) / sum(p))


@settings(max_examples=60, deadline=None)
@given(eps=epsilons, prior=priors)
def test_rr_with_prior_likelihood_ratio_is_at_most_e_eps(eps: float, prior: np.ndarray) -> None:
    channel = mech.rr_prior_channels(prior[None], epsilon=eps)[0]
    assert _max_log_ratio(lambda y: channel[y]) <= eps * (1 + 1e-9)
    assert mech.channel_epsilon(channel) == pytest.approx(_max_log_ratio(lambda y: channel[y]), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(eps=epsilons, prior=priors)
def test_rr_with_prior_picks_the_k_that_maximises_the_true_label_probability(eps: float, prior: np.ndarray) -> None:
    top = mech.rr_prior_top_k(prior, epsilon=eps)
    channel = mech.rr_prior_channels(prior[None], epsilon=eps)[0]
    # P[return the true label] when the label is drawn from the prior, for the chosen set...
    chosen = sum(prior[y] * channel[y, y] for y in range(len(prior)))
    # ...against every k by brute force over the top-k sets.
    order = np.argsort(-prior, kind="stable")
    best = max(prior[order[:k]].sum() * mech.rr_probabilities(epsilon=eps, k=k)[0] for k in range(1, len(prior) + 1))
    assert chosen == pytest.approx(best, rel=1e-9)
    assert set(np.flatnonzero(top)) == set(order[: top.sum()])
    assert mech.answer_set_sizes(channel[None]).tolist() == [top.sum()]


def test_rr_with_prior_channels_and_a_sharp_prior() -> None:
    prior = np.array([0.05, 0.9, 0.05, 0.0])
    # eps = 1: k = 1 (0.9 * 1) beats k = 2 (0.95 * e/(e+1) = 0.69): the answer is always class 1,
    # whatever the label, which reveals nothing about it.
    assert mech.rr_prior_top_k(prior, epsilon=1.0).tolist() == [False, True, False, False]
    sharp = mech.rr_prior_channels(np.tile(prior, (4, 1)), epsilon=1.0)
    assert mech.sample_channel(np.array([0, 1, 2, 3]), sharp, rng=np.random.default_rng(0)).tolist() == [1, 1, 1, 1]
    assert mech.channel_epsilon(sharp) == 0.0
    # A uniform prior answers from every class: plain RR.
    flat = mech.rr_prior_channels(np.full((1, 4), 0.25), epsilon=2.0)[0]
    np.testing.assert_allclose(flat, mech.rr_channel(epsilon=2.0, k=4), rtol=1e-12)


# --------------------------------------------------------------------------- ALIBI


@settings(max_examples=40, deadline=None)
@given(eps=epsilons, k=class_counts, data=st.data())
def test_alibi_epsilon_is_two_over_b_and_bounds_the_density_ratio(eps: float, k: int, data) -> None:
    b = mech.alibi_scale(epsilon=eps)
    assert b == pytest.approx(2 / eps) and mech.alibi_epsilon(scale=b) == pytest.approx(eps)
    noisy = np.asarray(data.draw(st.lists(st.floats(-5, 6), min_size=k, max_size=k)))
    log_density = [stats.laplace.logpdf(noisy - np.eye(k)[y], scale=b).sum() for y in range(k)]
    assert max(log_density) - min(log_density) <= eps * (1 + 1e-9) + 1e-12
    post = mech.alibi_posterior(noisy, np.full(k, 1 / k), scale=b)[0]
    assert post.sum() == pytest.approx(1.0) and (post >= 0).all()


def test_alibi_posterior_matches_bayes_rule_by_hand() -> None:
    noisy, prior, b = np.array([0.7, -0.2, 1.4]), np.array([0.5, 0.3, 0.2]), 0.8
    # Bayes' rule written out: prior times the Laplace densities of the three coordinates.
    joint = np.array([prior[c] * np.prod([math.exp(-abs(noisy[j] - (j == c)) / b) / (2 * b) for j in range(3)])
                      for c in range(3)])
    expected = joint / joint.sum()
    np.testing.assert_allclose(mech.alibi_posterior(noisy, prior, scale=b)[0], expected, rtol=1e-12)
    # By hand: prior_c * exp((|o_c| - |o_c - 1|) / b) = 0.5 e^0.5, 0.3 e^-1.25, 0.2 e^1.25, normalised.
    np.testing.assert_allclose(expected, [0.5125, 0.0534, 0.4340], atol=1e-4)


def test_alibi_noise_has_the_laplace_scale() -> None:
    noise = mech.alibi_noise(np.zeros((20_000, 5)), scale=2.0, rng=np.random.default_rng(0)).ravel()
    assert np.mean(np.abs(noise)) == pytest.approx(2.0, rel=0.02)  # E|Laplace(b)| = b


# --------------------------------------------------------------------------- PATE

histograms = st.lists(st.integers(0, 60), min_size=10, max_size=10).filter(lambda v: sum(v) > 0).map(np.asarray)


@settings(max_examples=80, deadline=None)
@given(votes=histograms, sigma=st.floats(1.0, 60.0), sigma1=st.floats(1.0, 100.0), threshold=st.floats(0, 80))
def test_pate_data_dependent_rdp_never_above_data_independent(votes, sigma, sigma1, threshold) -> None:
    dependent = pate.gnmax_rdp(votes, sigma=sigma)
    assert np.all(dependent >= 0) and np.all(np.isfinite(dependent))
    assert np.all(dependent <= pate.gnmax_rdp_data_independent(sigma=sigma) * (1 + 1e-12))
    log_q = pate.gnmax_log_q(votes, sigma=sigma)
    raw = pate.theorem6_rdp(log_q=log_q, base_rdp=lambda mu: mu / sigma**2, mu1=sigma * math.sqrt(-log_q) + 1,
                            mu2=sigma * math.sqrt(-log_q))
    # The reported cost is Theorem 6 where it applies, capped: uncapped, it can exceed the
    # data-independent bound at low consensus (votes [0,...,0,2,4], sigma 1: 2.19 > 2 at order 2).
    np.testing.assert_allclose(dependent, np.minimum(raw, pate.gnmax_rdp_data_independent(sigma=sigma)), rtol=1e-12)
    threshold_cost = pate.threshold_rdp(votes, sigma=sigma1, threshold=threshold)
    assert np.all(threshold_cost >= 0)
    assert np.all(threshold_cost <= pate.threshold_rdp_data_independent(sigma=sigma1) * (1 + 1e-12))


def test_pate_consensus_is_cheaper_and_costs_grow_as_it_fades() -> None:
    costs = [pate.gnmax_rdp(np.array([50 - d, d] + [0] * 8), sigma=8.0)[0] for d in (0, 5, 10, 15, 25)]
    assert costs[0] < pate.gnmax_rdp_data_independent(sigma=8.0)[0] / 100  # unanimity: nearly free
    assert costs == sorted(costs)  # less consensus, more cost
    assert costs[-1] == pytest.approx(pate.gnmax_rdp_data_independent(sigma=8.0)[0])  # a tie: no saving


@pytest.mark.parametrize("votes", [[30, 25, 5, 0], [20, 18, 17, 5], [40, 10, 10, 0]])
def test_proposition7_q_bounds_the_disagreement_rate(votes) -> None:
    sigma, rng = 4.0, np.random.default_rng(0)
    noisy = np.asarray(votes, dtype=float) + rng.normal(0, sigma, size=(100_000, len(votes)))
    rate = float((noisy.argmax(1) != np.argmax(votes)).mean())
    q = math.exp(pate.gnmax_log_q(np.asarray(votes), sigma=sigma))
    assert rate <= q + 0.005
    assert rate > q / 10 or q < 1e-3  # a bound, but not a vacuous one


def test_rdp_to_epsilon_is_no_worse_than_mironov() -> None:
    rdp = pate.gnmax_rdp_data_independent(sigma=10.0) * 20
    mironov = float(np.min(rdp + math.log(1e5) / (pate.ORDERS - 1)))
    eps = pate.rdp_to_epsilon(rdp, delta=1e-5)
    assert 0.8 * mironov < eps <= mironov




def test_query_budget_is_the_largest_count_within_the_target() -> None:
    kw = {"sigma_threshold": 30.0, "sigma_gnmax": 8.0}
    for eps in (0.5, 1.0, 2.0, 4.0, 8.0):
        n = pate.query_budget(epsilon=eps, delta=1e-5, max_queries=10_000, **kw)
        assert pate.data_independent_epsilon(queries=n, delta=1e-5, **kw) <= eps
        assert pate.data_independent_epsilon(queries=n + 1, delta=1e-5, **kw) > eps
    assert pate.query_budget(epsilon=8.0, delta=1e-5, max_queries=10, **kw) == 10  # the cap binds
    assert pate.query_budget(epsilon=0.5, delta=1e-5, max_queries=10, **kw) == 0  # one query costs 0.71
    assert pate.data_independent_epsilon(queries=0, delta=1e-5, **kw) == 0.0


@pytest.mark.parametrize("queries", [1, 6, 23, 75])
def test_pate_data_independent_bound_agrees_with_the_shared_accountants(queries: int) -> None:
    """The same queries as a composition of Gaussian mechanisms: threshold test (std sigma1, L2
    sensitivity 1) and GNMax (std sigma2, L2 sensitivity sqrt 2), each asked ``queries`` times."""
    from suite.privacy import all_epsilons

    from opacus.accountants import RDPAccountant

    history = [(30.0, 1.0, queries), (8.0 / math.sqrt(2), 1.0, queries)]
    ours = pate.data_independent_epsilon(queries=queries, sigma_threshold=30.0, sigma_gnmax=8.0, delta=1e-5)
    shared = all_epsilons(history=history, delta=1e-5, sampler="none")
    assert ours == pytest.approx(shared["privacy/epsilon_rdp"], rel=0.02)
    # Our orders include every order Opacus tries by default (and larger ones), with the same
    # conversion: never looser than Opacus' RDP accountant on its default orders.
    opacus = RDPAccountant()
    opacus.history = history
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "optimal order is the largest alpha" at 1 query
        assert ours <= opacus.get_epsilon(delta=1e-5) * (1 + 1e-9)
    # PRV and PLD are tighter than any RDP conversion, and agree with each other.
    assert shared["privacy/epsilon_pld"] < ours
    assert shared["privacy/epsilon_prv"] == pytest.approx(shared["privacy/epsilon_pld"], rel=0.03)


def test_module_doctests() -> None:
    import suite.privacy

    for module in (mech, pate, suite.privacy):
        assert doctest.testmod(module).failed == 0, module.__name__
