"""Training (SGD with nesterov momentum or AdamW, cosine decay over the whole budget) and evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from suite.examples import ExampleDigest
from suite.task import RunContext
from tasks.pruning.data import Batch, Images
from tasks.pruning.task import PruningConfig


def device_of(config: PruningConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def steps_per_epoch(images: Images, batch_size: int) -> int:
    return max(1, images.n_train // batch_size)


def batch_stream(images: Images, batch_size: int, *, seed: int) -> Iterator[Batch]:
    """Minibatches epoch after epoch, each epoch in its own seeded order."""
    epoch = 0
    while True:
        yield from images.train_batches(batch_size, seed=seed * 100_003 + epoch)
        epoch += 1


class Trainer:
    """Runs optimizer steps ``start..stop`` of a ``total``-step cosine schedule on one batch stream.

    A pruned model is trained in chunks (iterative pruning changes parameter shapes between
    them), each with a fresh optimizer but the same learning-rate schedule and data order.
    """

    def __init__(self, config: PruningConfig, images: Images, *, total_steps: int, seed: int,
                 report: Callable[[int, int], None] = lambda done, total: None):
        self.config, self.total, self.report = config, total_steps, report
        self.device = device_of(config)
        self.stream = batch_stream(images, config.batch_size, seed=seed)
        self.step = 0

    def run(self, model: nn.Module, stop: int) -> None:
        cfg = self.config
        model.to(self.device).train()
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        decay, no_decay = [], []
        for p in model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BatchNorm and biases
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        else:
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
        while self.step < stop:
            x, y = next(self.stream)
            x, y = self._to_device(x), y.to(self.device, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * self.step / self.total))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            self.step += 1
            self.report(self.step, self.total)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x


def train(model: nn.Module, config: PruningConfig, images: Images, *, epochs: int, seed: int,
          report: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Train ``model`` for ``epochs`` in one go."""
    total = epochs * steps_per_epoch(images, config.batch_size)
    Trainer(config, images, total_steps=total, seed=seed, report=report).run(model, total)
    recalibrate_batchnorm(model, images, config, seed=seed)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Images, config: PruningConfig, *, seed: int) -> None:
    """Re-estimate BatchNorm's running statistics as a plain average over ``bn_recalibration_batches``
    training minibatches with the final weights. After a few dozen steps (the quick tier) the running
    averages still remember the first, very different, activations, and eval-mode accuracy lags the
    model's real accuracy badly; every model, pruned or not, gets the same recalibration."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or config.bn_recalibration_batches == 0:
        return
    device = device_of(config)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight to every batch
    model.to(device).train()
    stream = batch_stream(images, config.batch_size, seed=seed + 7)
    for _ in range(config.bn_recalibration_batches):
        x, _ = next(stream)
        x = x.to(device)
        model(x.contiguous(memory_format=torch.channels_last) if config.channels_last else x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


@torch.no_grad()
def evaluate(model: nn.Module, images: Images, config: PruningConfig, *,
             ctx: RunContext | None = None) -> dict[str, float]:
    """Test accuracy and loss; with ``ctx``, each test example's prediction is recorded (public test data)."""
    device = device_of(config)
    model.to(device).eval()
    correct = loss = n = 0.0
    predicted, target, seen = [], [], ExampleDigest()
    for x, y in images.test_batches(256):
        seen.update(x, y)
        x, y = x.to(device), y.to(device)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
        predicted += logits.argmax(1).tolist()
        target += y.tolist()
    if ctx is not None:
        ctx.record_predictions("utility/accuracy", predicted=predicted, target=target, examples=seen.hexdigest())
    return {"utility/accuracy": correct / n, "utility/loss": loss / n}


def accumulate_gradients(model: nn.Module, images: Images, config: PruningConfig, *, batches: int,
                         seed: int) -> None:
    """Sum of the loss gradients over ``batches`` training minibatches in ``.grad`` (for Taylor
    importance). Eval mode, so that BatchNorm's running statistics stay as trained."""
    device = device_of(config)
    model.to(device).eval()
    model.zero_grad(set_to_none=True)
    stream = batch_stream(images, config.batch_size, seed=seed)
    for _ in range(batches):
        x, y = next(stream)
        x = x.to(device)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        F.cross_entropy(model(x), y.to(device)).backward()
