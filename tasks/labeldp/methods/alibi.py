"""alibi: additive Laplace noise on one-hot labels and Bayesian inference (Malek et al. 2021, Sec. 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from suite.config import PureDPBudget
from suite.context import RunContext
from tasks.labeldp.config import METHODS, LabelDPConfig, PrivateLabelMethod, RealisableEpsilon

if TYPE_CHECKING:
    from torch import nn

    from tasks.labeldp.train import Split


class AlibiConfig(PureDPBudget, RealisableEpsilon, LabelDPConfig):
    method: Literal["alibi"] = "alibi"


@METHODS.register
class Alibi(PrivateLabelMethod):
    Config = AlibiConfig

    def train(self, config: AlibiConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
        """Laplace noise once on each one-hot label, then the posterior under a uniform prior as the
        soft training label (the noisy vector itself is never used again). The noise, the posterior
        and the epsilon all read the one scale."""
        import numpy as np

        from tasks.labeldp import mechanisms as mech
        from tasks.labeldp.train import fit, label_accuracy, one_hot, rng_for

        scale = mech.alibi_scale(epsilon=config.epsilon)
        noisy = mech.alibi_noise(one_hot(split.private_y, split.n_classes), scale=scale, rng=rng_for(config, "alibi"))
        epsilon = mech.guaranteed(mech.alibi_epsilon(scale=scale), method="alibi", what="Laplace noise of scale 0")
        targets = mech.alibi_posterior(noisy, np.full(split.n_classes, 1.0 / split.n_classes), scale=scale)
        model = fit(config, split.private_x, targets.astype(np.float32), epochs=config.epochs, ctx=ctx)
        return model, {"privacy/epsilon": epsilon, "privacy/laplace_scale": scale,
                       "utility/training_label_accuracy": label_accuracy(targets, split.private_y)}

    def accountant(self, config: AlibiConfig) -> str:
        return "laplace"
