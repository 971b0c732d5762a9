"""Label-DP mechanisms as pure functions of labels, privacy parameters and a random generator.

* k-ary randomized response (Warner 1965; the label-DP baseline of Malek et al. 2021);
* RR-with-prior (Ghazi et al., "Deep Learning with Label Differential Privacy", NeurIPS 2021,
  Algorithm 2 "RRWithPrior"): RR restricted to the k most likely classes under a prior, with k
  chosen to maximise the probability of returning the true label;
* ALIBI's Laplace mechanism on one-hot labels and its Bayesian post-processing (Malek et al.,
  "Antipodes of Label Differential Privacy: PATE and ALIBI", NeurIPS 2021, Sec. 4).

RR and RR-with-prior are written as *channels*: ``channel[y, o] = P[output o | true label y]``
(one k x k matrix shared by every label, or one per label, shape n x k x k). The sampler draws
from the channel and :func:`channel_epsilon` reads the same array, so the epsilon a run reports
is the one of the distributions it sampled from, whatever produced them: a channel that never
flips (the identity) reports ``inf``. ALIBI's realised parameter is its Laplace scale, read by
the noise, the posterior and :func:`alibi_epsilon` alike.

Every function that sees a privacy parameter takes it by keyword.
"""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- channels


def channel_epsilon(channel: np.ndarray) -> float:
    """The epsilon a label channel satisfies: the largest log P[o | y] / P[o | y'] over true
    labels y, y', outputs o and (for a stack of channels, n x k x k) every row's channel; ``inf``
    when some output is possible under one label and impossible under another.

    >>> round(channel_epsilon(rr_channel(epsilon=1.5, k=4)), 12)
    1.5
    >>> channel_epsilon(np.eye(3))  # a "mechanism" that never flips
    inf
    """
    c = np.asarray(channel, dtype=float)
    if c.ndim not in (2, 3) or c.shape[-1] != c.shape[-2] or c.size == 0:
        raise ValueError(f"a channel is k x k or n x k x k with k >= 1, got shape {c.shape}")
    if np.any(c < 0) or not np.allclose(c.sum(-1), 1.0, atol=1e-9):
        raise ValueError("every row of a channel must be a probability distribution")
    # For each output o: max_y P[o|y] / min_y' P[o|y'] over the true labels (axis -2).
    most, least = c.max(axis=-2), c.min(axis=-2)
    if np.any((most > 0) & (least == 0)):
        return math.inf
    used = most > 0
    return float(np.max(np.log(most[used] / least[used]), initial=0.0))


