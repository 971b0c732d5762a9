"""Exposure of a canary (Carlini et al. 2019, "The Secret Sharer"), as pure functions of scores.

A canary is a template with a secret drawn uniformly from a space R (here: d-digit strings,
|R| = 10^d). Its log-perplexity under the model is Px = -log2 P(secret | template prefix); its
rank is its position among all |R| candidates ordered by Px (1 = the model's most likely), and

    exposure = log2 |R| - log2 rank.

Ranking all 10^9 candidates is out of reach, so both estimators here start from n candidates
drawn uniformly from R and scored by the same model:

* :func:`rank_exposure`: the canary's rank within the sample. With c sampled candidates at least
  as likely (ties count against the canary), rank / |R| is estimated by (c + 1) / (n + 1), so
  exposure = log2(n + 1) - log2(c + 1). It is exact up to sampling error but cannot exceed its
  ceiling log2(n + 1) (13.3 bits for n = 10,000). For a canary the model never saw, c is uniform
  on {0, ..., n}, and the expected exposure is about log2(e) = 1.44 bits (not 0).
* :func:`fitted_exposure`: the paper's distribution-modelling estimate (section 4.3): fit a
  skew-normal distribution to the sampled log-perplexities and take -log2 of its CDF at the
  canary's Px. It extrapolates into the tail beyond the sample's ceiling, and is capped at
  log2 |R| (rank >= 1).

The scores are log-perplexities in bits: lower means more likely.

>>> import numpy as np
>>> float(rank_exposure(np.array([3.5]), np.arange(1.0, 8.0))[0])  # 3 of 7 candidates as likely
1.0
"""

from __future__ import annotations

import math

import numpy as np


def rank_exposure(canaries: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Exposure of each canary from its rank in the sample: log2(n + 1) - log2(c + 1).

    ``c`` counts the sampled log-perplexities at or below the canary's (as likely or likelier).
    """
    canaries, sample = _check(canaries, sample)
    ordered = np.sort(sample)
    at_least_as_likely = np.searchsorted(ordered, canaries, side="right")
    return np.log2(len(sample) + 1) - np.log2(at_least_as_likely + 1)


def fitted_exposure(canaries: np.ndarray, sample: np.ndarray, *, space_bits: float) -> np.ndarray:
    """Exposure of each canary by a skew-normal fit to the sample: -log2 CDF(Px), in [0, space_bits].

    ``space_bits`` is log2 |R|, the largest exposure a canary can have (rank 1).
    """
    from scipy.stats import skewnorm

    canaries, sample = _check(canaries, sample)
    if not space_bits > 0:
        raise ValueError(f"space_bits must be > 0, got {space_bits}")
    if np.ptp(sample) == 0:  # every candidate equally likely (e.g. a constant model): nothing to fit
        return np.where(canaries < sample[0], space_bits, 0.0)
    shape, loc, scale = skewnorm.fit(sample)
    log_cdf = skewnorm.logcdf(canaries, shape, loc, scale)
    return np.clip(-log_cdf / math.log(2), 0.0, space_bits)


def _check(canaries: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    canaries, sample = np.asarray(canaries, dtype=float), np.asarray(sample, dtype=float)
    if sample.ndim != 1 or len(sample) < 2:
        raise ValueError(f"need a 1-d sample of at least 2 candidate scores, got shape {sample.shape}")
    if not (np.isfinite(sample).all() and np.isfinite(canaries).all()):
        raise ValueError("log-perplexities must be finite")
    return canaries, sample
