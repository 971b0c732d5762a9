"""What every method of the pruning family shares: the run (train, then the method's step, then measure)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any

from suite.context import RunContext
from suite.method import Method
from tasks.pruning.config import PruningConfig


class PruningMethod(Method, ABC):
    """A method of the pruning family. Every method trains ``config.model`` from scratch with the
    family's recipe (:func:`tasks.pruning.run.run`); what it then does to the trained model is its
    :meth:`after_training` step."""

    training_phase = "train"  # the name of the from-scratch training's phase in the run's timings

    def run(self, config: PruningConfig, ctx: RunContext) -> dict[str, float]:
        """Train, apply :meth:`after_training`, and measure accuracy, inference cost and training compute."""
        from tasks.pruning.run import run

        return run(config, ctx, method=self)

    @abstractmethod
    def after_training(self, model: Any, config: PruningConfig, images: Any,
                       ctx: RunContext) -> tuple[Any, dict[str, float]]:
        """The final model made from the trained ``model`` (a torch module; ``images`` the run's
        :class:`~tasks.pruning.data.Images`), and the metrics of that step. Its training FLOPs go in
        ``compute/finetune_flops`` (added to ``compute/train_flops_total``)."""

    def extra_epochs(self, config: PruningConfig) -> float:
        """Training epochs spent after the from-scratch training (reported in ``compute/epochs``)."""
        return 0.0
