"""The labeldp family's base config, its method registry and the base class of its methods.

Light (pydantic and the suite core): imported by the task (``task.py``), the training modules
(``train.py``, ``pate_fm.py``) and every method (``methods/*.py``) alike. The keys here are the
ones every method reads: the data and its split, the network and its training, the audit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from suite.config import BaseConfig, DataLocation, DeviceChoice
from suite.context import RunContext
from suite.method import Method, MethodRegistry

if TYPE_CHECKING:
    from torch import nn

    from tasks.labeldp.train import Split

# Training-split sizes and classes, to refuse a split that cannot be made before anything runs
# (digits: 1,797 images less the 20% test split of suite.data.digits; checked by a test).
TRAIN_SIZE = {"digits": 1437, "cifar10": 50_000}
N_CLASSES = {"digits": 10, "cifar10": 10}
_MODELS_FOR = {"digits": ("digits_cnn",), "cifar10": ("resnet18",)}  # the input shapes each network takes
# RR's flip probabilities are about (k - 1) e^-eps; above eps 20 they fall below 2e-8, where
# sampling with float64 uniforms (steps of 2^-53) drifts from the accounted channel. The grids
# stop at 8; one cap for every private method keeps the family's cells comparable.
MAX_EPSILON = 20.0


class LabelDPConfig(DataLocation, DeviceChoice, BaseConfig):
    dataset: Literal["digits", "cifar10"] = "digits"  # digits is offline; cifar10 reads data_dir
    split_seed: int = Field(0, ge=0)  # fixes the public / private / test split, independent of seed
    train_subset: int | None = Field(None, gt=0)  # use only the first N examples of the training split
    public_fraction: float = Field(0.3, gt=0, lt=1)  # share of the training split that is public and unlabeled
    model: Literal["digits_cnn", "resnet18"] = "digits_cnn"  # the network every model of the run uses
    epochs: int = Field(30, ge=1)  # passes over the training set of each final model (student for pate_fm)
    batch_size: int = Field(64, ge=1)  # minibatch size
    lr: float = Field(0.01, gt=0)  # learning rate
    optimizer: Literal["adam", "sgd"] = "adam"  # sgd: momentum 0.9, nesterov, cosine schedule
    weight_decay: float = Field(0.0, ge=0)  # L2 penalty
    augment: bool = False  # random crop and flip (CIFAR-10 only)
    audit_canaries: int = Field(80, ge=0)  # one-run audit: private labels, each replaced by a wrong one with p=1/2
    audit_guesses: int | None = Field(None, ge=2)  # audit guesses fixed in advance (half each way); default half the canaries

    @model_validator(mode="after")
    def _data_fits(self) -> LabelDPConfig:
        """Every size the run will carve out exists: refused here, not after minutes of training."""
        if self.model not in _MODELS_FOR[self.dataset]:
            raise ValueError(f"model={self.model} does not take {self.dataset} inputs; allowed with {self.dataset}: "
                             f"{', '.join(_MODELS_FOR[self.dataset])}")
        if self.augment and self.dataset != "cifar10":
            raise ValueError("augment=true is for cifar10 only (a flipped digit can be another digit)")
        available, k = TRAIN_SIZE[self.dataset], N_CLASSES[self.dataset]
        if self.train_subset is not None and self.train_subset > available:
            raise ValueError(f"train_subset={self.train_subset} exceeds the {available} training examples of "
                             f"{self.dataset}")
        public, private = self.split_sizes()
        if min(public, private) < k:
            raise ValueError(f"train_subset={public + private} with public_fraction={self.public_fraction} gives "
                             f"{public} public and {private} private examples; each side needs at least {k} (one "
                             f"per class): raise train_subset or move public_fraction toward 0.5")
        if self.audit_canaries == 1 or self.audit_canaries > private:
            raise ValueError(f"audit_canaries={self.audit_canaries}: the audit needs 0 (none) or 2 to {private} "
                             f"canaries (distinct private examples)")
        if self.audit_guesses is not None and self.audit_guesses > self.audit_canaries:
            raise ValueError(f"audit_guesses={self.audit_guesses} cannot exceed audit_canaries={self.audit_canaries}")
        return self

    def split_sizes(self) -> tuple[int, int]:
        """(public, private) examples of the training split the run uses."""
        n = self.train_subset or TRAIN_SIZE[self.dataset]
        public = math.ceil(self.public_fraction * n)  # as sklearn's train_test_split rounds a fraction
        return public, n - public


class RealisableEpsilon(BaseModel):
    """Mixin of every private labeldp method, after its budget mixin: epsilon at most MAX_EPSILON."""

    @field_validator("epsilon", check_fields=False)
    @classmethod
    def _realisable(cls, epsilon: float) -> float:
        if epsilon > MAX_EPSILON:
            raise ValueError(f"epsilon={epsilon:g} is above {MAX_EPSILON:g}, the largest label epsilon whose RR "
                             "flip probabilities float64 sampling still realises")
        return epsilon


METHODS = MethodRegistry(LabelDPConfig, package="tasks.labeldp.methods")


class LabelDPMethod(Method, ABC):
    """A labeldp method varies one step of the family's run (``LabelDPTask.run``): how the private
    labels become the released model. The split, the evaluation and the audit are shared."""

    @abstractmethod
    def train(self, config: LabelDPConfig, split: Split, ctx: RunContext) -> tuple[nn.Module, dict[str, float]]:
        """The released model trained on ``split`` and the method's metrics (privacy metrics included)."""


class PrivateLabelMethod(LabelDPMethod):
    """A method whose guarantee protects each private label."""

    def privacy_unit(self, config: LabelDPConfig) -> str:
        return "label"
