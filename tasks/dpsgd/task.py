"""DP-SGD with Opacus: non-private vs DP-SGD across grad-sample modes and accountants.

Reproduces at small scale the comparisons of "Opacus: User-Friendly Differential Privacy
Library in PyTorch" (Yousefpour et al., 2021): accuracy at several target epsilons, and
the cost of DP-SGD per grad-sample mode (hooks, functorch, ghost clipping) against the
non-private run of the same seed and config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.config import TaskConfig
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.dpsgd.claims import CLAIMS

_DP_KEYS = ("epsilon", "delta", "max_grad_norm", "grad_sample_mode", "accountant")


class DPSGDConfig(TaskConfig):
    method: Literal["nonprivate", "dpsgd"] = "dpsgd"  # non-private SGD, or DP-SGD through Opacus
    dataset: Literal["digits", "mnist", "cifar10"] = "digits"  # digits is offline; the others read data_dir
    data_dir: str | None = None  # local torchvision data for mnist/cifar10 (default: $SUITE_DATA)
    download: bool = False  # let torchvision download mnist/cifar10 when the network allows
    train_subset: int | None = Field(None, gt=0)  # use only the first N training examples
    split_seed: int = Field(0, ge=0)  # fixed train/test split of digits, independent of seed
    epochs: int = Field(15, ge=1)  # passes over the training data (expected, under Poisson sampling)
    batch_size: int = Field(64, ge=1)  # expected logical batch size; sample rate = batch_size / N
    lr: float = Field(0.5, gt=0)  # SGD learning rate
    momentum: float = Field(0.0, ge=0, lt=1)  # SGD momentum
    max_grad_norm: float | None = Field(1.0, gt=0)  # per-sample clipping bound C (dpsgd only)
    grad_sample_mode: Literal["hooks", "functorch", "ghost"] | None = "hooks"  # how Opacus gets per-sample norms
    accountant: Literal["rdp", "prv"] | None = "rdp"  # accountant for calibration and the reported epsilon
    audit_canaries: int = Field(0, ge=0)  # one-run audit: crafted canaries, each trained on with probability 1/2
    audit_guesses: int | None = Field(None, ge=2)  # guesses (half IN, half OUT) of the audit; default half the canaries
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available

    @model_validator(mode="before")
    @classmethod
    def _privacy_keys_follow_method(cls, values: Any) -> Any:
        """Non-private runs have no privacy keys: reset them so equal computations hash equally."""
        if isinstance(values, dict) and values.get("method") == "nonprivate":
            values = {**values, **{k: None for k in _DP_KEYS}}
        return values

    @model_validator(mode="after")
    def _guesses_fit_canaries(self) -> DPSGDConfig:
        if self.audit_guesses is not None and self.audit_guesses > self.audit_canaries:
            raise ValueError(f"audit_guesses ({self.audit_guesses}) cannot exceed audit_canaries "
                             f"({self.audit_canaries})")
        return self

    @model_validator(mode="after")
    def _dpsgd_needs_budget(self) -> DPSGDConfig:
        if self.method == "dpsgd":
            missing = [k for k in _DP_KEYS if getattr(self, k) is None]
            if missing:
                raise ValueError(f"method dpsgd needs {', '.join(missing)} (got null)")
        return self


@register_task("dpsgd")
class DPSGDTask(Task):
    description = "DP-SGD (Opacus) vs non-private training: accuracy, epsilon, and the cost of privacy"
    version = "1"
    Config = DPSGDConfig
    # Imported once by a sweep's fork server, so that no cell pays for them again.
    preload = ("tasks.dpsgd.train", "torch._dynamo", "torch.utils.flop_counter", "sklearn.datasets",
               "sklearn.model_selection")
    pareto = (("privacy/epsilon", "utility/accuracy"), ("compute/train_s", "utility/accuracy"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/dpsgd/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy"),
        "privacy/epsilon": Metric("lower", "epsilon", "accountant's epsilon for the run's noise, rate and steps"),
        "privacy/delta": Metric("none", "delta", "delta at which epsilon is reported"),
        "privacy/noise_multiplier": Metric("none", "sigma", "Gaussian noise std / clipping bound"),
        "privacy/sample_rate": Metric("none", "q", "Poisson sampling rate"),
        "privacy/steps": Metric("none", "steps", "optimizer steps taken"),
        "privacy/max_grad_norm": Metric("none", "C", "per-sample clipping bound"),
        "privacy/audit_epsilon_lb": Metric("none", "epsilon",
                                           "one-run audit: epsilon lower bound at 95% confidence (Steinke et al. 2023)"),
        "privacy/audit_canaries": Metric("none", "count", "one-run audit: canaries, each trained on with probability 1/2"),
        "privacy/audit_guesses": Metric("none", "count", "one-run audit: membership guesses made (the rest abstain)"),
        "privacy/audit_correct": Metric("none", "count", "one-run audit: correct membership guesses"),
        "compute/train_flops": Metric("lower", "FLOP", "forward+backward FLOPs over all training steps"),
        "compute/inference_flops": Metric("lower", "FLOP", "forward FLOPs of one example"),
        "compute/params": Metric("lower", "count", "trainable parameters"),
        "compute/model_bytes": Metric("lower", "bytes", "parameters and buffers"),
        "compute/throughput": Metric("higher", "samples/s", "training examples processed per second"),
        "compute/slowdown": Metric("lower", "x", "train time / train time of the non-private run, same seed"),
    }

    def run(self, config: DPSGDConfig, ctx: RunContext) -> dict[str, float]:
        from tasks.dpsgd.train import train_and_evaluate

        return train_and_evaluate(config, ctx)

    def privacy_unit(self, config: DPSGDConfig) -> str:
        return "example" if config.method == "dpsgd" else "none"

    def accountant(self, config: DPSGDConfig) -> str:
        return config.accountant or "none"

    def reference(self, config: DPSGDConfig) -> DPSGDConfig | None:
        if config.method == "nonprivate":
            return None
        return DPSGDConfig(**{**config.model_dump(), "method": "nonprivate"})
