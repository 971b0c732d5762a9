"""Label differential privacy: randomized response, RR-with-prior, ALIBI and PATE-FM.

Reproduces at small scale "Antipodes of Label Differential Privacy: PATE and ALIBI"
(Malek, Mironov, Prasad, Shilov, Tramer, NeurIPS 2021). Only the labels are private; the
features are public. Every private run reports the label-level epsilon of its mechanism and
a one-run canary audit (mislabels, each planted with probability 1/2) with the epsilon lower
bound it implies. RR and ALIBI are pure epsilon-label-DP; PATE-FM is (epsilon, delta) by
PATE's data-independent RDP bound over a number of queries fixed in advance.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.labeldp.claims import CLAIMS

PRIVATE_METHODS = ("rr", "rr_prior", "alibi", "pate_fm")
_ACCOUNTANTS = {"rr": "rr", "rr_prior": "rr-with-prior", "alibi": "laplace", "pate_fm": "pate-rdp-data-independent"}
# Training-split sizes and classes, to refuse a split that cannot be made before anything runs
# (digits: 1,797 images less the 20% test split of suite.data.digits; checked by a test).
_TRAIN_SIZE = {"digits": 1437, "cifar10": 50_000}
_N_CLASSES = {"digits": 10, "cifar10": 10}
_MODELS_FOR = {"digits": ("digits_cnn",), "cifar10": ("resnet18",)}  # the input shapes each network takes
# RR's flip probabilities are about (k - 1) e^-eps; above eps 20 they fall below 2e-8, where
# sampling with float64 uniforms (steps of 2^-53) drifts from the accounted channel. The grids
# stop at 8; one cap for every method keeps the family's cells comparable.
MAX_EPSILON = 20.0


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
    sigma_threshold: float = Field(30.0, gt=0)  # pate_fm: std of the threshold test's noise (sigma1)
    sigma_gnmax: float = Field(8.0, gt=0)  # pate_fm: std of the noisy argmax's noise (sigma2)
    threshold: float = Field(40.0, ge=0)  # pate_fm: answer when max votes + noise >= this (T)
    max_queries: int = Field(400, ge=1)  # pate_fm: public examples asked at most (fewer when the budget buys fewer)
    pseudo_label_threshold: float = Field(0.9, gt=0, le=1)  # pate_fm: student confidence to pseudo-label
    pseudo_label_rounds: int = Field(1, ge=0)  # pate_fm: rounds of self-training on the unlabeled pool
    audit_canaries: int = Field(80, ge=0)  # one-run audit: private labels, each replaced by a wrong one with p=1/2
    audit_guesses: int | None = Field(None, ge=2)  # audit guesses fixed in advance (half each way); default half the canaries
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available

    model_config = ConfigDict(allow_inf_nan=False)  # lr=inf or sigma_gnmax=nan would only fail inside a run

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
        if self.epsilon is not None and self.epsilon > MAX_EPSILON:
            raise ValueError(f"epsilon={self.epsilon} is above {MAX_EPSILON:g}, the largest label epsilon whose RR "
                             "flip probabilities float64 sampling still realises")
        return self

    @model_validator(mode="after")
    def _data_fits(self) -> LabelDPConfig:
        """Every size the run will carve out exists: refused here, not after minutes of training."""
        if self.model not in _MODELS_FOR[self.dataset]:
            raise ValueError(f"model={self.model} does not take {self.dataset} inputs; allowed with {self.dataset}: "
                             f"{', '.join(_MODELS_FOR[self.dataset])}")
        if self.augment and self.dataset != "cifar10":
            raise ValueError("augment=true is for cifar10 only (a flipped digit can be another digit)")
        available, k = _TRAIN_SIZE[self.dataset], _N_CLASSES[self.dataset]
        n = self.train_subset or available
        if n > available:
            raise ValueError(f"train_subset={n} exceeds the {available} training examples of {self.dataset}")
        public = math.ceil(self.public_fraction * n)  # as sklearn's train_test_split rounds a fraction
        private = n - public
        if min(public, private) < k:
            raise ValueError(f"train_subset={n} with public_fraction={self.public_fraction} gives {public} public and "
                             f"{private} private examples; each side needs at least {k} (one per class): raise "
                             f"train_subset or move public_fraction toward 0.5")
        self._audit_fits(private)
        self._method_fits(n, private)
        return self

    def _audit_fits(self, private: int) -> None:
        if self.audit_canaries == 1 or self.audit_canaries > private:
            raise ValueError(f"audit_canaries={self.audit_canaries}: the audit needs 0 (none) or 2 to {private} "
                             f"canaries (distinct private examples)")
        if self.audit_guesses is not None and self.audit_guesses > self.audit_canaries:
            raise ValueError(f"audit_guesses={self.audit_guesses} cannot exceed audit_canaries={self.audit_canaries}")

    def _method_fits(self, n: int, private: int) -> None:
        if self.method == "rr_prior" and self.stages > private:
            raise ValueError(f"stages={self.stages} exceeds the {private} private labels (each stage noises some)")
        if self.method != "pate_fm":
            return
        if self.n_teachers > private:
            raise ValueError(f"n_teachers={self.n_teachers} exceeds the {private} private examples: every teacher "
                             "needs a non-empty partition")
        if self.spread_neighbors >= n:
            raise ValueError(f"spread_neighbors={self.spread_neighbors} must be below the {n} examples of the "
                             "label-spreading graph")


@register_task("labeldp")
class LabelDPTask(Task):
    description = "label-DP training: RR, RR-with-prior, ALIBI, PATE-FM vs non-private; accuracy vs label epsilon"
    # 2: PATE-FM's guarantee is data-independent over a query count fixed in advance; RR's and
    # RR-with-prior's epsilon come from the channels sampled; the audit is the one-run bound.
    version = "2"
    Config = LabelDPConfig
    # Imported once by a sweep's fork server, so that no cell pays for them again. torch._dynamo
    # (sympy, triton) is what the first optimizer step would import: about 2 s of every cell.
    preload = ("tasks.labeldp.train", "tasks.labeldp.methods", "torch._dynamo", "scipy.stats", "sklearn.datasets", "sklearn.semi_supervised",
               "sklearn.model_selection", "opacus.accountants", "dp_accounting.pld.pld_privacy_accountant")
    notes = (
        "PATE-FM's privacy/epsilon is the data-independent RDP bound (a composition of Gaussian mechanisms) "
        "over a number of queries fixed from the config before any vote is seen; privacy/epsilon_data_dependent "
        "is the data-dependent bound of the same answers, not released through smooth sensitivity, and never ranked.",
        "PATE-FM's threshold and noise scales follow Papernot et al. 2018's MNIST recipe scaled to 50 teachers "
        "(T, sigma1, sigma2 = 0.8, 0.6, 0.16 x teachers), chosen without the private votes; the teacher count and "
        "the label-spreading learners were chosen while developing on these digits, which is not accounted for.",
        "At label epsilon 2 and below, the quick tier's data-independent budget buys PATE-FM a handful of queries "
        "or none (privacy/queries_asked): too few answers to train a student. The cells are reported as they are.",
        "The audit is the one-run bound of Steinke, Nasr and Jagielski 2023: a 95% lower bound on epsilon; "
        "on the quick tier it catches gross bugs, not subtle ones.",
    )
    pareto = (("privacy/epsilon", "utility/accuracy"),)
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/labeldp/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy of the released model"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy of the released model"),
        "utility/training_label_accuracy": Metric("higher", "fraction",
                                                  "mean probability the training targets put on the true label"),
        "privacy/epsilon": Metric("lower", "epsilon", "label-level epsilon of the mechanism that ran (pate_fm: "
                                  "data-independent RDP bound)"),
        "privacy/delta": Metric("none", "delta", "delta of pate_fm's (eps, delta) guarantee"),
        "privacy/epsilon_rdp": Metric("lower", "epsilon", "pate_fm: the same queries under Opacus' RDP accountant"),
        "privacy/epsilon_prv": Metric("lower", "epsilon", "pate_fm: the same queries under Opacus' PRV accountant"),
        "privacy/epsilon_pld": Metric("lower", "epsilon", "pate_fm: the same queries under dp-accounting's PLD"),
        "privacy/epsilon_data_dependent": Metric("none", "epsilon", "pate_fm: data-dependent RDP bound of the same "
                                                 "answers; a function of the private votes, never ranked"),
        "privacy/rr_flip_probability": Metric("none", "probability", "rr: P[label replaced] of k-ary RR"),
        "privacy/rr_prior_mean_k": Metric("none", "classes", "rr_prior: mean size of the top-k answer set"),
        "privacy/laplace_scale": Metric("none", "b", "alibi: Laplace scale on each one-hot coordinate"),
        "privacy/sigma_threshold": Metric("none", "votes", "pate_fm: threshold test noise std (sigma1)"),
        "privacy/sigma_gnmax": Metric("none", "votes", "pate_fm: noisy argmax noise std (sigma2)"),
        "privacy/threshold": Metric("none", "votes", "pate_fm: threshold T"),
        "privacy/queries_asked": Metric("none", "queries", "pate_fm: public examples submitted to the teachers "
                                        "(fixed by the config before any vote)"),
        "privacy/queries_answered": Metric("none", "queries", "pate_fm: queries that passed the threshold"),
        "privacy/audit_epsilon_lb": Metric("none", "epsilon",
                                           "one-run audit: epsilon lower bound at 95% confidence (Steinke et al. 2023)"),
        "privacy/audit_canaries": Metric("none", "count", "one-run audit: canaries, each mislabeled with probability 1/2"),
        "privacy/audit_guesses": Metric("none", "count", "one-run audit: guesses made (the rest abstain)"),
        "privacy/audit_correct": Metric("none", "count", "one-run audit: correct guesses"),
        "privacy/canary_planted_rate": Metric("lower", "fraction", "mislabeled canaries predicted as their wrong label"),
        "privacy/canary_control_rate": Metric("none", "fraction", "canaries left unchanged predicted as the wrong label"),
        "utility/teacher_accuracy": Metric("higher", "fraction", "pate_fm: mean test accuracy of one teacher"),
        "utility/answer_accuracy": Metric("higher", "fraction", "pate_fm: answered queries whose label is right"),
        "compute/params": Metric("lower", "count", "parameters of the released model"),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers of the released model"),
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

    def sampler(self, config: LabelDPConfig) -> str | None:
        """PATE-FM's Gaussian mechanisms are analysed by the three accountants, without subsampling (a fixed
        set of queries); RR, RR-with-prior and ALIBI are exact pure-epsilon mechanisms no accountant analyses."""
        return "none" if config.method == "pate_fm" else None
