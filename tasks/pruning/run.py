"""One run of the pruning task: train (or load) a model, optionally prune it to a target's MACs and
fine-tune it, then measure accuracy and inference cost. Loaded by ``PruningTask.run``."""

from __future__ import annotations

import copy
from typing import Any

import timm
import torch
from torch import nn

from suite.task import RunContext
from tasks.pruning import checkpoints, models
from tasks.pruning.data import Images, load_images
from tasks.pruning.prune import cached_ratio, make_pruner
from tasks.pruning.task import PruningConfig, PruningTask
from tasks.pruning.train import (Trainer, accumulate_gradients, device_of, evaluate, recalibrate_batchnorm,
                                 steps_per_epoch, train)


def run(config: PruningConfig, ctx: RunContext) -> dict[str, float]:
    with ctx.phase("setup"):
        torch.manual_seed(config.seed)
        images = load_images(config)
        model = models.build(config.model, images.n_classes, pretrained=config.pretrained)
    if config.method == "unpruned":
        with ctx.phase("train"):
            cached = trained(model, config, images, epochs=config.epochs, ctx=ctx)
        metrics: dict[str, float] = {}
    else:
        with ctx.phase("pretrain"):
            cached = trained(model, config, images, epochs=config.pretrain_epochs, ctx=ctx)
        model, metrics = prune_and_finetune(model, config, images, ctx)
    with ctx.phase("eval"):
        metrics.update(evaluate(model, images, config, ctx=ctx))
        metrics.update(models.cost(model, config.resolution))
    with ctx.phase("latency"):
        metrics.update(latency(model, config))
    metrics["compute/checkpoint_cached"] = float(cached)
    metrics["compute/epochs"] = float(config.epochs)
    return metrics


def checkpoint_parts(config: PruningConfig, images: Images, *, epochs: int) -> dict[str, Any]:
    """Everything that determines a trained checkpoint (the cache key)."""
    return {"what": "trained", "task_version": PruningTask.version, "model": config.model, "epochs": epochs,
            "seed": config.seed, "n_classes": images.n_classes, "resolution": config.resolution,
            "batch_size": config.batch_size, "optimizer": config.optimizer, "lr": config.lr,
            "weight_decay": config.weight_decay, "bn_recalibration_batches": config.bn_recalibration_batches,
            "pretrained": config.pretrained, "channels_last": config.channels_last,
            "device": device_of(config).type, "torch": torch.__version__, "timm": timm.__version__,
            **{f"data_{k}": v for k, v in images.fingerprint.items()}}


def trained(model: nn.Module, config: PruningConfig, images: Images, *, epochs: int, ctx: RunContext) -> bool:
    """Train ``model`` for ``epochs`` or read the same training's result from the cache."""

    def fit(m: nn.Module) -> None:
        torch.manual_seed(config.seed)
        train(m, config, images, epochs=epochs, seed=config.seed,
              report=lambda done, total: ctx.progress(f"train {config.model}", done, total))

    return checkpoints.cached_training(model, checkpoint_parts(config, images, epochs=epochs), fit)


def prune_and_finetune(model: nn.Module, config: PruningConfig, images: Images,
                       ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
    """Prune ``model`` (trained for ``pretrain_epochs``) to the target's MACs with the config's
    criterion, in one step or ``iterative_steps`` steps spread evenly over the fine-tuning, which
    gets the rest of the epoch budget."""
    metrics = {"utility/accuracy_pretrained": evaluate(model, images, config)["utility/accuracy"],
               "compute/macs_before_pruning": models.macs_and_params(model, config.resolution)[0]}
    with ctx.phase("prune"):
        target_macs = models.macs_and_params(models.build(config.target, images.n_classes), config.resolution)[0]
        ratio, _ = cached_ratio(config.model, lambda: models.build(config.model, images.n_classes), target_macs,
                                resolution=config.resolution, n_classes=images.n_classes,
                                tolerance=config.macs_tolerance)
        model = model.to(memory_format=torch.contiguous_format)
        steps = config.iterative_steps if config.schedule == "iterative" else 1
        pruner = make_pruner(model, config.method, ratio=ratio, steps=steps, resolution=config.resolution)
    total = (config.epochs - config.pretrain_epochs) * steps_per_epoch(images, config.batch_size)
    trainer = Trainer(config, images, total_steps=total, seed=config.seed + 1,
                      report=lambda done, n: ctx.progress("fine-tune", done, n))
    torch.manual_seed(config.seed)  # the random criterion draws from torch's generator
    for step in range(steps):
        with ctx.phase("prune"):
            if config.method == "taylor":
                accumulate_gradients(model, images, config, batches=config.taylor_batches, seed=config.seed + 2)
            pruner.step()
            model.zero_grad(set_to_none=True)
        if step == 0 and steps == 1:
            metrics["utility/accuracy_before_finetune"] = evaluate(model, images, config)["utility/accuracy"]
        with ctx.phase("finetune"):
            trainer.run(model, total * (step + 1) // steps)
    with ctx.phase("finetune"):
        recalibrate_batchnorm(model, images, config, seed=config.seed + 1)
    macs = models.macs_and_params(model, config.resolution)[0]
    gap = abs(macs - target_macs) / target_macs
    if gap > config.macs_tolerance:
        raise RuntimeError(f"pruned model has {macs:.4g} MACs, {gap:.1%} from the target {target_macs:.4g} "
                           f"(allowed {config.macs_tolerance:.0%})")
    metrics.update({"compute/target_macs": target_macs, "compute/macs_gap": gap, "compute/pruning_ratio": ratio})
    return model, metrics


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
