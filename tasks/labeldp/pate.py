"""PATE's aggregation and its RDP accounting, written from Papernot et al. 2018,
"Scalable Private Learning with PATE" (ICLR 2018; equation and result numbers of the arXiv
version 1802.08908). Pure functions of vote histograms and noise scales (numpy, scipy).

What is followed:

* GNMax: argmax_j {n_j + N(0, sigma^2)}, (lambda, lambda / sigma^2)-RDP for every order
  lambda, whatever the votes (Proposition 8): the data-independent bound.
* Its data-dependent bound (Theorem 6) from q, an upper bound on the probability that the
  noisy argmax is not the plurality i* (Proposition 7:
  q <= sum_{i != i*} 1/2 erfc((n_i* - n_i) / (2 sigma)), also capped by 1 - 1/K because the
  plurality is at least as likely as any other class), with the higher orders mu1, mu2 chosen
  as the paper does for the Gaussian mechanism (Appendix, mu2 = sigma sqrt(log 1/q),
  mu1 = mu2 + 1), taken only where Theorem 6's conditions hold.
* Confident GNMax (Algorithm 1): answer only when max_j n_j + N(0, sigma1^2) >= T. The
  threshold test is a Gaussian mechanism on the maximal count (sensitivity 1), hence
  (lambda, lambda / (2 sigma1^2))-RDP, and Theorem 6 applies to it as well with q the exact
  probability of its less likely outcome (answered / not answered). Each query pays the
  threshold step; only answered queries pay GNMax (as in the paper's Sec. 4.1 accounting).
* RDP to (eps, delta): the paper uses Mironov 2017, Proposition 3,
  eps = min_lambda rdp(lambda) + log(1/delta) / (lambda - 1); we use its refinement by
  Balle et al. 2020 (Theorem 21), rdp + log((lambda - 1) / lambda) - (log delta + log lambda) / (lambda - 1),
  which is never larger and is what Opacus and dp_accounting use for DP-SGD in this suite.

What a run releases as its guarantee is the **data-independent** bound: the number of
queries is fixed before any vote is seen (:func:`query_budget`, from the noise scales and the
target alone) and every query asked is charged both steps, answered or not, so the total is a
composition of Gaussian mechanisms whatever the votes. The data-dependent bound
(:func:`data_dependent_rdp`) is reported beside it, never as the guarantee: the paper's
smooth-sensitivity release of it (Sec. 4.3) is not done here, so it is itself a function of the
private votes. Every data-dependent quantity is capped at its data-independent value.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

# Orders as the paper's code uses them (every integer to 50, then log-spaced to 1000), plus the
# fractional orders 1.1 ... 10.9 that Opacus also tries: an RDP curve holds at every order > 1,
# and for many composed queries the best order is below 2.
ORDERS = np.unique(np.concatenate([1 + np.arange(1, 100) / 10, np.arange(2, 51, dtype=float),
                                   np.round(np.logspace(np.log10(50), 3, 20))]))


def gnmax_rdp_data_independent(*, sigma: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """Proposition 8: GNMax with noise N(0, sigma^2) per count is (lambda, lambda / sigma^2)-RDP."""
    return np.asarray(orders, dtype=float) / sigma**2


def threshold_rdp_data_independent(*, sigma: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """The threshold test: a Gaussian mechanism of sensitivity 1, (lambda, lambda / (2 sigma^2))-RDP."""
    return np.asarray(orders, dtype=float) / (2 * sigma**2)


def gnmax_log_q(votes: np.ndarray, *, sigma: float) -> float:
    """log of Proposition 7's bound on P[noisy argmax != plurality]; n_i - n_i* + noise
    difference ~ N(0, 2 sigma^2), so each term is the normal tail at (n_i* - n_i) / (sqrt(2) sigma)."""
    votes = np.asarray(votes, dtype=float)
    top = int(np.argmax(votes))
    gaps = votes[top] - np.delete(votes, top)
    log_terms = stats.norm.logsf(gaps, scale=math.sqrt(2) * sigma)
    return min(float(np.logaddexp.reduce(log_terms)), math.log1p(-1.0 / len(votes)))


def threshold_log_q(votes: np.ndarray, *, sigma: float, threshold: float) -> float:
    """log of the exact probability of the threshold test's less likely outcome."""
    log_answer = float(stats.norm.logsf(threshold - np.max(votes), scale=sigma))
    log_silent = float(stats.norm.logcdf(threshold - np.max(votes), scale=sigma))
    return min(log_answer, log_silent)


def theorem6_rdp(*, log_q: float, base_rdp: Callable[[float], float], mu1: float, mu2: float,
                 orders: np.ndarray = ORDERS) -> np.ndarray:
    """Theorem 6's data-dependent RDP at each order, ``inf`` where the theorem does not apply.

    The mechanism is (mu_i, base_rdp(mu_i))-RDP for i = 1, 2 and returns its likely outcome
    with probability >= 1 - q. For lambda <= mu1 and q below the theorem's bound,
    D_lambda <= log((1 - q) A^(lambda - 1) + q B^(lambda - 1)) / (lambda - 1), with
    A = (1 - q) / (1 - (q e^eps2)^((mu2 - 1) / mu2)) and B = e^eps1 / q^(1 / (mu1 - 1)).
    """
    orders = np.asarray(orders, dtype=float)
    out = np.full(orders.shape, np.inf)
    if not (mu1 > 1 and mu2 > 1 and log_q < 0):
        return out
    eps1, eps2 = base_rdp(mu1), base_rdp(mu2)
    log_q_max = (mu2 - 1) * eps2 - mu2 * (math.log(mu1 / (mu1 - 1)) + math.log(mu2 / (mu2 - 1)))
    if log_q > log_q_max or log_q + eps2 >= 0:  # outside the theorem, or A would not be positive
        return out
    log_1q = math.log(-math.expm1(log_q))
    log_a = log_1q - math.log(-math.expm1((log_q + eps2) * (mu2 - 1) / mu2))
    log_b = eps1 - log_q / (mu1 - 1)
    ok = orders <= mu1
    lam = orders[ok]
    out[ok] = np.logaddexp(log_1q + (lam - 1) * log_a, log_q + (lam - 1) * log_b) / (lam - 1)
    return out


