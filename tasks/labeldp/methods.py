"""The five methods of the labeldp task: each returns the released model and its privacy metrics.

Each private label is touched by exactly one epsilon-label-DP mechanism (RR, RR-with-prior or
ALIBI), so the run's label-level epsilon is that epsilon (parallel composition over labels;
the rr_prior stages are adaptive, which parallel composition allows). PATE-FM's epsilon is
accounted query by query in ``tasks.labeldp.pate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from suite.cache import cached_arrays
from suite.task import RunContext
from tasks.labeldp import mechanisms as mech
from tasks.labeldp import pate, train
from tasks.labeldp.models import MODELS
from tasks.labeldp.task import LabelDPConfig
from tasks.labeldp.train import Split, fit, one_hot, predict_proba, rng_for

Result = tuple[nn.Module, dict[str, float]]


def _label_accuracy(targets: np.ndarray, labels: np.ndarray) -> float:
    """Mean probability the training targets put on the true label (argmax would break ALIBI's ties)."""
    return float(targets[np.arange(len(labels)), labels].mean())


def nonprivate(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    targets = one_hot(split.private_y, split.n_classes)
    return fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx), {}


def rr(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    noisy = mech.randomized_response(split.private_y, epsilon=config.epsilon, k=split.n_classes,
                                     rng=rng_for(config, "rr"))
    keep, _ = mech.rr_probabilities(epsilon=config.epsilon, k=split.n_classes)
    targets = one_hot(noisy, split.n_classes)
    model = fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx)
    return model, {"privacy/epsilon": mech.rr_epsilon(epsilon=config.epsilon, k=split.n_classes),
                   "privacy/rr_flip_probability": 1.0 - keep,
                   "utility/training_label_accuracy": _label_accuracy(targets, split.private_y)}


def rr_prior(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    """Ghazi et al.'s multi-stage training: stage s's labels are noised with RR-with-prior, the
    prior being the prediction of a model trained on the noisy labels of stages < s only (a
    uniform prior for stage 0, where RR-with-prior is plain RR). The label being noised never
    reaches its own prior."""
    rng = rng_for(config, "rr_prior")
    order = rng.permutation(len(split.private_y))
    chunks = np.array_split(order, config.stages)
    noisy = np.full(len(split.private_y), -1)
    ks: list[np.ndarray] = []
    for s, chunk in enumerate(chunks):
        seen = np.concatenate(chunks[:s]) if s else np.zeros(0, dtype=int)
        if s == 0:
            priors = np.full((len(chunk), split.n_classes), 1.0 / split.n_classes)
        else:
            stage_model = fit(config, split.private_x[seen], one_hot(noisy[seen], split.n_classes),
                              epochs=config.epochs, seed_offset=s, ctx=ctx, desc=f"stage {s}")
            priors = predict_proba(stage_model, split.private_x[chunk])
        noisy[chunk], k = mech.rr_with_prior(split.private_y[chunk], priors, epsilon=config.epsilon, rng=rng)
        ks.append(k)
    targets = one_hot(noisy, split.n_classes)
    model = fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx)
    used = np.concatenate(ks)
    return model, {"privacy/epsilon": mech.rr_prior_epsilon(epsilon=config.epsilon, ks=used, n_classes=split.n_classes),
                   "privacy/rr_prior_mean_k": float(used.mean()),
                   "utility/training_label_accuracy": _label_accuracy(targets, split.private_y)}


def alibi(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    """Laplace noise once on each one-hot label, then the Bayesian posterior under a uniform prior
    as the soft training label (the noisy vector itself is never used again)."""
    scale = mech.alibi_scale(epsilon=config.epsilon)
    noisy = mech.alibi_noise(one_hot(split.private_y, split.n_classes), scale=scale, rng=rng_for(config, "alibi"))
    targets = mech.alibi_posterior(noisy, np.full(split.n_classes, 1.0 / split.n_classes), scale=scale)
    model = fit(config, split.private_x, targets.astype(np.float32), epochs=config.epochs, ctx=ctx)
    return model, {"privacy/epsilon": mech.alibi_epsilon(scale=scale), "privacy/laplace_scale": scale,
                   "utility/training_label_accuracy": _label_accuracy(targets, split.private_y)}


def pate_fm(config: LabelDPConfig, split: Split, ctx: RunContext) -> Result:
    """Teachers on disjoint partitions, confident-GNMax answers on public examples until the
    budget is spent, and a student trained on public data only.

    The "FM" of PATE-FM is semi-supervision: in label DP every feature vector is public, so a
    teacher may learn from its partition's labels *and* all the unlabeled features, and the
    student from the answered queries and the same pool. Malek et al. use FixMatch for both;
    FixMatch's gain comes from consistency between weak and strong (RandAugment, Cutout) views
    over ~10^6 steps, which 8x8 digits on two CPU cores can neither augment meaningfully nor
    afford. The quick tier uses label spreading over a k-NN graph of all features instead
    (Zhou et al. 2004, scikit-learn's ``LabelSpreading``), the classic semi-supervised learner
    for few labels: teachers spread their ~20 labels, the student's CNN is trained on the
    answers spread over the pool (``student_labels=label_spreading``). ``teacher_model=cnn`` and
    ``student_labels=pseudo_label`` (confidence-thresholded self-training, Lee 2013) are the
    supervised teachers and the pseudo-labelled student, used by the full tier.
    """
    votes, teacher_acc, cached = _teacher_votes(config, split, ctx)
    answers, metrics = _answer_queries(config, votes)
    asked = np.array([q for q, _ in answers], dtype=int)
    labels = np.array([a for _, a in answers], dtype=int)
    model = _student(config, split, asked, labels, ctx)
    metrics["utility/teacher_accuracy"] = teacher_acc
    metrics["compute/teachers_cached"] = float(cached)
    if len(labels):
        metrics["utility/answer_accuracy"] = float((labels == split.public_y[asked]).mean())
    return model, metrics


# What the teachers read from the config; everything else (epsilon, the noise, the student) cannot change a vote.
_TEACHER_KEYS = ("seed", "model", "n_teachers", "teacher_model", "spread_neighbors", "teacher_epochs",
                 "teacher_batch_size", "lr", "optimizer", "weight_decay", "augment")


def _teacher_votes(config: LabelDPConfig, split: Split, ctx: RunContext) -> tuple[np.ndarray, float, bool]:
    """(votes per public example and class, mean teacher test accuracy, whether read from the cache).

    The votes depend on the private labels, the partition and the teachers' training only, so
    the cells of an epsilon sweep share them through ``suite.cache``; the key holds the
    data and labels themselves (canaries planted), the teacher settings, and the source of the
    code that trains them.
    """
    parts = {
        "what": "pate teacher votes v1", "torch": torch.__version__, "numpy": np.__version__,
        "device": split.private_x.device.type, "n_classes": split.n_classes,
        "config": {k: getattr(config, k) for k in _TEACHER_KEYS},
        "code": [inspect.getsource(f) for f in (_train_teachers, _spread, train.fit, train._optimizer, train._augment,
                                                train.predict_proba, train.rng_for, MODELS[config.model])],
        "private_x": split.private_x.cpu().numpy(), "private_y": split.private_y,
        "public_x": split.public_x.cpu().numpy(), "test_x": split.test_x.cpu().numpy(),
        "test_y": split.test_y.cpu().numpy(),
    }
    shapes = {"votes": (len(split.public_x), split.n_classes), "teacher_accuracy": ()}
    got = cached_arrays(parts, lambda: _train_teachers(config, split, ctx), shapes=shapes, family="labeldp")
    return got.arrays["votes"], float(got.arrays["teacher_accuracy"]), got.hit


def _train_teachers(config: LabelDPConfig, split: Split, ctx: RunContext) -> dict[str, np.ndarray]:
    parts = np.array_split(rng_for(config, "partition").permutation(len(split.private_y)), config.n_teachers)
    votes = np.zeros((len(split.public_x), split.n_classes))
    accuracy = []
    teacher_config = config.model_copy(update={"batch_size": config.teacher_batch_size})
    features = _flat(split.private_x, split.public_x)  # every feature is public; only labels are private
    for t, part in enumerate(parts):
        if config.teacher_model == "label_spreading":
            known = np.full(len(features), -1)
            known[part] = split.private_y[part]
            teacher = _spread(config, features, known)
            public_pred = teacher.transduction_[len(split.private_y):]
            test_pred = teacher.predict(_flat(split.test_x))
        else:
            model = fit(teacher_config, split.private_x[part], one_hot(split.private_y[part], split.n_classes),
                        epochs=config.teacher_epochs, seed_offset=1000 + t)
            public_pred = predict_proba(model, split.public_x).argmax(1)
            test_pred = predict_proba(model, split.test_x).argmax(1)
        votes[np.arange(len(votes)), public_pred] += 1
        accuracy.append(float((test_pred == split.test_y.cpu().numpy()).mean()))
        ctx.progress("teachers", t + 1, config.n_teachers)
    return {"votes": votes, "teacher_accuracy": np.asarray(np.mean(accuracy))}


def _answer_queries(config: LabelDPConfig, votes: np.ndarray) -> tuple[list[tuple[int, int]], dict[str, float]]:
    """Ask public examples in a random order; before each, charge its worst case (threshold test
    plus GNMax) and stop when that would exceed the target epsilon."""
    rng = rng_for(config, "gnmax")
    spent = np.zeros_like(pate.ORDERS)
    asked = 0
    answers: list[tuple[int, int]] = []
    for q in rng.permutation(len(votes))[: config.max_queries]:
        cost_threshold = pate.threshold_rdp(votes[q], sigma=config.sigma_threshold, threshold=config.threshold)
        cost_gnmax = pate.gnmax_rdp(votes[q], sigma=config.sigma_gnmax)
        if pate.rdp_to_epsilon(spent + cost_threshold + cost_gnmax, delta=config.delta) > config.epsilon:
            break
        asked += 1
        answer = pate.confident_gnmax(votes[q], sigma_threshold=config.sigma_threshold,
                                      sigma_gnmax=config.sigma_gnmax, threshold=config.threshold, rng=rng)
        spent = spent + cost_threshold + (cost_gnmax if answer is not None else 0.0)
        if answer is not None:
            answers.append((int(q), answer))
    independent = asked * (pate.threshold_rdp_data_independent(sigma=config.sigma_threshold)
                           + pate.gnmax_rdp_data_independent(sigma=config.sigma_gnmax))
    eps_independent = pate.rdp_to_epsilon(independent, delta=config.delta) if asked else 0.0
    eps = min(pate.rdp_to_epsilon(spent, delta=config.delta), eps_independent) if asked else 0.0
    return answers, {
        "privacy/epsilon": eps, "privacy/epsilon_data_independent": eps_independent, "privacy/delta": config.delta,
        "privacy/sigma_threshold": config.sigma_threshold, "privacy/sigma_gnmax": config.sigma_gnmax,
        "privacy/threshold": config.threshold, "privacy/queries_asked": float(asked),
        "privacy/queries_answered": float(len(answers)),
    }


def _flat(*xs: torch.Tensor) -> np.ndarray:
    return np.concatenate([x.reshape(len(x), -1).cpu().numpy() for x in xs])


def _spread(config: LabelDPConfig, features: np.ndarray, known: np.ndarray) -> Any:
    """Label spreading over the k-NN graph of ``features``; ``known`` is -1 where unlabeled."""
    import warnings

    from sklearn.semi_supervised import LabelSpreading

    with warnings.catch_warnings():  # isolated graph components divide 0 by 0; their rows stay unlabeled
        warnings.simplefilter("ignore", RuntimeWarning)
        return LabelSpreading(kernel="knn", n_neighbors=config.spread_neighbors, alpha=0.2,
                              max_iter=100).fit(features, known)


def _student(config: LabelDPConfig, split: Split, asked: np.ndarray, labels: np.ndarray,
             ctx: RunContext) -> nn.Module:
    if config.student_labels == "label_spreading" and len(labels):
        return _spread_student(config, split, asked, labels, ctx)
    x_labeled = split.public_x[torch.as_tensor(asked, dtype=torch.long, device=split.public_x.device)]
    targets = one_hot(labels, split.n_classes).reshape(-1, split.n_classes)
    model = fit(config, x_labeled, targets, epochs=config.epochs, ctx=ctx, desc="student")
    pool = np.setdiff1d(np.arange(len(split.public_x)), asked)
    for r in range(config.pseudo_label_rounds if len(labels) else 0):
        probs = predict_proba(model, split.public_x[torch.as_tensor(pool, device=split.public_x.device)])
        sure = probs.max(1) >= config.pseudo_label_threshold
        x = torch.cat([x_labeled, split.public_x[torch.as_tensor(pool[sure], device=split.public_x.device)]])
        t = np.concatenate([targets, one_hot(probs[sure].argmax(1), split.n_classes)])
        model = fit(config, x, t, epochs=config.epochs, seed_offset=r + 1, ctx=ctx, desc=f"pseudo-label {r + 1}")
    return model


def _spread_student(config: LabelDPConfig, split: Split, asked: np.ndarray, labels: np.ndarray,
                    ctx: RunContext) -> nn.Module:
    """The answers spread over the public and private features, then the CNN trained on the
    spread soft labels (answered examples keep their answer). No private label is read."""
    features = _flat(split.public_x, split.private_x)
    known = np.full(len(features), -1)
    known[asked] = labels
    spread = _spread(config, features, known)
    soft = np.zeros((len(features), split.n_classes))  # columns of the classes no answer named stay 0
    soft[:, spread.classes_] = np.nan_to_num(spread.label_distributions_, nan=0.0)
    keep = soft.sum(1) > 0  # rows the graph reached
    soft[asked] = one_hot(labels, split.n_classes)
    x = torch.cat([split.public_x, split.private_x])[torch.as_tensor(np.flatnonzero(keep), device=split.public_x.device)]
    return fit(config, x, soft[keep] / soft[keep].sum(1, keepdims=True), epochs=config.epochs, ctx=ctx,
               desc="student")


METHODS: dict[str, Callable[[LabelDPConfig, Split, RunContext], Result]] = {
    "nonprivate": nonprivate, "rr": rr, "rr_prior": rr_prior, "alibi": alibi, "pate_fm": pate_fm,
}
