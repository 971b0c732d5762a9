"""The dpsgd family's pipeline: data, canaries, training, evaluation and audit (imports torch; loaded by ``run``).

The method varies two steps (:class:`tasks.dpsgd.config.SGDMethod`): ``privatize`` turns the
plain model, optimizer and loader into the ones the run trains with, and ``privacy`` reports the
run's privacy metrics.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset

from suite import data
from suite.audit import audit_scores
from suite.context import RunContext
from suite.device import resolve_device
from suite.examples import ExampleDigest
from suite.meters import count_flops, model_size
from tasks.dpsgd.config import SGDConfig, SGDMethod
from tasks.dpsgd.models import MODELS


# Known and harmless here (the dpsgd method's Opacus): the suite measures, it does not deploy (secure
# RNG), and Opacus' hooks fire on the first layer whose input needs no gradient.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing")


@dataclass
class Setup:
    """What a run trains with: the plain parts, or the ones a private method made of them."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    criterion: Any
    accountant: Any = None  # what tracked the privacy loss of the steps (a private method's)


def train_and_evaluate(config: SGDConfig, ctx: RunContext, method: SGDMethod) -> dict[str, float]:
    """Train ``method``'s way on the config's data, then evaluate, account and audit the model."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    with ctx.phase("setup"):
        train_set, test_set, n_classes = _datasets(config)
        train_set, canaries = _canaries(config, train_set, n_classes)
        if canaries is not None:
            train_set = ConcatDataset([train_set, canaries.trained()])
        setup = method.privatize(config, _plain(config, train_set, MODELS[config.dataset](n_classes).to(device)))
        metrics = _flops(setup, train_set, device)
    with ctx.phase("train"):
        steps, examples = _train(config, setup, device, ctx)
    with ctx.phase("eval"):
        metrics.update(_evaluate(setup.model, test_set, device, ctx))
    metrics.update(model_size(setup.model))
    metrics["compute/train_flops"] *= examples
    metrics["compute/throughput"] = examples / ctx.phases["train"]
    with ctx.phase("accounting"):  # epsilon under three accountants: a quarter of a second of a DP-SGD cell
        metrics.update(method.privacy(config, setup, steps=steps))
    if canaries is not None:
        with ctx.phase("audit"):
            metrics.update(_audit(config, setup.model, canaries, device, delta=method.audit_delta(config)))
    return metrics


@dataclass
class _Canaries:
    """Mislabeled examples; the ``included`` ones join the training set."""

    x: torch.Tensor
    y: torch.Tensor
    included: torch.Tensor  # bool, each True with probability 1/2

    def trained(self) -> TensorDataset:
        return TensorDataset(self.x[self.included], self.y[self.included])


def _canaries(config: SGDConfig, train_set: Any, n_classes: int) -> tuple[Any, _Canaries | None]:
    """The training set without the canaries' source examples, and the audit's canaries.

    Canaries are real training images with a wrong label (drawn from their own generator, the
    run's seed): a model that memorizes individual examples fits the wrong label of the
    included ones, while on excluded ones it predicts the true class.
    """
    m = config.audit_canaries
    if m == 0:
        return train_set, None
    if m > len(train_set) // 2:  # the config checked this for the standard splits; local data may be smaller
        raise ValueError(f"audit_canaries={m} needs at least {2 * m} training examples, got {len(train_set)}")
    generator = torch.Generator().manual_seed(10_007 * config.seed + 17)
    order = torch.randperm(len(train_set), generator=generator)
    picked, kept = order[:m].tolist(), sorted(order[m:].tolist())
    x = torch.stack([torch.as_tensor(train_set[i][0]) for i in picked])
    true = torch.as_tensor([int(train_set[i][1]) for i in picked])
    y = (true + torch.randint(1, n_classes, (m,), generator=generator)) % n_classes
    included = torch.rand(m, generator=generator) < 0.5
    return Subset(train_set, kept), _Canaries(x, y, included)


@torch.no_grad()
def _audit(config: SGDConfig, model: nn.Module, canaries: _Canaries, device: torch.device, *,
           delta: float) -> dict[str, float]:
    """Score each canary by minus its loss on its own label; guess IN on the highest, OUT on the lowest."""
    model.eval()
    logits = model(canaries.x.to(device))
    scores = -nn.functional.cross_entropy(logits, canaries.y.to(device), reduction="none")
    guesses = config.audit_guesses or max(2, config.audit_canaries // 2)
    result = audit_scores(scores.cpu().numpy(), canaries.included.numpy(), k_in=guesses // 2,
                          k_out=guesses - guesses // 2, delta=delta)
    return result.metrics()


def _datasets(config: SGDConfig) -> tuple[Any, Any, int]:
    if config.dataset == "digits":
        split = data.digits(split_seed=config.split_seed)
        train = TensorDataset(torch.from_numpy(split.x_train), torch.from_numpy(split.y_train))
        test = TensorDataset(torch.from_numpy(split.x_test), torch.from_numpy(split.y_test))
        n_classes = split.n_classes
    else:
        root = data.data_root(config.data_dir)
        train, test, n_classes = data.torchvision_split(config.dataset, root, download=config.download)
    if config.train_subset is not None:
        train = Subset(train, range(min(config.train_subset, len(train))))
    return train, test, n_classes


def _plain(config: SGDConfig, train_set: Any, model: nn.Module) -> Setup:
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    return Setup(model, optimizer, loader, nn.CrossEntropyLoss())


def _flops(setup: Setup, train_set: Any, device: torch.device) -> dict[str, float]:
    """FLOPs per example of a training step (as the run trains) and of a forward pass."""
    n = min(32, len(train_set))
    x, y = next(iter(DataLoader(train_set, batch_size=n)))
    x, y = x.to(device), y.to(device)
    train = count_flops(lambda: setup.criterion(setup.model(x), y).backward())
    setup.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        forward = count_flops(lambda: setup.model(x))
    return {"compute/train_flops": train / n, "compute/inference_flops": forward / n}


def _train(config: SGDConfig, setup: Setup, device: torch.device, ctx: RunContext) -> tuple[int, int]:
    setup.model.train()
    steps = examples = 0
    total = config.epochs * len(setup.loader)
    for epoch in range(config.epochs):
        for x, y in setup.loader:
            x, y = x.to(device), y.to(device)
            setup.optimizer.zero_grad(set_to_none=True)
            loss = setup.criterion(setup.model(x), y)
            loss.backward()
            setup.optimizer.step()
            steps += 1
            examples += len(y)
            # Poisson sampling draws an empty batch now and then (probability e^-B at expected size B): its
            # mean loss is NaN and the step adds noise only, as DP-SGD should; that is not a diverged run.
            if len(y) and not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch}, step {steps}")
            ctx.progress(f"epoch {epoch + 1}/{config.epochs}", steps, total)
    return steps, examples


@torch.no_grad()
def _evaluate(model: nn.Module, test_set: Any, device: torch.device, ctx: RunContext) -> dict[str, float]:
    """Test accuracy and loss; each test example's prediction is recorded for paired comparisons."""
    model.eval()
    correct = count = 0
    loss_sum = 0.0
    predicted, target, seen = [], [], ExampleDigest()
    for x, y in DataLoader(test_set, batch_size=512):
        seen.update(x, y)
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
        predicted += logits.argmax(1).tolist()
        target += y.tolist()
    ctx.record_predictions("utility/accuracy", predicted=predicted, target=target, examples=seen.hexdigest())
    return {"utility/accuracy": correct / count, "utility/loss": loss_sum / count}
