"""rr: k-ary randomized response once on every private label (Warner 1965; Malek et al. 2021's baseline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from suite.config import PureDPBudget
from suite.context import RunContext
from tasks.labeldp.config import METHODS, LabelDPConfig, PrivateLabelMethod, RealisableEpsilon

if TYPE_CHECKING:
    from torch import nn

    from tasks.labeldp.train import Split


class RRConfig(PureDPBudget, RealisableEpsilon, LabelDPConfig):  # mixins first: their keys are listed last
    method: Literal["rr"] = "rr"


@METHODS.register
class RR(PrivateLabelMethod):
    Config = RRConfig

    def train(self, config: RRConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
        """Epsilon from the channel the labels were sampled from, not from the target."""
        import numpy as np

        from tasks.labeldp import mechanisms as mech
        from tasks.labeldp.train import fit, label_accuracy, one_hot, rng_for

        channel = mech.rr_channel(epsilon=config.epsilon, k=split.n_classes)
        noisy = mech.sample_channel(split.private_y, channel, rng=rng_for(config, "rr"))
        epsilon = mech.guaranteed(mech.channel_epsilon(channel), method="rr", what="randomized response")
        targets = one_hot(noisy, split.n_classes)
        model = fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx)
        return model, {"privacy/epsilon": epsilon, "privacy/rr_flip_probability": 1.0 - float(np.diag(channel).mean()),
                       "utility/training_label_accuracy": label_accuracy(targets, split.private_y)}

    def accountant(self, config: RRConfig) -> str:
        return "rr"
