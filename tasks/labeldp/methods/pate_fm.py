"""pate_fm: PATE with semi-supervised teachers and student (Malek et al. 2021, Sec. 3); the
pipeline is in ``tasks.labeldp.pate_fm``, the maths in ``tasks.labeldp.pate``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from suite.config import ApproxDPBudget
from suite.context import RunContext
from tasks.labeldp.config import METHODS, LabelDPConfig, PrivateLabelMethod, RealisableEpsilon

if TYPE_CHECKING:
    from torch import nn

    from tasks.labeldp.train import Split


class PateFMConfig(ApproxDPBudget, RealisableEpsilon, LabelDPConfig):
    method: Literal["pate_fm"] = "pate_fm"
    n_teachers: int = Field(50, ge=2)  # teachers, on disjoint partitions of the private data
    teacher_model: Literal["label_spreading", "cnn"] = "label_spreading"  # semi-supervised graph teachers, or the CNN on its partition
    student_labels: Literal["label_spreading", "pseudo_label"] = "label_spreading"  # how the student labels the unlabeled pool
    spread_neighbors: int = Field(7, ge=1)  # k of the k-NN graph that label spreading propagates over
    teacher_epochs: int = Field(30, ge=1)  # passes over each teacher's partition
    teacher_batch_size: int = Field(16, ge=1)  # minibatch size of the teachers (small partitions)
    sigma_threshold: float = Field(30.0, gt=0)  # std of the threshold test's noise (sigma1)
    sigma_gnmax: float = Field(8.0, gt=0)  # std of the noisy argmax's noise (sigma2)
    threshold: float = Field(40.0, ge=0)  # answer when max votes + noise >= this (T)
    max_queries: int = Field(400, ge=1)  # public examples asked at most (fewer when the budget buys fewer)
    pseudo_label_threshold: float = Field(0.9, gt=0, le=1)  # student confidence to pseudo-label
    pseudo_label_rounds: int = Field(1, ge=0)  # rounds of self-training on the unlabeled pool

    @model_validator(mode="after")
    def _teachers_fit(self) -> PateFMConfig:
        public, private = self.split_sizes()
        if self.n_teachers > private:
            raise ValueError(f"n_teachers={self.n_teachers} exceeds the {private} private examples: every teacher "
                             "needs a non-empty partition")
        if self.spread_neighbors >= public + private:
            raise ValueError(f"spread_neighbors={self.spread_neighbors} must be below the {public + private} "
                             "examples of the label-spreading graph")
        return self


@METHODS.register
class PateFM(PrivateLabelMethod):
    Config = PateFMConfig

    def train(self, config: PateFMConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
        """Teachers' votes, confident-GNMax answers to queries fixed in advance, the student."""
        from tasks.labeldp import pate_fm

        return pate_fm.pate_fm(config, split, ctx)

    def accountant(self, config: PateFMConfig) -> str:
        return "pate-rdp-data-independent"

    def sampler(self, config: PateFMConfig) -> str:
        """Its Gaussian mechanisms are analysed by the three accountants, without subsampling (a fixed
        set of queries); RR, RR-with-prior and ALIBI are exact pure-epsilon mechanisms no accountant analyses."""
        return "none"
