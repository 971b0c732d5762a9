"""The label-DP maths of the labeldp task, checked against the definition of DP, and the task end to end.

* RR and RR-with-prior: from the exact output distributions, every likelihood ratio
  P[out | y] / P[out | y'] is at most e^eps (and RR reaches it), and the samplers draw from them;
* ALIBI: eps = 2 / b, the Laplace density ratio of any noisy vector is at most e^eps, and the
  posterior is a distribution that matches Bayes' rule on a hand example;
* PATE: data-dependent RDP never above the data-independent bound, and below it with consensus;
  Proposition 7's q bounds the real disagreement rate;
* the canary lower bound: zero without signal, sound on an attack with known epsilon;
* each method through ``runners.cell.execute`` on a tiny config.
"""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from runners.cell import Cell, execute
from suite.errors import ConfigError
from suite.task import get_task
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


# --------------------------------------------------------------------------- RR


@settings(max_examples=40, deadline=None)
@given(eps=epsilons, k=class_counts)
def test_rr_likelihood_ratio_is_exactly_e_eps(eps: float, k: int) -> None:
    worst = _max_log_ratio(lambda y: mech.rr_distribution(y, epsilon=eps, k=k))
    assert worst == pytest.approx(eps, rel=1e-9)  # at most e^eps, and the bound is tight


def test_likelihood_check_catches_a_leaky_mechanism() -> None:
    """The checker itself can fail: RR run at 2 eps violates eps, and a deterministic map is infinite."""
    assert _max_log_ratio(lambda y: mech.rr_distribution(y, epsilon=2.0, k=5)) > 1.0 + 0.5
    assert _max_log_ratio(lambda y: np.eye(5)[y]) == math.inf


def test_rr_sampler_draws_from_the_exact_distribution() -> None:
    rng = np.random.default_rng(0)
    labels = np.full(40_000, 3)
    noisy = mech.randomized_response(labels, epsilon=1.0, k=6, rng=rng)
    freq = np.bincount(noisy, minlength=6) / len(noisy)
    np.testing.assert_allclose(freq, mech.rr_distribution(3, epsilon=1.0, k=6), atol=0.01)
    keep, other = mech.rr_probabilities(epsilon=1.0, k=6)
    assert keep == pytest.approx(math.e / (math.e + 5)) and other == pytest.approx(1 / (math.e + 5))


# --------------------------------------------------------------------------- RR-with-prior

priors = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=10).filter(lambda p: sum(p) > 1e-3).map(
    lambda p: np.asarray(p) / sum(p))


@settings(max_examples=60, deadline=None)
@given(eps=epsilons, prior=priors)
def test_rr_with_prior_likelihood_ratio_is_at_most_e_eps(eps: float, prior: np.ndarray) -> None:
    worst = _max_log_ratio(lambda y: mech.rr_prior_distribution(y, prior, epsilon=eps))
    assert worst <= eps * (1 + 1e-9)


@settings(max_examples=60, deadline=None)
@given(eps=epsilons, prior=priors)
def test_rr_with_prior_picks_the_k_that_maximises_the_true_label_probability(eps: float, prior: np.ndarray) -> None:
    top = mech.rr_prior_top_k(prior, epsilon=eps)
    # P[return the true label] when the label is drawn from the prior, for the chosen set...
    chosen = sum(prior[y] * mech.rr_prior_distribution(y, prior, epsilon=eps)[y] for y in range(len(prior)))
    # ...against every k by brute force over the top-k sets.
    order = np.argsort(-prior, kind="stable")
    best = max(prior[order[:k]].sum() * mech.rr_probabilities(epsilon=eps, k=k)[0] for k in range(1, len(prior) + 1))
    assert chosen == pytest.approx(best, rel=1e-9)
    assert set(top) == set(order[: len(top)])


def test_rr_with_prior_sampler_and_a_sharp_prior() -> None:
    prior = np.array([0.05, 0.9, 0.05, 0.0])
    # eps = 1: k = 1 (0.9 * 1) beats k = 2 (0.95 * e/(e+1) = 0.69): the answer is always class 1.
    assert mech.rr_prior_top_k(prior, epsilon=1.0).tolist() == [1]
    noisy, ks = mech.rr_with_prior(np.array([0, 1, 2, 3]), np.tile(prior, (4, 1)), epsilon=1.0,
                                   rng=np.random.default_rng(0))
    assert noisy.tolist() == [1, 1, 1, 1] and ks.tolist() == [1, 1, 1, 1]
    flat = np.full(4, 0.25)
    labels = np.full(20_000, 2)
    noisy, _ = mech.rr_with_prior(labels, np.tile(flat, (len(labels), 1)), epsilon=2.0, rng=np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(noisy, minlength=4) / len(labels),
                               mech.rr_distribution(2, epsilon=2.0, k=4), atol=0.012)


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


# --------------------------------------------------------------------------- canary audit