def gnmax_rdp(votes: np.ndarray, *, sigma: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """GNMax's data-dependent RDP for one query, capped by the data-independent bound."""
    independent = gnmax_rdp_data_independent(sigma=sigma, orders=orders)
    log_q = gnmax_log_q(votes, sigma=sigma)
    mu2 = sigma * math.sqrt(-log_q)
    dependent = theorem6_rdp(log_q=log_q, base_rdp=lambda mu: mu / sigma**2, mu1=mu2 + 1, mu2=mu2, orders=orders)
    return np.minimum(dependent, independent)


def threshold_rdp(votes: np.ndarray, *, sigma: float, threshold: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """The threshold test's data-dependent RDP for one query, capped by the data-independent bound."""
    independent = threshold_rdp_data_independent(sigma=sigma, orders=orders)
    log_q = threshold_log_q(votes, sigma=sigma, threshold=threshold)
    mu2 = sigma * math.sqrt(-2 * log_q)  # the same choice for a Gaussian of variance sigma^2 / 2 per unit
    dependent = theorem6_rdp(log_q=log_q, base_rdp=lambda mu: mu / (2 * sigma**2), mu1=mu2 + 1, mu2=mu2,
                             orders=orders)
    return np.minimum(dependent, independent)


def rdp_to_epsilon(rdp: np.ndarray, *, delta: float, orders: np.ndarray = ORDERS) -> float:
    """(lambda, r)-RDP at every order gives (eps, delta)-DP with (Balle et al. 2020, Theorem 21)
    eps = min_lambda r + log1p(-1 / lambda) - (log delta + log lambda) / (lambda - 1), floored at 0."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    lam = np.asarray(orders, dtype=float)
    eps = np.asarray(rdp) + np.log1p(-1 / lam) - (math.log(delta) + np.log(lam)) / (lam - 1)
    return max(0.0, float(np.min(eps)))


def confident_gnmax(votes: np.ndarray, *, sigma_threshold: float, sigma_gnmax: float, threshold: float,
                    rng: np.random.Generator) -> int | None:
    """Algorithm 1 for one query: the noisy argmax, or None when the noisy maximal count is below T."""
    votes = np.asarray(votes, dtype=float)
    if votes.max() + rng.normal(0.0, sigma_threshold) < threshold:
        return None
    return int(np.argmax(votes + rng.normal(0.0, sigma_gnmax, size=votes.shape)))


def query_rdp_data_independent(*, sigma_threshold: float, sigma_gnmax: float,
                               orders: np.ndarray = ORDERS) -> np.ndarray:
    """RDP of one confident-GNMax query charged both steps, whatever its votes and outcome."""
    return (threshold_rdp_data_independent(sigma=sigma_threshold, orders=orders)
            + gnmax_rdp_data_independent(sigma=sigma_gnmax, orders=orders))


def data_independent_epsilon(*, queries: int, sigma_threshold: float, sigma_gnmax: float, delta: float) -> float:
    """(eps, delta) of ``queries`` confident-GNMax queries by the data-independent RDP bound; 0 for none
    (nothing about the private labels is released)."""
    if queries < 0:
        raise ValueError(f"queries must be >= 0, got {queries}")
    if queries == 0:
        return 0.0
    per_query = query_rdp_data_independent(sigma_threshold=sigma_threshold, sigma_gnmax=sigma_gnmax)
    return rdp_to_epsilon(queries * per_query, delta=delta)


def query_budget(*, epsilon: float, delta: float, sigma_threshold: float, sigma_gnmax: float, max_queries: int) -> int:
    """The most queries, at most ``max_queries``, whose data-independent cost is within (epsilon, delta).

    A function of the target and the noise scales only, so the number of queries never
    depends on the private votes.

    >>> query_budget(epsilon=8.0, delta=1e-5, sigma_threshold=30.0, sigma_gnmax=8.0, max_queries=400)
    75
    """
    def fits(n: int) -> bool:
        return data_independent_epsilon(queries=n, sigma_threshold=sigma_threshold, sigma_gnmax=sigma_gnmax,
                                        delta=delta) <= epsilon

    if fits(max_queries):
        return max_queries
    lo, hi = 0, max_queries  # fits(lo) (0 queries cost nothing), not fits(hi); the cost grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def data_dependent_rdp(votes: np.ndarray, answered: np.ndarray, *, sigma_threshold: float, sigma_gnmax: float,
                       threshold: float, orders: np.ndarray = ORDERS) -> np.ndarray:
    """Data-dependent RDP of the queries asked (one row of ``votes`` each): every query pays its
    threshold test, the answered ones also GNMax (the paper's Sec. 4.1 accounting). Reported
    beside the guarantee, never as it: it is a function of the private votes."""
    total = np.zeros(len(orders))
    for row, was_answered in zip(np.asarray(votes), np.asarray(answered, dtype=bool)):
        total += threshold_rdp(row, sigma=sigma_threshold, threshold=threshold, orders=orders)
        if was_answered:
            total += gnmax_rdp(row, sigma=sigma_gnmax, orders=orders)
    return total
