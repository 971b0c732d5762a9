"""The dpsgd family's config and methods registry: the keys every method reads (data, SGD, audit).

Imported by the task (tasks/dpsgd/task.py), by the training pipeline (tasks/dpsgd/train.py) and by
each method (tasks/dpsgd/methods/*.py) alike. A method varies two steps of the shared pipeline:
how the model, optimizer and loader are made private (:meth:`SGDMethod.privatize`) and which
privacy metrics the run reports (:meth:`SGDMethod.privacy`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from suite.config import BaseConfig, DataLocation, DeviceChoice
from suite.method import Method, MethodRegistry

if TYPE_CHECKING:
    from tasks.dpsgd.train import Setup

# Examples in each dataset's training split (digits: 1,797 images less the 360 of the stratified 20%
# test split), so that the audit's size rule is checked when the config is read; the run re-checks it
# against the data it loads.
TRAIN_SIZES = {"digits": 1437, "mnist": 60_000, "cifar10": 50_000}


class SGDConfig(DataLocation, DeviceChoice, BaseConfig):  # mixins first: their keys are listed last
    dataset: Literal["digits", "mnist", "cifar10"] = "digits"  # digits is offline; the others read data_dir
    train_subset: int | None = Field(None, gt=0)  # use only the first N training examples
    split_seed: int = Field(0, ge=0)  # fixed train/test split of digits, independent of seed
    epochs: int = Field(15, ge=1)  # passes over the training data (expected, under Poisson sampling)
    batch_size: int = Field(64, ge=1)  # expected logical batch size; sample rate = batch_size / N
    lr: float = Field(0.5, gt=0)  # SGD learning rate
    momentum: float = Field(0.0, ge=0, lt=1)  # SGD momentum
    audit_canaries: int = Field(0, ge=0)  # one-run audit: crafted canaries, each trained on with probability 1/2
    audit_guesses: int | None = Field(None, ge=2)  # guesses (half IN, half OUT) of the audit; default half the canaries

    @model_validator(mode="after")
    def _audit_can_work(self) -> SGDConfig:
        """The audit guesses IN on some canaries and OUT on as many others, all drawn from the training set."""
        canaries, guesses = self.audit_canaries, self.audit_guesses
        if canaries == 1:
            raise ValueError("audit_canaries must be 0 (no audit) or at least 2: the audit guesses IN on one "
                             "canary and OUT on another")
        if guesses is not None and guesses > canaries:
            raise ValueError(f"audit_guesses ({guesses}) cannot exceed audit_canaries ({canaries})")
        n_train = min(self.train_subset or TRAIN_SIZES[self.dataset], TRAIN_SIZES[self.dataset])
        if canaries > n_train // 2:
            raise ValueError(f"audit_canaries ({canaries}) can be at most half the {n_train} training examples of "
                             f"{self.dataset} (train_subset={self.train_subset}): the canaries are drawn from them")
        return self


METHODS = MethodRegistry(SGDConfig, package="tasks.dpsgd.methods")


class SGDMethod(Method, ABC):
    """A dpsgd method: the private part of SGD training; data, training loop, evaluation and audit are shared."""

    @abstractmethod
    def privatize(self, config: Any, setup: Setup) -> Setup:
        """The model, optimizer, loader and loss the run trains with, given the plain ones."""

    @abstractmethod
    def privacy(self, config: Any, setup: Setup, *, steps: int) -> dict[str, float]:
        """The run's privacy metrics after ``steps`` optimizer steps (none for a non-private method)."""

    @abstractmethod
    def audit_delta(self, config: Any) -> float:
        """The delta at which the one-run audit states its epsilon lower bound."""
