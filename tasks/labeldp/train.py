"""Data, training on hard or soft labels, evaluation and the canary audit of the labeldp task.

Loaded by ``LabelDPTask.run`` (imports torch), which hands the step that varies, how the private
labels become the released model, to the config's method (``tasks.labeldp.methods``); the
mechanisms the methods call are pure functions in ``tasks.labeldp.mechanisms`` and
``tasks.labeldp.pate``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from suite import data
from suite.audit import audit_scores
from suite.context import RunContext
from suite.device import resolve_device
from suite.examples import digest
from suite.meters import model_size
from tasks.labeldp.config import LabelDPConfig, LabelDPMethod
from tasks.labeldp.models import MODELS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Public unlabeled features, private labeled examples, and a test set (tensors on the device)."""

    public_x: torch.Tensor
    public_y: np.ndarray  # never trained on: only to report how often PATE's answers are right
    private_x: torch.Tensor
    private_y: np.ndarray  # the labels as planted (canaries included): what the mechanisms see
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int


@dataclass(frozen=True)
class Canaries:
    """Private examples of the audit: each carries ``wrong_label`` in training with probability 1/2
    (``planted``, drawn independently per canary), else keeps its true label ``true_label``."""

    index: np.ndarray
    true_label: np.ndarray
    wrong_label: np.ndarray
    planted: np.ndarray  # bool, one per canary


def rng_for(config: LabelDPConfig, stream: str) -> np.random.Generator:
    """An independent generator per purpose (canaries, mechanism, partition, ...) from the run's seed."""
    return np.random.default_rng([config.seed, *stream.encode()])


def train_and_evaluate(config: LabelDPConfig, method: LabelDPMethod, ctx: RunContext) -> dict[str, float]:
    """The family's run: the split, ``method``'s training step, the test evaluation and the canary audit."""
    with ctx.phase("setup"):
        split, canaries = load_split(config)
    with ctx.phase("train"):
        model, metrics = method.train(config, split, ctx)
    with ctx.phase("eval"):
        metrics.update(evaluate(model, split.test_x, split.test_y, ctx=ctx))
        metrics.update(audit(config, model, split, canaries, claimed=metrics.get("privacy/epsilon"),
                             delta=metrics.get("privacy/delta", 0.0)))
    metrics.update(model_size(model))  # the released model: parameters and weight bytes
    return metrics


# --------------------------------------------------------------------------- data


def load_split(config: LabelDPConfig) -> tuple[Split, Canaries]:
    """Carve the training split into public (unlabeled) and private parts, fixed by ``split_seed``,
    then plant the canaries among the private labels (chosen by ``seed``)."""
    from sklearn.model_selection import train_test_split

    x_train, y_train, x_test, y_test, n_classes = _arrays(config)
    if config.train_subset is not None:
        x_train, y_train = x_train[: config.train_subset], y_train[: config.train_subset]
    # Stratified where every class of the subset has two examples; a small train_subset may hold
    # a class once, which no stratified split can place on both sides (the sizes are checked
    # when the config is read: LabelDPConfig._data_fits).
    stratify = y_train if np.unique(y_train, return_counts=True)[1].min() >= 2 else None
    private_idx, public_idx = train_test_split(np.arange(len(y_train)), test_size=config.public_fraction,
                                               random_state=config.split_seed, stratify=stratify)
    private_y = y_train[private_idx].copy()
    canaries = plant_canaries(private_y, m=config.audit_canaries, n_classes=n_classes,
                              rng=rng_for(config, "canaries"))
    device = resolve_device(config.device)
    split = Split(public_x=torch.as_tensor(x_train[public_idx]).to(device), public_y=y_train[public_idx],
                  private_x=torch.as_tensor(x_train[private_idx]).to(device), private_y=private_y,
                  test_x=torch.as_tensor(x_test).to(device), test_y=torch.as_tensor(y_test).to(device),
                  n_classes=n_classes)
    return split, canaries


def _arrays(config: LabelDPConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    if config.dataset == "digits":
        s = data.digits(split_seed=config.split_seed)
        return s.x_train, s.y_train, s.x_test, s.y_test, s.n_classes
    train, test, n_classes = data.torchvision_split(config.dataset, data.data_root(config.data_dir),
                                                    download=config.download)

    def stack(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(batch for batch in torch.utils.data.DataLoader(ds, batch_size=1000)))
        return torch.cat(xs).numpy(), torch.cat(ys).numpy().astype(np.int64)

    return (*stack(train), *stack(test), n_classes)


def plant_canaries(labels: np.ndarray, *, m: int, n_classes: int, rng: np.random.Generator) -> Canaries:
    """Pick ``m`` private examples and a wrong label for each; each gets it in ``labels`` (in place)
    with probability 1/2, independently: the inclusion the one-run audit's theorem assumes."""
    if not 0 <= m <= len(labels):
        raise ValueError(f"audit_canaries={m} needs as many private examples, got {len(labels)}")
    index = rng.choice(len(labels), size=m, replace=False)
    true_label = labels[index].copy()
    wrong = (true_label + rng.integers(1, n_classes, size=m)) % n_classes
    planted = rng.random(m) < 0.5
    labels[index[planted]] = wrong[planted]
    return Canaries(index=index, true_label=true_label, wrong_label=wrong, planted=planted)


# --------------------------------------------------------------------------- training


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels)]


