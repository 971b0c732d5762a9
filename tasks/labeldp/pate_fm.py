"""PATE-FM: teachers on disjoint partitions of the private labels, confident-GNMax answers to a
fixed set of public queries, and a student trained on public data and the answers only.

The privacy guarantee (``privacy/epsilon``) is PATE's **data-independent** RDP bound: how many
public examples are asked, and which, is fixed from the config and the seed before any vote is
looked at (:func:`query_plan`), and every query asked is charged the threshold test and GNMax,
answered or not. The data-dependent bound of the same answers is reported as
``privacy/epsilon_data_dependent`` and never ranked (it is not released through smooth
sensitivity). The maths is in ``tasks.labeldp.pate``.

The "FM" of PATE-FM is semi-supervision: in label DP every feature vector is public, so a
teacher may learn from its partition's labels *and* all the unlabeled features, and the student
from the answered queries and the same pool. Malek et al. use FixMatch for both; FixMatch's
gain comes from consistency between weak and strong (RandAugment, Cutout) views over ~10^6
steps, which 8x8 digits on two CPU cores can neither augment meaningfully nor afford. The quick
tier uses label spreading over a k-NN graph of all features instead (Zhou et al. 2004,
scikit-learn's ``LabelSpreading``), the classic semi-supervised learner for few labels:
teachers spread their ~20 labels, the student's CNN is trained on the answers spread over the
pool (``student_labels=label_spreading``). ``teacher_model=cnn`` and
``student_labels=pseudo_label`` (confidence-thresholded self-training, Lee 2013) are the
supervised teachers and the pseudo-labelled student, used by the full tier.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from suite.cache import cached_arrays
from suite.context import RunContext
from tasks.labeldp import pate, train
from tasks.labeldp.models import MODELS
from tasks.labeldp.train import Split, fit, one_hot, predict_proba, rng_for

if TYPE_CHECKING:  # the method's module imports this one when it runs
    from tasks.labeldp.methods.pate_fm import PateFMConfig


@dataclass(frozen=True)
class Queries:
    """The public examples asked, in order, and the answers (-1 where the threshold test declined)."""

    asked: np.ndarray
    answers: np.ndarray

    @property
    def answered(self) -> np.ndarray:
        return self.answers >= 0


def pate_fm(config: PateFMConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
    """Teachers' votes, confident-GNMax answers to the planned queries, the student; privacy metrics."""
    asked = query_plan(config, n_public=len(split.public_x))  # before any private vote is computed
    votes, teacher_acc, cached = _teacher_votes(config, split, ctx)
    queries = answer_queries(config, votes, asked)
    answered_at, labels = queries.asked[queries.answered], queries.answers[queries.answered]
    model = _student(config, split, answered_at, labels, ctx)
    metrics = privacy_metrics(config, votes, queries)
    metrics["utility/teacher_accuracy"] = teacher_acc
    metrics["compute/teachers_cached"] = float(cached)
    if len(labels):
        metrics["utility/answer_accuracy"] = float((labels == split.public_y[answered_at]).mean())
    return model, metrics


def query_plan(config: PateFMConfig, *, n_public: int) -> np.ndarray:
    """The public examples PATE-FM asks: as many as the data-independent bound allows within the
    target (at most ``max_queries`` and the public set), in a seeded random order. Reads the
    config and the public set's size only, never a label or a vote."""
    budget = pate.query_budget(epsilon=config.epsilon, delta=config.delta, sigma_threshold=config.sigma_threshold,
                               sigma_gnmax=config.sigma_gnmax, max_queries=config.max_queries)
    return rng_for(config, "queries").permutation(n_public)[: min(budget, n_public)]


def answer_queries(config: PateFMConfig, votes: np.ndarray, asked: np.ndarray) -> Queries:
    """Confident GNMax (Algorithm 1 of Papernot et al. 2018) on each planned query, in order."""
    rng = rng_for(config, "gnmax")
    answers = [pate.confident_gnmax(votes[q], sigma_threshold=config.sigma_threshold, sigma_gnmax=config.sigma_gnmax,
                                    threshold=config.threshold, rng=rng) for q in asked]
    return Queries(np.asarray(asked, dtype=int), np.array([-1 if a is None else a for a in answers], dtype=int))


def privacy_metrics(config: PateFMConfig, votes: np.ndarray, queries: Queries) -> dict[str, float]:
    """The guarantee (data-independent RDP), the same queries under the three shared accountants,
    and the data-dependent bound (reported, never ranked)."""
    from suite.privacy import all_epsilons

    n = len(queries.asked)
    epsilon = pate.data_independent_epsilon(queries=n, sigma_threshold=config.sigma_threshold,
                                            sigma_gnmax=config.sigma_gnmax, delta=config.delta)
    dependent = pate.rdp_to_epsilon(pate.data_dependent_rdp(
        votes[queries.asked], queries.answered, sigma_threshold=config.sigma_threshold,
        sigma_gnmax=config.sigma_gnmax, threshold=config.threshold), delta=config.delta) if n else 0.0
    # Threshold test: a Gaussian on the max count, L2 sensitivity 1, std sigma1. GNMax: Gaussian
    # noise on the vote histogram, L2 sensitivity sqrt(2) (one vote moves between two classes),
    # std sigma2; the argmax is post-processing. Entries are (std / sensitivity, rate 1, count).
    history = [(config.sigma_threshold, 1.0, n), (config.sigma_gnmax / math.sqrt(2), 1.0, n)]
    return {
        "privacy/epsilon": epsilon, "privacy/epsilon_data_dependent": min(dependent, epsilon),
        **all_epsilons(history=history, delta=config.delta, sampler="none"),
        "privacy/delta": config.delta, "privacy/sigma_threshold": config.sigma_threshold,
        "privacy/sigma_gnmax": config.sigma_gnmax, "privacy/threshold": config.threshold,
        "privacy/queries_asked": float(n), "privacy/queries_answered": float(queries.answered.sum()),
    }


# What the teachers read from the config; everything else (epsilon, the noise, the student) cannot change a vote.
_TEACHER_KEYS = ("seed", "model", "n_teachers", "teacher_model", "spread_neighbors", "teacher_epochs",
                 "teacher_batch_size", "lr", "optimizer", "weight_decay", "augment")


def _teacher_votes(config: PateFMConfig, split: Split, ctx: RunContext) -> tuple[np.ndarray, float, bool]:
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


def _train_teachers(config: PateFMConfig, split: Split, ctx: RunContext) -> dict[str, np.ndarray]:
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
            with warnings.catch_warnings():  # a test point the graph does not reach: 0 / 0, an arbitrary class
                warnings.simplefilter("ignore", RuntimeWarning)
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


def _flat(*xs: torch.Tensor) -> np.ndarray:
    return np.concatenate([x.reshape(len(x), -1).cpu().numpy() for x in xs])


def _spread(config: PateFMConfig, features: np.ndarray, known: np.ndarray) -> Any:
    """Label spreading over the k-NN graph of ``features``; ``known`` is -1 where unlabeled."""
    from sklearn.semi_supervised import LabelSpreading

    with warnings.catch_warnings():  # isolated graph components divide 0 by 0; their rows stay unlabeled
        warnings.simplefilter("ignore", RuntimeWarning)
        return LabelSpreading(kernel="knn", n_neighbors=config.spread_neighbors, alpha=0.2,
                              max_iter=100).fit(features, known)


def _student(config: PateFMConfig, split: Split, asked: np.ndarray, labels: np.ndarray,
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


def _spread_student(config: PateFMConfig, split: Split, asked: np.ndarray, labels: np.ndarray,
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
