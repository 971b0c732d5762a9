"""The training recipe (one for every model and for the fine-tuning) and evaluation.

The recipe: SGD with nesterov momentum or AdamW, a linear warm-up then cosine decay to zero over
the run's steps, label-smoothed cross-entropy, and random translations of the training images;
after training, BatchNorm's running statistics are re-estimated (see :func:`recalibrate_batchnorm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from suite.context import RunContext
from suite.device import resolve_device
from suite.examples import ExampleDigest
from tasks.pruning.config import PruningConfig
from tasks.pruning.data import Batch, Images
from tasks.pruning.fastconv import fast_convolutions


def steps_per_epoch(images: Images, batch_size: int) -> int:
    return max(1, images.n_train // batch_size)


def steps_for(epochs: float, images: Images, batch_size: int) -> int:
    """Optimizer steps in ``epochs`` (fractional epochs allowed), at least one."""
    return max(1, round(epochs * steps_per_epoch(images, batch_size)))


def batch_stream(images: Images, batch_size: int, *, seed: int) -> Iterator[Batch]:
    """Minibatches epoch after epoch, each epoch in its own seeded order."""
    epoch = 0
    while True:
        yield from images.train_batches(batch_size, seed=seed * 100_003 + epoch)
        epoch += 1


def learning_rate(step: int, *, peak: float, total: int, warmup: int) -> float:
    """Linear warm-up from peak / warmup to ``peak`` over ``warmup`` steps, then cosine decay to zero
    at ``total`` (the shape of timm's warm-up + cosine schedules)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to ``pixels`` in each direction, edges replicated (the pad-and-crop
    augmentation of CIFAR training recipes, done on a tensor batch)."""
    if pixels == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


class Trainer:
    """Runs optimizer steps ``start..stop`` of one ``total``-step schedule on one batch stream.

    A fine-tuning starts at ``start`` > 0: it replays the last steps of the training's schedule
    (learning-rate rewinding). ``run`` may be called in chunks with the same schedule and data
    order. The optimizer (and its state) carries over between chunks while the model's parameters
    are the same tensors; after a pruning step (which replaces them) a chunk starts a fresh one.
    The forward passes run under :class:`tasks.pruning.fastconv.fast_convolutions` (the same
    gradients up to float rounding, without oneDNN's slow depthwise weight gradients and 1x1 convs
    of 1x1 maps).
    """

    def __init__(self, config: PruningConfig, images: Images, *, total_steps: int, seed: int, start: int = 0,
                 report: Callable[[int, int], None] = lambda done, total: None):
        self.config, self.total, self.start, self.report = config, total_steps, start, report
        self.warmup = min(total_steps - 1, round(config.warmup_epochs * steps_per_epoch(images, config.batch_size)))
        self.device = resolve_device(config.device)
        self.stream = batch_stream(images, config.batch_size, seed=seed)
        self.augment = torch.Generator().manual_seed(seed + 11)
        self.step = start
        self._params: list[nn.Parameter] = []
        self._opt: torch.optim.Optimizer | None = None

    def run(self, model: nn.Module, stop: int) -> None:
        cfg = self.config
        model.to(self.device).train()
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = self._optimizer_for(model)
        while self.step < stop:
            x, y = next(self.stream)
            x = self._to_device(random_shift(x, cfg.random_shift, self.augment))
            y = y.to(self.device, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = learning_rate(self.step, peak=cfg.lr, total=self.total, warmup=self.warmup)
            opt.zero_grad(set_to_none=True)
            with fast_convolutions():  # the forward only: its backward runs without the mode's overhead
                logits = model(x)
            F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing).backward()
            opt.step()
            self.step += 1
            self.report(self.step - self.start, self.total - self.start)

    def _optimizer_for(self, model: nn.Module) -> torch.optim.Optimizer:
        params = list(model.parameters())  # held, so that a later chunk's tensors cannot reuse their ids
        same = len(params) == len(self._params) and all(a is b for a, b in zip(params, self._params))
        if self._opt is None or not same:
            self._opt, self._params = _optimizer(model, self.config), params
        return self._opt

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x


def _optimizer(model: nn.Module, cfg: PruningConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BatchNorm and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        # fused: one kernel for all parameters instead of a loop of small ops per tensor (AdamW's step
        # went from ~53 to ~18 ms of fbnetv3_g's step on one CPU thread); the same update up to rounding
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def train(model: nn.Module, config: PruningConfig, images: Images, *, steps: int, seed: int,
          report: Callable[[int, int], None] = lambda done, total: None) -> None:
    """Train ``model`` for ``steps`` optimizer steps in one go, then recalibrate its BatchNorm."""
    Trainer(config, images, total_steps=steps, seed=seed, report=report).run(model, steps)
    recalibrate_batchnorm(model, images, config, seed=seed)


def _in_memory_format(model: nn.Module, config: PruningConfig) -> nn.Module:
    """The model's weights in the inputs' memory format: a model just loaded or pruned is
    contiguous, and fed channels_last inputs it ran ~4x slower (a pruned g's forward at batch 128:
    225 ms instead of 58)."""
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Images, config: PruningConfig, *, seed: int) -> None:
    """Re-estimate BatchNorm's running statistics as a plain average over ``bn_recalibration_batches``
    training minibatches with the final weights. After a few hundred steps (the quick tier) the
    running averages still remember earlier, very different, activations, and eval-mode accuracy
    lags the model's real accuracy; every model, pruned or not, gets the same recalibration."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or config.bn_recalibration_batches == 0:
        return
    device = resolve_device(config.device)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight to every batch
    _in_memory_format(model.to(device).train(), config)
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
    device = resolve_device(config.device)
    _in_memory_format(model.to(device).eval(), config)
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
    device = resolve_device(config.device)
    model.to(device).eval()
    model.zero_grad(set_to_none=True)
    stream = batch_stream(images, config.batch_size, seed=seed)
    for _ in range(batches):
        x, y = next(stream)
        x = x.to(device)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        F.cross_entropy(model(x), y.to(device)).backward()
