"""Training and evaluation of the dpsgd task (imports torch and opacus; loaded by ``run``)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset

from suite import data
from suite.audit import audit_scores
from suite.examples import ExampleDigest
from suite.meters import count_flops, model_size
from suite.privacy import EPSILON_METRICS, all_epsilons
from suite.task import RunContext
from tasks.dpsgd.models import MODELS
from tasks.dpsgd.task import DPSGDConfig


# Known and harmless here: the suite measures, it does not deploy (secure RNG), and Opacus'
# hooks fire on the first layer whose input needs no gradient.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing")


@dataclass
class _Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    criterion: Any
    engine: PrivacyEngine | None


def train_and_evaluate(config: DPSGDConfig, ctx: RunContext) -> dict[str, float]:
    device = _device(config.device)
    torch.manual_seed(config.seed)
    with ctx.phase("setup"):
        train_set, test_set, n_classes = _datasets(config)
        train_set, canaries = _canaries(config, train_set, n_classes)
        if canaries is not None:
            train_set = ConcatDataset([train_set, canaries.trained()])
        setup = _make_private(config, train_set, MODELS[config.dataset](n_classes).to(device))
        metrics = _flops(setup, train_set, device)
    with ctx.phase("train"):
        steps, examples = _train(config, setup, device, ctx)
    with ctx.phase("eval"):
        metrics.update(_evaluate(setup.model, test_set, device, ctx))
    metrics.update(model_size(setup.model))
    metrics["compute/train_flops"] *= examples
    metrics["compute/throughput"] = examples / ctx.phases["train"]
    if setup.engine is not None:
        metrics.update(_privacy(config, setup, steps))
    if canaries is not None:
        with ctx.phase("audit"):
            metrics.update(_audit(config, setup.model, canaries, device))
    return metrics


@dataclass
class _Canaries:
    """Mislabeled examples; the ``included`` ones join the training set."""

    x: torch.Tensor
    y: torch.Tensor
    included: torch.Tensor  # bool, each True with probability 1/2

    def trained(self) -> TensorDataset:
        return TensorDataset(self.x[self.included], self.y[self.included])


def _canaries(config: DPSGDConfig, train_set: Any, n_classes: int) -> tuple[Any, _Canaries | None]:
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
def _audit(config: DPSGDConfig, model: nn.Module, canaries: _Canaries, device: torch.device) -> dict[str, float]:
    """Score each canary by minus its loss on its own label; guess IN on the highest, OUT on the lowest."""
    model.eval()
    logits = model(canaries.x.to(device))
    scores = -nn.functional.cross_entropy(logits, canaries.y.to(device), reduction="none")
    guesses = config.audit_guesses or max(2, config.audit_canaries // 2)
    result = audit_scores(scores.cpu().numpy(), canaries.included.numpy(), k_in=guesses // 2,
                          k_out=guesses - guesses // 2, delta=config.delta or 0.0)
    return result.metrics()


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _datasets(config: DPSGDConfig) -> tuple[Any, Any, int]:
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


def _make_private(config: DPSGDConfig, train_set: Any, model: nn.Module) -> _Setup:
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    criterion = nn.CrossEntropyLoss()
    if config.method == "nonprivate":
        return _Setup(model, optimizer, loader, criterion, None)
    engine = PrivacyEngine(accountant=config.accountant)
    with warnings.catch_warnings():
        # The noise calibration's binary search probes huge noise levels, whose optimal RDP
        # order is the largest; the final epsilon is computed (and may warn) in _privacy.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        made = _calibrate(engine, config, model, optimizer, loader, criterion)
    if config.grad_sample_mode == "ghost":
        model, optimizer, criterion, loader = made  # ghost clipping wraps the loss for its double backward
    else:
        model, optimizer, loader = made
    return _Setup(model, optimizer, loader, criterion, engine)


def _calibrate(engine: PrivacyEngine, config: DPSGDConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
               loader: DataLoader, criterion: Any) -> tuple[Any, ...]:
    """Opacus picks the noise multiplier that reaches the target epsilon after ``epochs``."""
    return engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
        target_epsilon=config.epsilon, target_delta=config.delta, epochs=config.epochs,
        max_grad_norm=config.max_grad_norm, poisson_sampling=True, grad_sample_mode=config.grad_sample_mode,
        noise_generator=torch.Generator().manual_seed(config.seed + 1),
    )


def _flops(setup: _Setup, train_set: Any, device: torch.device) -> dict[str, float]:
    """FLOPs per example of a training step (as the run trains) and of a forward pass."""
    n = min(32, len(train_set))
    x, y = next(iter(DataLoader(train_set, batch_size=n)))
    x, y = x.to(device), y.to(device)
    train = count_flops(lambda: setup.criterion(setup.model(x), y).backward())
    setup.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        forward = count_flops(lambda: setup.model(x))
    return {"compute/train_flops": train / n, "compute/inference_flops": forward / n}


def _train(config: DPSGDConfig, setup: _Setup, device: torch.device, ctx: RunContext) -> tuple[int, int]:
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


def _privacy(config: DPSGDConfig, setup: _Setup, steps: int) -> dict[str, float]:
    """Epsilon under every accountant, recomputed from the noise, sample rate and steps this run really used."""
    history = setup.engine.accountant.history
    sigma = setup.optimizer.noise_multiplier
    rate = _accounted_rate(setup.loader)
    if sum(h[2] for h in history) != steps or any(h[0] != sigma or h[1] != rate for h in history):
        raise RuntimeError(f"accountant history {history} disagrees with the run (sigma={sigma}, q={rate}, "
                           f"steps={steps})")
    epsilons = all_epsilons(history=[(sigma, rate, steps)], delta=config.delta, sampler="poisson")
    return {
        "privacy/epsilon": epsilons[EPSILON_METRICS[config.accountant]], **epsilons,
        "privacy/delta": config.delta, "privacy/noise_multiplier": sigma, "privacy/sample_rate": rate,
        "privacy/steps": float(steps), "privacy/max_grad_norm": config.max_grad_norm,
    }


def _accounted_rate(loader: Any) -> float:
    """The sample rate Opacus' accountant uses, checked to be at least the rate its sampler draws with.

    Opacus' sampler draws each example with p = 1/k, k the batches of the loader it was given; the
    private loader then has int(1/p) batches, and the accountant uses q = 1/int(1/p). In floating point
    1/(1/k) falls just below k for some k (93, 99, 105, 117, ...: 1/(1/93) = 92.99999999999999), so the
    loader has k - 1 batches an epoch and the accountant uses q = 1/92 while the sampler draws with
    1/93; otherwise q = p. Accounting with a rate at least the true one gives an upper bound: the pair
    of output distributions the accountants analyse at rate p, ((1-p) N(0, s^2) + p N(1, s^2), N(0, s^2)),
    is a post-processing of the pair at q >= p (keep the output with probability p/q, else replace it
    by a fresh N(0, s^2) draw), so its epsilon is never larger. The steps counted are the steps taken.
    """
    rate = 1.0 / len(loader)
    if rate < loader.sample_rate:
        raise RuntimeError(f"Opacus accounts with sample rate {rate}, below the rate {loader.sample_rate} its "
                           "sampler draws with: the epsilon would not be an upper bound")
    return rate