def test_canary_bound_is_zero_without_signal_and_grows_with_it() -> None:
    assert mech.canary_epsilon_lower_bound(planted_hits=5, planted_trials=50, control_hits=5, control_trials=50) == 0
    bounds = [mech.canary_epsilon_lower_bound(planted_hits=h, planted_trials=100, control_hits=2, control_trials=100)
              for h in (10, 40, 70, 100)]
    assert bounds[0] == 0 < bounds[1] < bounds[2] < bounds[3]
    with pytest.raises(ValueError):
        mech.canary_epsilon_lower_bound(planted_hits=3, planted_trials=2, control_hits=0, control_trials=2)


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_canary_bound_is_sound_and_nearly_tight_on_randomized_response(eps: float) -> None:
    """The attack on RR: it "predicts" the planted label when RR returns it. Hit rates are
    e^eps / (e^eps + 9) planted and 1 / (e^eps + 9) control, a ratio of exactly e^eps."""
    keep, other = mech.rr_probabilities(epsilon=eps, k=10)
    rng, n = np.random.default_rng(0), 200_000
    bound = mech.canary_epsilon_lower_bound(planted_hits=int(rng.binomial(n, keep)), planted_trials=n,
                                            control_hits=int(rng.binomial(n, other)), control_trials=n)
    assert 0.9 * eps < bound <= eps


def test_module_doctests() -> None:
    from suite import cache

    assert doctest.testmod(mech).failed == 0 and doctest.testmod(cache).failed == 0


# --------------------------------------------------------------------------- the task


def test_config_requires_budget_for_private_methods_and_drops_it_otherwise() -> None:
    task = get_task("labeldp")
    with pytest.raises(ConfigError, match="needs epsilon"):
        task.resolve("quick", {"method": "rr", "epsilon": None})
    with pytest.raises(ConfigError, match="needs delta"):
        task.resolve("quick", {"method": "pate_fm", "delta": None})
    plain = task.resolve("quick", {"method": "nonprivate", "epsilon": 3.0})
    assert plain.epsilon is None and plain.delta is None and task().privacy_unit(plain) == "none"
    assert task.resolve("quick", {"method": "alibi"}).delta is None
    for method, accountant in [("rr", "rr"), ("alibi", "laplace"), ("pate_fm", "pate-rdp-data-dependent")]:
        config = task.resolve("quick", {"method": method})
        assert task().privacy_unit(config) == "label" and task().accountant(config) == accountant


# Four teachers leave no room for consensus: PATE's budget buys a few queries at eps 8 with noise 3.
TINY = {"epochs": 2, "teacher_epochs": 2, "n_teachers": 4, "max_queries": 30, "n_canaries": 5, "epsilon": 8.0,
        "threshold": 2.0, "sigma_threshold": 3.0, "sigma_gnmax": 3.0, "train_subset": 400}


@pytest.mark.parametrize("method", ["nonprivate", "rr", "rr_prior", "alibi", "pate_fm"])
def test_each_method_runs_end_to_end(method: str) -> None:
    task = get_task("labeldp")
    config = task.resolve("quick", {**TINY, "method": method})
    m = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert 0 <= m["utility/accuracy"] <= 1 and m["compute/params"] > 0
    assert 0 <= m["privacy/canary_planted_rate"] <= 1 and m["privacy/audit_epsilon_lb"] >= 0
    if method == "nonprivate":
        assert "privacy/epsilon" not in m
        return
    if method == "pate_fm":
        assert 0 < m["privacy/epsilon"] <= 8.0 and m["privacy/delta"] == 1e-5
        assert m["privacy/epsilon"] <= m["privacy/epsilon_data_independent"]
        assert 0 < m["privacy/queries_answered"] <= m["privacy/queries_asked"] <= 30
        assert m["privacy/sigma_gnmax"] == 3.0 and m["privacy/threshold"] == 2.0
    else:
        assert m["privacy/epsilon"] == pytest.approx(8.0)
    if method == "rr":
        assert m["privacy/rr_flip_probability"] == pytest.approx(1 - math.exp(8) / (math.exp(8) + 9))
    if method == "alibi":
        assert m["privacy/laplace_scale"] == pytest.approx(0.25)
    if method == "rr_prior":
        assert 1 <= m["privacy/rr_prior_mean_k"] <= 10


def test_pate_semi_supervised_teachers_beat_supervised_ones_and_both_paths_run() -> None:
    """Label spreading over all (public) features is why the quick tier's teachers are usable;
    the supervised CNN teachers and pseudo-labelled student are the full tier's path."""
    task = get_task("labeldp")
    runs = {}
    for teacher, student in [("label_spreading", "label_spreading"), ("cnn", "pseudo_label")]:
        config = task.resolve("quick", {**TINY, "method": "pate_fm", "teacher_model": teacher, "student_labels": student})
        runs[teacher] = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert runs["label_spreading"]["utility/teacher_accuracy"] > runs["cnn"]["utility/teacher_accuracy"] + 0.1
    assert all(0 < m["privacy/queries_answered"] and 0 <= m["utility/accuracy"] <= 1 for m in runs.values())


