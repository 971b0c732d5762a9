"""Prune a trained model to a target's MACs and fine-tune it: in one shot, or in ``iterative_steps``
steps spread evenly over the fine-tuning; channels cut per layer alike (local) or ranked across
layers (global).

The fine-tuning is learning-rate rewinding (Renda, Frankle and Carbin, "Comparing Rewinding and
Fine-tuning in Neural Network Pruning", ICLR 2020): the last ``finetune_epochs`` of the training's
own schedule replayed, same optimizer, loss and data, so it has no learning rate of its own to tune.
Why not a fresh run of the schedule from its peak: a new optimizer state at the peak learning rate
damages the trained model itself, so a pruned model's score would measure that damage rather than
the pruning's; replaying the tail (for a fifth of the budget, lr from about a tenth of the peak
down to zero) is the literature's rule. ``python -m benchmarks.pruning control`` measures what the
fine-tuning alone does to the unpruned model."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Protocol

import torch
import torch_pruning as tp
from torch import nn

from suite.context import RunContext
from tasks.pruning import flops, models
from tasks.pruning.data import Images
from tasks.pruning.prune import cached_local_ratio, make_pruner, prune_globally_to
from tasks.pruning.train import Trainer, evaluate, recalibrate_batchnorm, steps_for

if TYPE_CHECKING:  # the criteria call this module: an import at run time would be a cycle
    from tasks.pruning.methods.criteria import PrunedConfig


class Criterion(Protocol):
    """What the pipeline asks of a pruning criterion (:class:`tasks.pruning.methods.criteria.Pruned`)."""

    def importance(self) -> tp.importance.Importance: ...

    def score(self, model: nn.Module, config: PrunedConfig, images: Images) -> float: ...


def prune_and_finetune(model: nn.Module, config: PrunedConfig, images: Images, ctx: RunContext, *,
                       criterion: Criterion) -> tuple[nn.Module, dict[str, float]]:
    """``model`` (trained with the full budget) pruned to ``config.target``'s MACs with ``criterion``
    and fine-tuned, with metrics: accuracy before and right after pruning, MACs gap, ratio and
    fine-tuning FLOPs (the criterion's scoring passes and BatchNorm recalibration included)."""
    metrics = {"utility/accuracy_pretrained": evaluate(model, images, config)["utility/accuracy"],
               "compute/macs_before_pruning": models.macs_and_params(model, config.resolution)[0]}
    target_macs = models.macs_and_params(models.build(config.target, images.n_classes), config.resolution)[0]
    cut = _Cutter(model, config, images, target_macs, criterion)
    schedule = steps_for(config.epochs, images, config.batch_size)
    start = schedule - min(schedule, steps_for(config.finetune_epochs, images, config.batch_size))
    trainer = Trainer(config, images, total_steps=schedule, start=start, seed=config.seed + 1,
                      report=lambda done, n: ctx.progress("fine-tune", done, n))
    spent, batch = 0.0, config.batch_size
    torch.manual_seed(config.seed)  # the random criterion draws from torch's generator
    for step in range(cut.steps):
        with ctx.phase("prune"):
            spent += criterion.score(model, config, images)
            model = cut.step(model, step)
        if step == 0 and cut.steps == 1:
            metrics["utility/accuracy_before_finetune"] = _accuracy_recalibrated(model, images, config)
        with ctx.phase("finetune"):
            before = trainer.step
            trainer.run(model, start + (schedule - start) * (step + 1) // cut.steps)
            spent += flops.training(model, config.resolution, examples=(trainer.step - before) * batch)
    with ctx.phase("finetune"):
        recalibrate_batchnorm(model, images, config, seed=config.seed + 1)
        spent += flops.forward(model, config.resolution, examples=config.bn_recalibration_batches * batch)
    macs = models.macs_and_params(model, config.resolution)[0]
    gap = abs(macs - target_macs) / target_macs
    if gap > config.macs_tolerance:
        raise RuntimeError(f"pruned model has {macs:.4g} MACs, {gap:.1%} from the target {target_macs:.4g} "
                           f"(allowed {config.macs_tolerance:.0%})")
    metrics.update({"compute/target_macs": target_macs, "compute/macs_gap": gap, "compute/pruning_ratio": cut.ratio,
                    "compute/finetune_flops": spent})
    return model, metrics


def _accuracy_recalibrated(model: nn.Module, images: Images, config: PrunedConfig) -> float:
    """Test accuracy right after pruning, with BatchNorm's statistics re-estimated on a copy (no
    weight changes): the running statistics of the unpruned model do not fit the thinner layers'
    activations, and with them a pruned model scores about chance."""
    probe = copy.deepcopy(model)
    recalibrate_batchnorm(probe, images, config, seed=config.seed + 3)
    return evaluate(probe, images, config)["utility/accuracy"]


class _Cutter:
    """The pruning steps of one run. Local: torch-pruning's own iterative schedule at the cached
    per-layer ratio (each step cuts an equal share). Global: each step searches, on the current
    model, the ratio that brings the MACs to that step's goal, the goals falling linearly from
    the model's MACs to the target's."""

    def __init__(self, model: nn.Module, config: PrunedConfig, images: Images, target_macs: float,
                 criterion: Criterion):
        self.config, self.target_macs, self.criterion = config, target_macs, criterion
        self.steps = config.iterative_steps if config.schedule == "iterative" else 1
        self.full_macs = models.macs_and_params(model, config.resolution)[0]
        self.ratio = 0.0
        self.pruner = None
        if not config.global_pruning:
            self.ratio, _ = cached_local_ratio(config.model, lambda: models.build(config.model, images.n_classes),
                                               target_macs, resolution=config.resolution,
                                               n_classes=images.n_classes, tolerance=config.macs_tolerance)

    def step(self, model: nn.Module, step: int) -> nn.Module:
        cfg = self.config
        model = model.to(memory_format=torch.contiguous_format)
        if not cfg.global_pruning:
            if self.pruner is None:
                self.pruner = make_pruner(model, self.criterion.importance(), ratio=self.ratio, steps=self.steps,
                                          resolution=cfg.resolution)
            self.pruner.step()
            model.zero_grad(set_to_none=True)
            return model
        goal = self.full_macs - (self.full_macs - self.target_macs) * (step + 1) / self.steps
        pruned, ratio = prune_globally_to(model, self.criterion.importance, goal, resolution=cfg.resolution,
                                          tolerance=cfg.macs_tolerance)
        # the fraction of the original channels removed so far, to report one number per run
        self.ratio = 1 - (1 - self.ratio) * (1 - ratio)
        return pruned
