"""Label differential privacy: randomized response, RR-with-prior, ALIBI and PATE-FM.

Reproduces at small scale "Antipodes of Label Differential Privacy: PATE and ALIBI"
(Malek, Mironov, Prasad, Shilov, Tramer, NeurIPS 2021). Only the labels are private; the
features are public. Every private run reports the label-level epsilon of its mechanism and
a canary audit (planted mislabels) with the epsilon lower bound it implies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.labeldp.claims import CLAIMS

PRIVATE_METHODS = ("rr", "rr_prior", "alibi", "pate_fm")
_ACCOUNTANTS = {"rr": "rr", "rr_prior": "rr-with-prior", "alibi": "laplace", "pate_fm": "pate-rdp-data-dependent"}


class LabelDPConfig(TaskConfig):
    method: Literal["nonprivate", "rr", "rr_prior", "alibi", "pate_fm"] = "alibi"  # how training labels are privatized
    dataset: Literal["digits", "cifar10"] = "digits"  # digits is offline; cifar10 reads data_dir
    data_dir: str | None = None  # local torchvision data for cifar10 (default: $SUITE_DATA)
    download: bool = False  # let torchvision download cifar10 when the network allows
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
    stages: int = Field(2, ge=1)  # rr_prior: stages; stage s's prior comes from a model of stages < s
    n_teachers: int = Field(50, ge=2)  # pate_fm: teachers, on disjoint partitions of the private data
    teacher_model: Literal["label_spreading", "cnn"] = "label_spreading"  # pate_fm: semi-supervised graph teachers, or the CNN on its partition
    student_labels: Literal["label_spreading", "pseudo_label"] = "label_spreading"  # pate_fm: how the student labels the unlabeled pool
    spread_neighbors: int = Field(7, ge=1)  # pate_fm: k of the k-NN graph that label spreading propagates over
    teacher_epochs: int = Field(30, ge=1)  # pate_fm: passes over each teacher's partition
    teacher_batch_size: int = Field(16, ge=1)  # pate_fm: minibatch size of the teachers (small partitions)
    sigma_threshold: float = Field(20.0, gt=0)  # pate_fm: std of the threshold test's noise (sigma1)
    sigma_gnmax: float = Field(8.0, gt=0)  # pate_fm: std of the noisy argmax's noise (sigma2)
    threshold: float = Field(30.0, ge=0)  # pate_fm: answer when max votes + noise >= this (T)
    max_queries: int = Field(400, ge=1)  # pate_fm: public examples asked at most (stops earlier at the budget)
    pseudo_label_threshold: float = Field(0.9, gt=0, le=1)  # pate_fm: student confidence to pseudo-label
    pseudo_label_rounds: int = Field(1, ge=0)  # pate_fm: rounds of self-training on the unlabeled pool
    n_canaries: int = Field(40, ge=0)  # canaries planted (and as many control ones) among private labels
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available

    @model_validator(mode="before")
    @classmethod
    def _privacy_keys_follow_method(cls, values: Any) -> Any:
        """Keys a method does not use are reset, so that equal computations hash equally."""
        if not isinstance(values, dict):
            return values
        method = values.get("method", "alibi")
        if method == "nonprivate":
            values = {**values, "epsilon": None}
        if method != "pate_fm":
            values = {**values, "delta": None}  # RR and ALIBI are pure epsilon-DP
        return values

    @model_validator(mode="after")
    def _private_methods_need_budget(self) -> LabelDPConfig:
        if self.method in PRIVATE_METHODS and self.epsilon is None:
            raise ValueError(f"method {self.method} needs epsilon (got null)")
        if self.method == "pate_fm" and self.delta is None:
            raise ValueError("method pate_fm needs delta (got null)")
        return self


@register_task("labeldp")
class LabelDPTask(Task):
    description = "label-DP training: RR, RR-with-prior, ALIBI, PATE-FM vs non-private; accuracy vs label epsilon"
    version = "1"
    Config = LabelDPConfig
    # Imported once by a sweep's fork server, so that no cell pays for them again. torch._dynamo
    # (sympy, triton) is what the first optimizer step would import: about 2 s of every cell.
    preload = ("tasks.labeldp.train", "tasks.labeldp.methods", "torch._dynamo", "scipy.stats", "sklearn.datasets", "sklearn.semi_supervised",
               "sklearn.model_selection")
    pareto = (("privacy/epsilon", "utility/accuracy"),)
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/labeldp/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the released model"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the released model"),
        "utility/training_label_accuracy": Metric("higher", "fraction",
                                                  "mean probability the training targets put on the true label"),
        "privacy/epsilon": Metric("lower", "epsilon", "label-level epsilon of the run's mechanism"),
        "privacy/delta": Metric("none", "delta", "delta of pate_fm's (eps, delta) guarantee"),
        "privacy/rr_flip_probability": Metric("none", "probability", "rr: P[label replaced] of k-ary RR"),
        "privacy/rr_prior_mean_k": Metric("none", "classes", "rr_prior: mean size of the top-k answer set"),
        "privacy/laplace_scale": Metric("none", "b", "alibi: Laplace scale on each one-hot coordinate"),
        "privacy/sigma_threshold": Metric("none", "votes", "pate_fm: threshold test noise std (sigma1)"),
        "privacy/sigma_gnmax": Metric("none", "votes", "pate_fm: noisy argmax noise std (sigma2)"),
        "privacy/threshold": Metric("none", "votes", "pate_fm: threshold T"),
        "privacy/queries_asked": Metric("none", "queries", "pate_fm: public examples submitted to the teachers"),
        "privacy/queries_answered": Metric("none", "queries", "pate_fm: queries that passed the threshold"),
        "privacy/epsilon_data_independent": Metric("lower", "epsilon",
                                                   "pate_fm: epsilon of the same queries by the data-independent bound"),
        "privacy/audit_epsilon_lb": Metric("none", "epsilon", "epsilon lower bound implied by the canary attack (95%)"),
        "privacy/canary_planted_rate": Metric("lower", "fraction", "planted canaries predicted as their planted label"),
        "privacy/canary_control_rate": Metric("none", "fraction", "control canaries predicted as the planted label"),
        "utility/teacher_accuracy": Metric("higher", "fraction", "pate_fm: mean test accuracy of one teacher"),
        "utility/answer_accuracy": Metric("higher", "fraction", "pate_fm: answered queries whose label is right"),
        "compute/params": Metric("lower", "count", "trainable parameters of the released model"),
        "compute/teachers_cached": Metric("none", "flag",
                                          "pate_fm: 1 when the teacher votes were read from the on-disk cache "
                                          "(this run's timings then exclude training the teachers)"),
    }

    def run(self, config: LabelDPConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.labeldp.train import train_and_evaluate

        return train_and_evaluate(config, ctx)

    def privacy_unit(self, config: LabelDPConfig) -> str:
        return "label" if config.method in PRIVATE_METHODS else "none"

    def accountant(self, config: LabelDPConfig) -> str:
        return _ACCOUNTANTS.get(config.method, "none")
