"""unpruned: the model trained from scratch and measured as it is (the baseline a pruned model is
compared with, and the checkpoint the pruned cells of the same model and seed start from)."""

from __future__ import annotations

from typing import Any, Literal

from suite.context import RunContext
from tasks.pruning.config import METHODS, PruningConfig
from tasks.pruning.methods.base import PruningMethod


class UnprunedConfig(PruningConfig):
    method: Literal["unpruned"] = "unpruned"


@METHODS.register
class Unpruned(PruningMethod):
    Config = UnprunedConfig

    def after_training(self, model: Any, config: UnprunedConfig, images: Any,
                       ctx: RunContext) -> tuple[Any, dict[str, float]]:
        return model, {}
