"""The five methods of the labeldp task: each returns the released model and its privacy metrics.

Each private label is touched by exactly one label-DP mechanism (RR, RR-with-prior or ALIBI),
so the run's label-level epsilon is the worst epsilon of the mechanisms that touched a label
(parallel composition over labels; the rr_prior stages are adaptive, which parallel
composition allows). That epsilon is computed from what the mechanism sampled from (the RR
channels, the Laplace scale), never from the configured target: a mechanism with no finite
epsilon stops the run before training (:class:`NoFiniteGuarantee`). PATE-FM is in
``tasks.labeldp.pate_fm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch import nn

from suite.task import RunContext
from tasks.labeldp import mechanisms as mech
from tasks.labeldp.pate_fm import pate_fm
from tasks.labeldp.task import LabelDPConfig
from tasks.labeldp.train import Split, fit, one_hot, predict_proba, rng_for

Result = tuple[nn.Module, dict[str, float]]


class NoFiniteGuarantee(RuntimeError):
    """The mechanism that ran has no finite label-DP epsilon; the run stops and ends FAILED with this reason."""


def _guaranteed(epsilon: float, *, method: str, what: str) -> float:
    """``epsilon`` when finite; otherwise stop the run before any model is trained on the labels."""
    if not math.isfinite(epsilon):
        raise NoFiniteGuarantee(
            f"labeldp {method}: the mechanism that ran ({what}) has no finite label-DP guarantee (epsilon = "
            f"{epsilon}); stopped before training, so that no model is released under a claimed epsilon")
    return epsilon


def _label_accuracy(targets: np.ndarray, labels: np.ndarray) -> float:
    """Mean probability the training targets put on the true label (argmax would break ALIBI's ties)."""
    return float(targets[np.arange(len(labels)), labels].mean())


def nonprivate(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    targets = one_hot(split.private_y, split.n_classes)
    return fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx), {}


def rr(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    """k-ary randomized response once on every label; epsilon from the channel it sampled from."""
    channel = mech.rr_channel(epsilon=config.epsilon, k=split.n_classes)
    noisy = mech.sample_channel(split.private_y, channel, rng=rng_for(config, "rr"))
    epsilon = _guaranteed(mech.channel_epsilon(channel), method="rr", what="randomized response")
    targets = one_hot(noisy, split.n_classes)
    model = fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx)
    return model, {"privacy/epsilon": epsilon, "privacy/rr_flip_probability": 1.0 - float(np.diag(channel).mean()),
                   "utility/training_label_accuracy": _label_accuracy(targets, split.private_y)}


def rr_prior(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    """Ghazi et al.'s multi-stage training: stage s's labels are noised with RR-with-prior, the
    prior being the prediction of a model trained on the noisy labels of stages < s only (a
    uniform prior for stage 0, where RR-with-prior is plain RR). The label being noised never
    reaches its own prior. Epsilon: the worst of the channels every stage sampled from."""
    rng = rng_for(config, "rr_prior")
    order = rng.permutation(len(split.private_y))
    chunks = np.array_split(order, config.stages)
    noisy = np.full(len(split.private_y), -1)
    epsilons, sizes = [], []
    for s, chunk in enumerate(chunks):
        seen = np.concatenate(chunks[:s]) if s else np.zeros(0, dtype=int)
        if s == 0:
            priors = np.full((len(chunk), split.n_classes), 1.0 / split.n_classes)
        else:
            stage_model = fit(config, split.private_x[seen], one_hot(noisy[seen], split.n_classes),
                              epochs=config.epochs, seed_offset=s, ctx=ctx, desc=f"stage {s}")
            priors = predict_proba(stage_model, split.private_x[chunk])
        channels = mech.rr_prior_channels(priors, epsilon=config.epsilon)
        noisy[chunk] = mech.sample_channel(split.private_y[chunk], channels, rng=rng)
        epsilons.append(_guaranteed(mech.channel_epsilon(channels), method="rr_prior", what=f"RR-with-prior, stage {s}"))
        sizes.append(mech.answer_set_sizes(channels))
    targets = one_hot(noisy, split.n_classes)
    model = fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx)
    return model, {"privacy/epsilon": max(epsilons), "privacy/rr_prior_mean_k": float(np.concatenate(sizes).mean()),
                   "utility/training_label_accuracy": _label_accuracy(targets, split.private_y)}


def alibi(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    """Laplace noise once on each one-hot label, then the Bayesian posterior under a uniform prior
    as the soft training label (the noisy vector itself is never used again). The noise, the
    posterior and the epsilon all read the one scale."""
    scale = mech.alibi_scale(epsilon=config.epsilon)
    noisy = mech.alibi_noise(one_hot(split.private_y, split.n_classes), scale=scale, rng=rng_for(config, "alibi"))
    epsilon = _guaranteed(mech.alibi_epsilon(scale=scale), method="alibi", what="Laplace noise of scale 0")
    targets = mech.alibi_posterior(noisy, np.full(split.n_classes, 1.0 / split.n_classes), scale=scale)
    model = fit(config, split.private_x, targets.astype(np.float32), epochs=config.epochs, ctx=ctx)
    return model, {"privacy/epsilon": epsilon, "privacy/laplace_scale": scale,
                   "utility/training_label_accuracy": _label_accuracy(targets, split.private_y)}


METHODS: dict[str, Callable[[LabelDPConfig, Split, RunContext], Result]] = {
    "nonprivate": nonprivate, "rr": rr, "rr_prior": rr_prior, "alibi": alibi, "pate_fm": pate_fm,
}
