"""One run of the pruning task: train (or load) a model with the full from-scratch budget, let the
method make the final model of it (the criteria prune it to a target's MACs and fine-tune it
briefly), then measure accuracy, inference cost and the training compute of the whole path.
Loaded by :meth:`tasks.pruning.methods.base.PruningMethod.run`."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import timm
import torch
from torch import nn

from suite.context import RunContext
from suite.device import resolve_device
from tasks.pruning import checkpoints, flops, models
from tasks.pruning.config import VERSION, PruningConfig
from tasks.pruning.data import Images, load_images
from tasks.pruning.train import evaluate, steps_for, train

if TYPE_CHECKING:  # the methods call this module: an import at run time would be a cycle
    from tasks.pruning.methods.base import PruningMethod


def run(config: PruningConfig, ctx: RunContext, *, method: PruningMethod) -> dict[str, float]:
    """The metrics of ``config``: ``config.model`` trained, then ``method.after_training``, then measured."""
    with ctx.phase("setup"):
        torch.manual_seed(config.seed)
        images = load_images(config)
        model = models.build(config.model, images.n_classes, pretrained=config.pretrained)
    steps = steps_for(config.epochs, images, config.batch_size)
    with ctx.phase(method.training_phase):
        cached = trained(model, config, images, steps=steps, ctx=ctx)
    metrics = {"compute/train_flops_total": training_flops(model, config, steps=steps)}
    model, after = method.after_training(model, config, images, ctx)
    metrics.update(after)
    metrics["compute/train_flops_total"] += after.get("compute/finetune_flops", 0.0)
    epochs = float(config.epochs) + method.extra_epochs(config)
    with ctx.phase("eval"):
        metrics.update(evaluate(model, images, config, ctx=ctx))
        metrics.update(models.cost(model, config.resolution))
    with ctx.phase("latency"):
        metrics.update(latency(model, config))
    metrics["compute/checkpoint_cached"] = float(cached)
    metrics["compute/epochs"] = epochs
    return metrics


def checkpoint_parts(config: PruningConfig, images: Images, *, steps: int) -> dict[str, Any]:
    """Everything that determines a trained checkpoint (the cache key): the model, the seed and the
    whole training recipe, but nothing about pruning, so the unpruned cell of a model and the pruned
    cells that start from it share one checkpoint."""
    recipe = ("batch_size", "optimizer", "lr", "warmup_epochs", "weight_decay", "label_smoothing", "random_shift",
              "bn_recalibration_batches", "pretrained", "channels_last")
    return {"what": "trained", "task_version": VERSION, "model": config.model, "steps": steps,
            "seed": config.seed, "n_classes": images.n_classes, "resolution": config.resolution,
            **{key: getattr(config, key) for key in recipe},
            "device": resolve_device(config.device).type, "torch": torch.__version__, "timm": timm.__version__,
            **{f"data_{k}": v for k, v in images.fingerprint.items()}}


def trained(model: nn.Module, config: PruningConfig, images: Images, *, steps: int, ctx: RunContext) -> bool:
    """Train ``model`` for ``steps`` or read the same training's result from the cache."""

    def fit(m: nn.Module) -> None:
        torch.manual_seed(config.seed)
        train(m, config, images, steps=steps, seed=config.seed,
              report=lambda done, total: ctx.progress(f"train {config.model}", done, total))

    return checkpoints.cached_training(model, checkpoint_parts(config, images, steps=steps), fit)


def training_flops(model: nn.Module, config: PruningConfig, *, steps: int) -> float:
    """FLOPs of training ``model`` from scratch: ``steps`` minibatches forward and backward, then the
    BatchNorm recalibration's forward passes (see :mod:`tasks.pruning.flops` for what is counted)."""
    return (flops.training(model, config.resolution, examples=steps * config.batch_size)
            + flops.forward(model, config.resolution, examples=config.bn_recalibration_batches * config.batch_size))


def latency(model: nn.Module, config: PruningConfig) -> dict[str, float]:
    cpu_model = copy.deepcopy(model).to("cpu")
    if config.channels_last:
        cpu_model = cpu_model.to(memory_format=torch.channels_last)
    out = {f"compute/latency_ms_b{b}": models.latency_ms(cpu_model, config.resolution, batch=b,
                                                         repeats=config.latency_repeats,
                                                         channels_last=config.channels_last)
           for b in (1, 32)}
    out["compute/latency_threads"] = float(torch.get_num_threads())
    return out
