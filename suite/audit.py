"""One-run privacy auditing (Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run", 2023).

m canaries are each put into the training set with probability 1/2, independently. After
training the auditor scores every canary (higher: "looks trained on"), guesses IN for the
``k_in`` highest scores and OUT for the ``k_out`` lowest, and abstains on the rest. Under
(eps, delta)-DP the number of correct guesses W out of r = k_in + k_out is stochastically
dominated by Binomial(r, e^eps / (1 + e^eps)), plus a delta term (the paper's Theorem 3.1 and
Appendix D): P[W >= v] <= beta + alpha * 2 m delta with beta = P[Binomial(r, q) >= v] and
alpha = max_i P[v - i <= Binomial(r, q) < v] / i. The audit's epsilon lower bound is the
largest eps whose p-value is still below 1 - confidence: a run that really is (eps, delta)-DP
reports a bound above eps with probability at most 1 - confidence.

Written here rather than imported: the paper's reference code is a snippet in an appendix, not
a maintained library; these few lines are tested against the properties the theorem implies
(tests/test_audit.py).

The number of guesses must be fixed before the scores are seen (choosing the best k after
looking would void the confidence level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Upper bound on P[at least ``v`` of ``r`` guesses correct] for an (epsilon, delta)-DP training run.

    ``m`` canaries in all (each included with probability 1/2), ``r`` guesses (abstentions
    excluded), ``v`` of them correct.

    >>> round(p_value(m=10, r=10, v=10, epsilon=0.0), 6)  # ten fair coin flips all right
    0.000977
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m (got v={v}, r={r}, m={m})")
    if not epsilon >= 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1 (got epsilon={epsilon}, delta={delta})")
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0  # accuracy of eps-DP randomized response
    beta = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(beta + alpha * 2 * m * delta, 1.0)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95,
                        tol: float = 1e-6) -> float:
    """The largest epsilon that ``v`` correct of ``r`` guesses rejects at ``confidence``; 0 when none.

    >>> round(epsilon_lower_bound(m=1000, r=100, v=100), 2)  # 100 of 100 right: q^100 = 0.05
    3.49
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence
    if p_value(m=m, r=r, v=v, epsilon=0.0, delta=delta) >= level:
        return 0.0
    lo, hi = 0.0, 1.0  # invariant: p_value(lo) < level <= p_value(hi)
    while p_value(m=m, r=r, v=v, epsilon=hi, delta=delta) < level:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            return math.inf  # no finite epsilon explains this many correct guesses
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if p_value(m=m, r=r, v=v, epsilon=mid, delta=delta) < level:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Audit:
    """The outcome of one audit: canaries, guesses, correct guesses and the bound they imply."""

    canaries: int
    guesses: int
    correct: int
    epsilon_lb: float

    def metrics(self) -> dict[str, float]:
        return {"privacy/audit_epsilon_lb": self.epsilon_lb, "privacy/audit_canaries": float(self.canaries),
                "privacy/audit_guesses": float(self.guesses), "privacy/audit_correct": float(self.correct)}


def audit_scores(scores: Sequence[float], included: Sequence[bool], *, k_in: int, k_out: int, delta: float = 0.0,
                 confidence: float = 0.95) -> Audit:
    """Guess IN for the ``k_in`` highest scores and OUT for the ``k_out`` lowest, count, bound epsilon.

    Ties are broken by position (a stable sort), never by membership.
    """
    scores = np.asarray(scores, dtype=float)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    if included.shape != scores.shape:
        raise ValueError(f"{m} scores but {len(included)} membership flags")
    if k_in < 0 or k_out < 0 or k_in + k_out > m:
        raise ValueError(f"need k_in, k_out >= 0 and k_in + k_out <= {m} canaries (got {k_in}, {k_out})")
    if np.isnan(scores).any():
        raise ValueError("canary scores contain NaN")
    order = np.argsort(-scores, kind="stable")
    guessed_in, guessed_out = order[:k_in], order[m - k_out:] if k_out else order[:0]
    correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
    r = k_in + k_out
    bound = epsilon_lower_bound(m=m, r=r, v=correct, delta=delta, confidence=confidence)
    return Audit(m, r, correct, bound)
