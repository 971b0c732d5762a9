"""The pruning criteria: the trained model pruned structurally to a smaller model's MACs and
fine-tuned (:func:`tasks.pruning.finetune.prune_and_finetune`). They share that pipeline and its
keys (:class:`PrunedConfig`) and differ in how they score channels (:meth:`Pruned.importance`)
and in what that scoring costs (:meth:`Pruned.score`)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

from pydantic import Field, model_validator

from suite.context import RunContext
from tasks.pruning.config import FBNETS, METHODS, PruningConfig
from tasks.pruning.methods.base import PruningMethod


class PrunedConfig(PruningConfig):
    """The keys of every pruning criterion."""

    target: Literal["fbnetv3_b", "fbnetv3_d"] = "fbnetv3_b"  # whose MACs the pruned model matches
    schedule: Literal["one_shot", "iterative"] = "one_shot"  # all at once, or in steps
    iterative_steps: int = Field(3, ge=2)  # pruning steps spread over the fine-tuning (read when iterative)
    global_pruning: bool = False  # rank channels across layers (torch-pruning's global), else per layer
    finetune_epochs: float = Field(1.0, gt=0)  # fine-tuning replays the training schedule's last N epochs
    macs_tolerance: float = Field(0.02, gt=0, lt=1)  # allowed relative MACs gap to the target

    @model_validator(mode="after")
    def _target_is_smaller_and_finetuning_fits(self) -> PrunedConfig:
        if FBNETS.index(self.target) >= FBNETS.index(self.model):
            raise ValueError(f"target {self.target} must be smaller than model {self.model} "
                             f"(order: {', '.join(FBNETS)})")
        if self.finetune_epochs > self.epochs:
            raise ValueError(f"finetune_epochs ({self.finetune_epochs}) must be at most epochs ({self.epochs}): "
                             "the fine-tuning replays the last finetune_epochs of the training schedule")
        return self


class Pruned(PruningMethod):
    """Prune the trained model to ``target``'s MACs with this criterion, then fine-tune it."""

    training_phase = "pretrain"

    @abstractmethod
    def importance(self) -> Any:
        """A fresh torch-pruning ``Importance`` that scores channels for this criterion."""

    def score(self, model: Any, config: PrunedConfig, images: Any) -> float:
        """Prepare ``model`` before a pruning step (e.g. gradients); returns the FLOPs that took."""
        return 0.0

    def after_training(self, model: Any, config: PrunedConfig, images: Any,
                       ctx: RunContext) -> tuple[Any, dict[str, float]]:
        from tasks.pruning.finetune import prune_and_finetune

        return prune_and_finetune(model, config, images, ctx, criterion=self)

    def extra_epochs(self, config: PrunedConfig) -> float:
        return config.finetune_epochs


class MagnitudeConfig(PrunedConfig):
    method: Literal["magnitude"] = "magnitude"


@METHODS.register
class Magnitude(Pruned):
    """L2 norm over each channel's whole dependency group."""

    Config = MagnitudeConfig

    def importance(self) -> Any:
        import torch_pruning as tp

        return tp.importance.GroupMagnitudeImportance(p=2)


class TaylorConfig(PrunedConfig):
    method: Literal["taylor"] = "taylor"
    taylor_batches: int = Field(4, ge=1)  # minibatches whose gradients score the channels


@METHODS.register
class Taylor(Pruned):
    """|w * dL/dw| summed over the group, from the loss gradients of ``taylor_batches`` minibatches."""

    Config = TaylorConfig

    def importance(self) -> Any:
        import torch_pruning as tp

        return tp.importance.GroupTaylorImportance()

    def score(self, model: Any, config: TaylorConfig, images: Any) -> float:
        from tasks.pruning import flops
        from tasks.pruning.train import accumulate_gradients

        spent = flops.training(model, config.resolution, examples=config.taylor_batches * config.batch_size)
        accumulate_gradients(model, images, config, batches=config.taylor_batches, seed=config.seed + 2)
        return spent


class RandomConfig(PrunedConfig):
    method: Literal["random"] = "random"


@METHODS.register
class Random(Pruned):
    """Channels drawn at random (from torch's generator): the control."""

    Config = RandomConfig

    def importance(self) -> Any:
        import torch_pruning as tp

        return tp.importance.RandomImportance()
