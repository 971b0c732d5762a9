"""DP-SGD with Opacus: non-private vs DP-SGD across grad-sample modes and accountants.

Reproduces at small scale the comparisons of "Opacus: User-Friendly Differential Privacy
Library in PyTorch" (Yousefpour et al., 2021): accuracy at several target epsilons, and
the cost of DP-SGD per grad-sample mode (hooks, functorch, ghost clipping) against the
non-private run of the same seed and config.
"""

from __future__ import annotations

from suite.schema import Metric
from suite.task import RunContext, Task, register_task
from tasks.dpsgd.claims import CLAIMS
from tasks.dpsgd.config import METHODS, SGDConfig


@register_task("dpsgd")
class DPSGDTask(Task):
    description = "DP-SGD (Opacus) vs non-private training: accuracy, epsilon, and the cost of privacy"
    version = "3"  # 3: each method's config holds only its keys (nonprivate has no epsilon, ...)
    Config = SGDConfig
    method_registry = METHODS  # tasks/dpsgd/methods/: nonprivate, dpsgd
    # Imported once by a sweep's fork server, so that no cell pays for them again.
    preload = ("tasks.dpsgd.train", "opacus", "torch._dynamo", "torch.utils.flop_counter", "sklearn.datasets",
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

    def run(self, config: SGDConfig, ctx: RunContext) -> dict[str, float]:
        """The family's pipeline (tasks/dpsgd/train.py), with the config's method making training private."""
        from tasks.dpsgd.train import train_and_evaluate

        return train_and_evaluate(config, ctx, self.method_of(config))
