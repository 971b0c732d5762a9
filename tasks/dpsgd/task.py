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
from suite.privacy import calibration_floor
from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.dpsgd.claims import CLAIMS

_DP_KEYS = ("epsilon", "delta", "max_grad_norm", "grad_sample_mode", "accountant")
# Examples in each dataset's training split (digits: 1,797 images less the 360 of the stratified 20%
# test split), so that the audit's size rule is checked when the config is read; the run re-checks it
# against the data it loads.
TRAIN_SIZES = {"digits": 1437, "mnist": 60_000, "cifar10": 50_000}
# Targets above this certify nothing a reader would call private, and the noise they calibrate to is
# so small that the numerical accountants take minutes (PLD at sigma 0.05: 7 s; at epsilon 1e6: > 10 min).
MAX_EPSILON = 100.0


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
    def _audit_can_work(self) -> DPSGDConfig:
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

    @model_validator(mode="after")
    def _dpsgd_needs_budget(self) -> DPSGDConfig:
        if self.method != "dpsgd":
            return self
        missing = [k for k in _DP_KEYS if getattr(self, k) is None]
        if missing:
            raise ValueError(f"method dpsgd needs {', '.join(missing)} (got null)")
        floor = calibration_floor(accountant=self.accountant, delta=self.delta)
        if self.epsilon < floor:
            raise ValueError(f"epsilon {self.epsilon:g} is below {floor:.4g}, the smallest target the "
                             f"{self.accountant} accountant can calibrate noise for at delta {self.delta:g}; "
                             "raise epsilon or delta")
        if self.epsilon > MAX_EPSILON:
            raise ValueError(f"epsilon {self.epsilon:g} is above {MAX_EPSILON:g}, the largest target dpsgd "
                             "accepts: larger ones guarantee nothing and take the accountants minutes")
        return self


@register_task("dpsgd")
class DPSGDTask(Task):
    description = "DP-SGD (Opacus) vs non-private training: accuracy, epsilon, and the cost of privacy"
    version = "2"  # 2: epsilon under all three accountants (rdp, prv, pld) and the privacy.sampler tag
    Config = DPSGDConfig
    # Imported once by a sweep's fork server, so that no cell pays for them again.
    preload = ("tasks.dpsgd.train", "torch._dynamo", "torch.utils.flop_counter", "sklearn.datasets",
               "sklearn.model_selection")
    pareto = (("privacy/epsilon", "utility/accuracy"), ("compute/train_s", "utility/accuracy"))
    claims = CLAIMS  # the paper's claims, judged by `suite claims` (tasks/dpsgd/claims.py)
    metrics = {
        "utility/accuracy": Metric("higher", "fraction", "test accuracy"),
        "utility/loss": Metric("lower", "nats", "test cross-entropy"),
        "privacy/epsilon": Metric("lower", "epsilon", "the configured accountant's epsilon for the run's noise, "
                                  "rate and steps (equal to its privacy/epsilon_<accountant>)"),
        "privacy/epsilon_rdp": Metric("none", "epsilon", "Opacus' RDP accountant, same noise, rate and steps"),
        "privacy/epsilon_prv": Metric("none", "epsilon", "Opacus' PRV accountant (upper end of its 0.01 error "
                                      "band), same noise, rate and steps"),
        "privacy/epsilon_pld": Metric("none", "epsilon", "dp_accounting's PLD accountant (pessimistic grid), same "
                                      "noise, rate and steps"),
        "privacy/delta": Metric("none", "delta", "delta at which epsilon is reported"),
        "privacy/noise_multiplier": Metric("none", "sigma", "Gaussian noise std / clipping bound"),
        "privacy/sample_rate": Metric("none", "q", "Poisson sampling rate the accountant used (1 / batches per "
                                      "epoch; never below the rate Opacus' sampler draws with)"),
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

    def sampler(self, config: DPSGDConfig) -> str | None:
        return "poisson" if config.method == "dpsgd" else None  # Opacus' DPDataLoader: Poisson sampling

    def reference(self, config: DPSGDConfig) -> DPSGDConfig | None:
        if config.method == "nonprivate":
            return None
        return DPSGDConfig(**{**config.model_dump(), "method": "nonprivate"})
