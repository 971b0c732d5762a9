"""Label-DP mechanisms as pure functions of labels, privacy parameters and a random generator.

* k-ary randomized response (Warner 1965; the label-DP baseline of Malek et al. 2021);
* RR-with-prior (Ghazi et al., "Deep Learning with Label Differential Privacy", NeurIPS 2021,
  Algorithm 2 "RRWithPrior"): RR restricted to the k most likely classes under a prior, with k
  chosen to maximise the probability of returning the true label;
* ALIBI's Laplace mechanism on one-hot labels and its Bayesian post-processing (Malek et al.,
  "Antipodes of Label Differential Privacy: PATE and ALIBI", NeurIPS 2021, Sec. 4);
* the epsilon lower bound implied by a canary (planted mislabel) attack.

Every function that sees a privacy parameter takes it by keyword. The ``*_distribution``
functions return the mechanisms' exact output distributions, which the tests check against
the definition of epsilon-DP without sampling; the samplers draw from those same formulas.
"""

from __future__ import annotations

import math

import numpy as np


# --------------------------------------------------------------------------- randomized response


def rr_probabilities(*, epsilon: float, k: int) -> tuple[float, float]:
    """(probability of the true label, probability of each one of the k - 1 others) of k-ary RR."""
    if not epsilon > 0 or k < 1:
        raise ValueError(f"need epsilon > 0 and k >= 1 (got epsilon={epsilon}, k={k})")
    # e^eps / (e^eps + k - 1) without overflow at large epsilon.
    keep = 1.0 / (1.0 + (k - 1) * math.exp(-epsilon))
    return keep, (1.0 - keep) / (k - 1) if k > 1 else 0.0


def rr_distribution(label: int, *, epsilon: float, k: int) -> np.ndarray:
    """Exact output distribution of k-ary RR for one true label."""
    keep, other = rr_probabilities(epsilon=epsilon, k=k)
    out = np.full(k, other)
    out[label] = keep
    return out