def label_accuracy(targets: np.ndarray, labels: np.ndarray) -> float:
    """Mean probability the training targets put on the true label (argmax would break ALIBI's ties)."""
    return float(targets[np.arange(len(labels)), labels].mean())


def fit(config: LabelDPConfig, x: torch.Tensor, targets: np.ndarray, *, epochs: int, seed_offset: int = 0,
        ctx: RunContext | None = None, desc: str = "train") -> nn.Module:
    """A fresh model trained with cross-entropy against ``targets`` (rows of class probabilities)."""
    torch.manual_seed(config.seed * 100_003 + seed_offset)
    model = MODELS[config.model](targets.shape[1]).to(x.device)
    if len(x) == 0:
        return model.eval()  # nothing to learn from: the untrained model is the honest result
    t = torch.as_tensor(targets, dtype=torch.float32, device=x.device)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    optimizer, schedule = _optimizer(config, model, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + seed_offset)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), config.batch_size):
            idx = order[start:start + config.batch_size]
            xb = _augment(x[idx], generator) if config.augment else x[idx]
            loss = -(t[idx] * torch.log_softmax(model(xb), dim=1)).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch} ({desc})")
        if ctx is not None:
            ctx.progress(desc, epoch + 1, epochs)
    return model.eval()


def _optimizer(config: LabelDPConfig, model: nn.Module, total_steps: int) -> tuple[Any, Any]:
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                          weight_decay=config.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, total_steps))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop after 4-pixel reflection padding (one shift per batch)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    dx, dy = (int(v) for v in torch.randint(0, 9, (2,), generator=generator))
    padded = nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, ctx: RunContext | None = None) -> dict[str, float]:
    """Test accuracy and loss; with ``ctx``, each test example's prediction is recorded (public test data)."""
    probs = torch.as_tensor(predict_proba(model, x), device=y.device)
    loss = nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y).item()
    if ctx is not None:
        ctx.record_predictions("utility/accuracy", predicted=probs.argmax(1).tolist(), target=y.tolist(),
                               examples=digest(x, y))
    return {"utility/accuracy": (probs.argmax(1) == y).double().mean().item(), "utility/loss": loss}


# --------------------------------------------------------------------------- audit


def audit(config: LabelDPConfig, model: nn.Module, split: Split, canaries: Canaries, *,
          claimed: float | None, delta: float) -> dict[str, float]:
    """One-run audit (Steinke, Nasr, Jagielski 2023; ``suite.audit``) of the released model.

    Each canary is scored by the model's log-odds of its wrong label over its true one on its
    features; the ``audit_guesses`` guesses (fixed by the config, half "planted" on the highest
    scores, half "not planted" on the lowest) give the epsilon lower bound at 95% confidence,
    with the run's ``delta`` (0 for a pure epsilon-DP method).
    """
    m = len(canaries.index)
    if m == 0:
        return {}
    x = split.private_x[torch.as_tensor(canaries.index, device=split.private_x.device)]
    log_p = np.log(np.clip(predict_proba(model, x), 1e-30, None))
    rows = np.arange(m)
    scores = log_p[rows, canaries.wrong_label] - log_p[rows, canaries.true_label]
    guesses = config.audit_guesses or m // 2
    result = audit_scores(scores, canaries.planted, k_in=guesses // 2, k_out=guesses - guesses // 2,
                          delta=delta)
    if claimed is not None and result.epsilon_lb > claimed:
        log.warning("labeldp %s seed %d: canary audit lower bound %.3f exceeds the claimed epsilon %.3f",
                    config.method, config.seed, result.epsilon_lb, claimed)
    predicted_wrong = log_p.argmax(1) == canaries.wrong_label
    metrics = result.metrics()
    if canaries.planted.any():
        metrics["privacy/canary_planted_rate"] = float(predicted_wrong[canaries.planted].mean())
    if not canaries.planted.all():
        metrics["privacy/canary_control_rate"] = float(predicted_wrong[~canaries.planted].mean())
    return metrics
