"""nonprivate: the network trained on the true private labels (the accuracy every private method is read against)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from suite.context import RunContext
from tasks.labeldp.config import METHODS, LabelDPConfig, LabelDPMethod

if TYPE_CHECKING:
    from torch import nn

    from tasks.labeldp.train import Split


class NonPrivateConfig(LabelDPConfig):
    method: Literal["nonprivate"] = "nonprivate"


@METHODS.register
class NonPrivate(LabelDPMethod):
    Config = NonPrivateConfig

    def train(self, config: NonPrivateConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
        from tasks.labeldp.train import fit, one_hot

        targets = one_hot(split.private_y, split.n_classes)
        return fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx), {}