def worst_case_epsilon(distributions: np.ndarray) -> float:
    """The epsilon a label mechanism satisfies, from its exact output distributions (one row per
    true label): log of the largest P[out | y] / P[out | y'] over labels y, y' and outputs.

    >>> round(worst_case_epsilon(np.stack([rr_distribution(y, epsilon=1.5, k=4) for y in range(4)])), 12)
    1.5
    """
    d = np.asarray(distributions, dtype=float)
    num, den = d[:, None, :], d[None, :, :]
    if np.any((num > 0) & (den == 0)):
        return math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(num > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return float(np.log(ratios.max()))


def rr_epsilon(*, epsilon: float, k: int) -> float:
    """Epsilon of the k-ary RR the run used, recomputed from its exact output distributions."""
    return worst_case_epsilon(np.stack([rr_distribution(y, epsilon=epsilon, k=k) for y in range(k)]))


def randomized_response(labels: np.ndarray, *, epsilon: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each label kept with probability e^eps / (e^eps + k - 1), else replaced by one of the others uniformly.

    >>> randomized_response(np.array([0, 1, 2]), epsilon=50.0, k=3, rng=np.random.default_rng(0)).tolist()
    [0, 1, 2]
    """
    labels = np.asarray(labels)
    keep, _ = rr_probabilities(epsilon=epsilon, k=k)
    flip = rng.random(len(labels)) >= keep
    # A uniform draw among the k - 1 other labels: shift by 1..k-1 modulo k.
    shift = rng.integers(1, k, size=len(labels)) if k > 1 else np.zeros(len(labels), dtype=int)
    return np.where(flip, (labels + shift) % k, labels)


# --------------------------------------------------------------------------- RR-with-prior


def rr_prior_top_k(prior: np.ndarray, *, epsilon: float) -> np.ndarray:
    """The classes RR-with-prior answers from: the k most likely under ``prior``, k maximising
    e^eps / (e^eps + k - 1) * prior(top k), the probability of returning the true label
    when the label is drawn from the prior (Ghazi et al. 2021, Algorithm 2)."""
    order = np.argsort(-np.asarray(prior), kind="stable")
    mass = np.cumsum(np.asarray(prior)[order])
    ks = np.arange(1, len(order) + 1)
    keep = 1.0 / (1.0 + (ks - 1) * math.exp(-epsilon))
    best = int(np.argmax(keep * mass))  # first maximiser: the smallest such k
    return order[: best + 1]


def rr_prior_distribution(label: int, prior: np.ndarray, *, epsilon: float) -> np.ndarray:
    """Exact output distribution of RR-with-prior for one true label and one prior (which must
    not depend on that label)."""
    # The true label outside the answer set: answer uniformly from the set.
    return _rr_over_set(label, top=rr_prior_top_k(prior, epsilon=epsilon), epsilon=epsilon, n=len(prior))


def rr_with_prior(labels: np.ndarray, priors: np.ndarray, *, epsilon: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """RR-with-prior on each label with its own prior row; returns (noisy labels, k used per label)."""
    labels = np.asarray(labels)
    noisy = np.empty_like(labels)
    ks = np.empty(len(labels), dtype=np.int64)
    for i, (label, prior) in enumerate(zip(labels, priors)):
        dist = rr_prior_distribution(int(label), prior, epsilon=epsilon)
        noisy[i] = rng.choice(len(dist), p=dist)
        ks[i] = int(np.count_nonzero(dist))
    return noisy, ks


def rr_prior_epsilon(*, epsilon: float, ks: np.ndarray, n_classes: int) -> float:
    """Epsilon of the RR-with-prior steps the run took, from their exact output distributions.

    A step's distributions depend on its prior only through the size k of the answer set (the
    classes' names do not change the ratios), so the worst case over the ks used is the run's.
    """
    worst = 0.0
    for k in np.unique(np.asarray(ks)):
        rows = np.stack([_rr_over_set(y, top=np.arange(int(k)), epsilon=epsilon, n=n_classes)
                         for y in range(n_classes)])
        worst = max(worst, worst_case_epsilon(rows))
    return worst


def _rr_over_set(label: int, *, top: np.ndarray, epsilon: float, n: int) -> np.ndarray:
    out = np.zeros(n)
    if label in top:
        keep, other = rr_probabilities(epsilon=epsilon, k=len(top))
        out[top] = other
        out[label] = keep
    else:
        out[top] = 1.0 / len(top)
    return out


# --------------------------------------------------------------------------- ALIBI


def alibi_scale(*, epsilon: float) -> float:
    """Laplace scale b for an epsilon-label-DP ALIBI: one-hot labels differ by 2 in L1, so b = 2 / eps."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return 2.0 / epsilon


def alibi_epsilon(*, scale: float) -> float:
    """Epsilon of the Laplace mechanism of scale b on one-hot labels (L1 sensitivity 2): 2 / b."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return 2.0 / scale


def alibi_noise(onehot: np.ndarray, *, scale: float, rng: np.random.Generator) -> np.ndarray:
    """One-hot labels plus i.i.d. Laplace(0, b) noise on every coordinate, drawn once."""
    return np.asarray(onehot, dtype=np.float64) + rng.laplace(0.0, scale, size=np.shape(onehot))


def alibi_posterior(noisy: np.ndarray, prior: np.ndarray, *, scale: float) -> np.ndarray:
    """Posterior P[y = c | noisy] for each row: prior_c * prod_j Laplace(noisy_j - e_c[j]; b), normalised.

    Only coordinate c differs between the candidates' likelihoods, so
    log P[y = c | o] = log prior_c + (|o_c| - |o_c - 1|) / b + const (Malek et al. 2021, Sec. 4.2).
    """
    noisy = np.atleast_2d(noisy)
    log_prior = np.log(np.broadcast_to(prior, noisy.shape))
    logits = log_prior + (np.abs(noisy) - np.abs(noisy - 1.0)) / scale
    logits -= logits.max(axis=1, keepdims=True)
    post = np.exp(logits)
    return post / post.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- canary audit


def canary_epsilon_lower_bound(*, planted_hits: int, planted_trials: int, control_hits: int, control_trials: int,
                               delta: float = 0.0, confidence: float = 0.95) -> float:
    """Epsilon lower bound implied by a canary attack, at the given confidence (Clopper-Pearson).

    The attack guesses "the planted label was in the training set" when the model predicts it.
    ``planted_*``: canaries trained with their planted (wrong) label; ``control_*``: canaries
    trained with their true label, on which the planted label is only checked. An
    (eps, delta)-label-DP training gives TPR <= e^eps FPR + delta and, swapping the roles of
    the two datasets, 1 - FPR <= e^eps (1 - TPR) + delta; so eps >= the larger of
    log((TPR - delta) / FPR) and log((1 - FPR - delta) / (1 - TPR)), evaluated at a lower
    confidence bound for each numerator and an upper one for each denominator. Treats the
    canaries as independent trials; 0 when nothing is implied.

    >>> canary_epsilon_lower_bound(planted_hits=0, planted_trials=50, control_hits=0, control_trials=50)
    0.0
    """
    from scipy.stats import beta

    for hits, trials in ((planted_hits, planted_trials), (control_hits, control_trials)):
        if trials < 1 or not 0 <= hits <= trials:
            raise ValueError(f"need 0 <= hits <= trials and trials >= 1 (got {hits} of {trials})")
    alpha = (1.0 - confidence) / 2  # split between the two proportions

    def lower(h: int, n: int) -> float:
        return 0.0 if h == 0 else float(beta.ppf(alpha, h, n - h + 1))

    def upper(h: int, n: int) -> float:
        return 1.0 if h == n else float(beta.ppf(1 - alpha, h + 1, n - h))

    tpr_lo = lower(planted_hits, planted_trials)
    fpr_hi = upper(control_hits, control_trials)
    bounds = [0.0]
    if tpr_lo - delta > 0:
        bounds.append(math.log((tpr_lo - delta) / fpr_hi))
    if 1 - fpr_hi - delta > 0:  # 1 - tpr_lo > 0: a lower confidence bound is below 1
        bounds.append(math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    return max(bounds)