# --------------------------------------------------------------------------- teacher-vote cache


def test_cache_hits_misses_on_a_different_key_and_recomputes_a_corrupt_file(tmp_path) -> None:
    from suite.cache import cached_arrays

    calls = []

    def compute(value: float, rows: int = 3):
        def run():
            calls.append(value)
            return {"votes": np.full((rows, 2), value), "acc": np.asarray(value)}
        return run

    shapes = {"votes": (3, 2), "acc": ()}
    labels = np.array([0, 1, 1])
    first = cached_arrays({"labels": labels}, compute(1.0), shapes=shapes, root=tmp_path)
    hit = cached_arrays({"labels": labels.copy()}, compute(2.0), shapes=shapes, root=tmp_path)
    assert (first.hit, hit.hit) == (False, True) and calls == [1.0]
    np.testing.assert_array_equal(hit.arrays["votes"], first.arrays["votes"])
    # One label changed (as a different canary would) is a different key.
    other = cached_arrays({"labels": np.array([0, 1, 2])}, compute(3.0), shapes=shapes, root=tmp_path)
    assert not other.hit and other.path != first.path and calls == [1.0, 3.0]
    # A truncated file, and one holding the wrong shape, are recomputed and replaced.
    first.path.write_bytes(first.path.read_bytes()[:40])
    again = cached_arrays({"labels": labels}, compute(4.0), shapes=shapes, root=tmp_path)
    assert not again.hit and calls[-1] == 4.0
    wrong = cached_arrays({"labels": labels}, compute(5.0, rows=4), shapes={"votes": (4, 2), "acc": ()}, root=tmp_path)
    assert not wrong.hit and wrong.arrays["votes"].shape == (4, 2)
    assert cached_arrays({"labels": labels}, compute(6.0, rows=4), shapes={"votes": (4, 2), "acc": ()}, root=tmp_path).hit


def test_pate_run_is_identical_whether_its_teacher_votes_are_cached(tmp_path, monkeypatch) -> None:
    """The second cell reads the votes the first one trained; only compute/* may differ. A
    different seed plants other canaries and partitions otherwise: it must train its own."""
    monkeypatch.setenv("SUITE_CACHE", str(tmp_path))
    task = get_task("labeldp")

    def run(**over):
        config = task.resolve("quick", {**TINY, "method": "pate_fm", **over})
        return execute(Cell.make(task, "quick", config), threads=1).metrics

    fresh, cached, other_eps, other_seed = run(), run(), run(epsilon=4.0), run(seed=1)
    assert fresh["compute/teachers_cached"] == 0 and cached["compute/teachers_cached"] == 1
    assert other_eps["compute/teachers_cached"] == 1 and other_seed["compute/teachers_cached"] == 0
    same = {k: v for k, v in fresh.items() if not k.startswith("compute/")}
    assert same == {k: v for k, v in cached.items() if not k.startswith("compute/")}
    assert other_eps["utility/teacher_accuracy"] == fresh["utility/teacher_accuracy"]


def test_reported_rr_epsilons_come_from_the_mechanisms_distributions() -> None:
    from tasks.labeldp import mechanisms as m

    assert m.rr_epsilon(epsilon=2.0, k=10) == pytest.approx(2.0, rel=1e-12)
    # RR-with-prior: answer sets of one class reveal nothing; any larger set costs exactly epsilon
    assert m.rr_prior_epsilon(epsilon=3.0, ks=np.array([1, 1]), n_classes=10) == 0.0
    assert m.rr_prior_epsilon(epsilon=3.0, ks=np.array([1, 2, 7]), n_classes=10) == pytest.approx(3.0, rel=1e-12)
    # a mechanism that never answers some output for one label but does for another is not DP
    assert m.worst_case_epsilon(np.array([[1.0, 0.0], [0.5, 0.5]])) == float("inf")


# --------------------------------------------------------------------------- planted bug


def test_canary_audit_catches_randomized_response_that_never_flips(monkeypatch: pytest.MonkeyPatch) -> None:
    """RR that returns every label unchanged still reports its claim; the canaries expose it."""
    task = get_task("labeldp")
    config = task.resolve("quick", {"method": "rr", "epsilon": 0.5, "train_subset": 400, "n_canaries": 40,
                                     "epochs": 60})
    honest = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert honest["privacy/audit_epsilon_lb"] < honest["privacy/epsilon"] == pytest.approx(0.5)
    monkeypatch.setattr(mech, "randomized_response", lambda labels, *, epsilon, k, rng: labels.copy())
    broken = execute(Cell.make(task, "quick", config), threads=1).metrics
    assert broken["privacy/epsilon"] == pytest.approx(0.5)
    assert broken["privacy/audit_epsilon_lb"] > broken["privacy/epsilon"]
