"""rr_prior: Ghazi et al.'s multi-stage training with RR-with-prior ("Deep Learning with Label
Differential Privacy", NeurIPS 2021)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from suite.config import PureDPBudget
from suite.context import RunContext
from tasks.labeldp.config import METHODS, LabelDPConfig, PrivateLabelMethod, RealisableEpsilon

if TYPE_CHECKING:
    from torch import nn

    from tasks.labeldp.train import Split


class RRPriorConfig(PureDPBudget, RealisableEpsilon, LabelDPConfig):
    method: Literal["rr_prior"] = "rr_prior"
    stages: int = Field(2, ge=1)  # stage s's prior comes from a model trained on the noisy labels of stages < s

    @model_validator(mode="after")
    def _stages_fit(self) -> RRPriorConfig:
        private = self.split_sizes()[1]
        if self.stages > private:
            raise ValueError(f"stages={self.stages} exceeds the {private} private labels (each stage noises some)")
        return self


@METHODS.register
class RRPrior(PrivateLabelMethod):
    Config = RRPriorConfig

    def train(self, config: RRPriorConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
        """Stage s's labels are noised with RR-with-prior, the prior being the prediction of a model
        trained on the noisy labels of stages < s only (a uniform prior for stage 0, where
        RR-with-prior is plain RR). The label being noised never reaches its own prior. Epsilon:
        the worst of the channels every stage sampled from (parallel composition over labels;
        the stages are adaptive, which parallel composition allows)."""
        import numpy as np

        from tasks.labeldp import mechanisms as mech
        from tasks.labeldp.train import fit, label_accuracy, one_hot, predict_proba, rng_for

        rng = rng_for(config, "rr_prior")
        order = rng.permutation(len(split.private_y))
        chunks = np.array_split(order, config.stages)
        noisy = np.full(len(split.private_y), -1)
        epsilons, sizes = [], []
        for s, chunk in enumerate(chunks):
            seen = np.concatenate(chunks[:s]) if s else np.zeros(0, dtype=int)
            if s == 0:
                priors = np.full((len(chunk), split.n_classes), 1.0 / split.n_classes)
            else:
                stage_model = fit(config, split.private_x[seen], one_hot(noisy[seen], split.n_classes),
                                  epochs=config.epochs, seed_offset=s, ctx=ctx, desc=f"stage {s}")
                priors = predict_proba(stage_model, split.private_x[chunk])
            channels = mech.rr_prior_channels(priors, epsilon=config.epsilon)
            noisy[chunk] = mech.sample_channel(split.private_y[chunk], channels, rng=rng)
            epsilons.append(mech.guaranteed(mech.channel_epsilon(channels), method="rr_prior",
                                            what=f"RR-with-prior, stage {s}"))
            sizes.append(mech.answer_set_sizes(channels))
        targets = one_hot(noisy, split.n_classes)
        model = fit(config, split.private_x, targets, epochs=config.epochs, ctx=ctx)
        return model, {"privacy/epsilon": max(epsilons), "privacy/rr_prior_mean_k": float(np.concatenate(sizes).mean()),
                       "utility/training_label_accuracy": label_accuracy(targets, split.private_y)}

    def accountant(self, config: RRPriorConfig) -> str:
        return "rr-with-prior"