def sample_channel(labels: np.ndarray, channel: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """One output per label, drawn from ``channel[y]`` (k x k) or ``channel[i, y]`` (n x k x k).

    Inverse-CDF sampling with each row's CDF set to exactly 1 from its last possible output on:
    an output of probability 0 is never drawn, whatever the rounding of the cumulative sums.

    >>> sample_channel(np.array([0, 1, 2]), np.eye(3), rng=np.random.default_rng(0)).tolist()
    [0, 1, 2]
    """
    labels = np.asarray(labels, dtype=np.int64)
    c = np.asarray(channel, dtype=float)
    rows = c[labels] if c.ndim == 2 else c[np.arange(len(labels)), labels]
    cdf = np.cumsum(rows, axis=1)
    last = rows.shape[1] - 1 - np.argmax(rows[:, ::-1] > 0, axis=1)  # last output of positive probability
    cdf[np.arange(rows.shape[1])[None, :] >= last[:, None]] = 1.0
    u = rng.random(len(labels))
    return (cdf <= u[:, None]).sum(axis=1)


# --------------------------------------------------------------------------- randomized response


def rr_probabilities(*, epsilon: float, k: int) -> tuple[float, float]:
    """(probability of the true label, probability of each one of the k - 1 others) of k-ary RR."""
    if not epsilon > 0 or k < 1:
        raise ValueError(f"need epsilon > 0 and k >= 1 (got epsilon={epsilon}, k={k})")
    # e^eps / (e^eps + k - 1) without overflow at large epsilon.
    keep = 1.0 / (1.0 + (k - 1) * math.exp(-epsilon))
    return keep, (1.0 - keep) / (k - 1) if k > 1 else 0.0


def rr_channel(*, epsilon: float, k: int) -> np.ndarray:
    """The k x k channel of k-ary RR: the true label with e^eps / (e^eps + k - 1), each other uniformly."""
    keep, other = rr_probabilities(epsilon=epsilon, k=k)
    return np.full((k, k), other) + np.eye(k) * (keep - other)


# --------------------------------------------------------------------------- RR-with-prior


def rr_prior_top_k(priors: np.ndarray, *, epsilon: float) -> np.ndarray:
    """Boolean mask (n x k, or k for one prior) of the classes RR-with-prior answers from: the k
    most likely under each prior, k maximising e^eps / (e^eps + k - 1) * prior(top k), the
    probability of returning the true label when it is drawn from the prior (Ghazi et al. 2021,
    Algorithm 2); the smallest such k on ties, and prior ties broken by class index."""
    p = np.atleast_2d(np.asarray(priors, dtype=float))
    order = np.argsort(-p, axis=1, kind="stable")
    mass = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    ks = np.arange(1, p.shape[1] + 1)
    keep = 1.0 / (1.0 + (ks - 1) * math.exp(-epsilon))
    size = np.argmax(keep * mass, axis=1) + 1  # first maximiser: the smallest such k
    ranks = np.argsort(order, axis=1)  # rank of each class under its prior
    mask = ranks < size[:, None]
    return mask if np.ndim(priors) == 2 else mask[0]


def rr_prior_channels(priors: np.ndarray, *, epsilon: float) -> np.ndarray:
    """One channel per prior row (n x k x k): k-ary RR over the top-k set when the true label is
    in it, a uniform answer from the set otherwise. The prior must not depend on the label it
    is used for (``methods.rr_prior`` builds it from other labels only)."""
    top = rr_prior_top_k(np.atleast_2d(priors), epsilon=epsilon).astype(float)  # n x k
    size = top.sum(axis=1)
    keep = 1.0 / (1.0 + (size - 1) * math.exp(-epsilon))
    other = np.where(size > 1, (1.0 - keep) / np.maximum(size - 1, 1), 0.0)
    k = top.shape[1]
    inside = top[:, None, :] * other[:, None, None] + np.eye(k)[None] * (keep - other)[:, None, None]
    outside = np.broadcast_to((top / size[:, None])[:, None, :], inside.shape)
    label_in_top = top[:, :, None] > 0  # row y of example i: is y in i's answer set?
    return np.where(label_in_top, inside, outside)


def answer_set_sizes(channels: np.ndarray) -> np.ndarray:
    """How many outputs each channel can return (the k of RR-with-prior's top-k set)."""
    return (np.asarray(channels).max(axis=-2) > 0).sum(axis=-1)


# --------------------------------------------------------------------------- ALIBI


def alibi_scale(*, epsilon: float) -> float:
    """Laplace scale b for an epsilon-label-DP ALIBI: one-hot labels differ by 2 in L1, so b = 2 / eps."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return 2.0 / epsilon


def alibi_epsilon(*, scale: float) -> float:
    """Epsilon of the Laplace mechanism of scale b on one-hot labels (L1 sensitivity 2): 2 / b;
    ``inf`` for b = 0 (no noise)."""
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    return math.inf if scale == 0 else 2.0 / scale


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


# --------------------------------------------------------------------------- the guarantee released


class NoFiniteGuarantee(RuntimeError):
    """The mechanism that ran has no finite label-DP epsilon; the run stops and ends FAILED with this reason."""


def guaranteed(epsilon: float, *, method: str, what: str) -> float:
    """``epsilon`` when finite; otherwise stop the run before any model is trained on the labels."""
    if not math.isfinite(epsilon):
        raise NoFiniteGuarantee(
            f"labeldp {method}: the mechanism that ran ({what}) has no finite label-DP guarantee (epsilon = "
            f"{epsilon}); stopped before training, so that no model is released under a claimed epsilon")
    return epsilon
