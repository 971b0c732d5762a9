"""dpsgd: DP-SGD through Opacus, noise calibrated to a target (epsilon, delta) with Poisson sampling.

Opacus and torch are imported inside the steps that use them: the registry imports this module
whenever the family's methods are listed.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from suite.config import ApproxDPBudget
from suite.privacy import EPSILON_METRICS, all_epsilons, calibration_floor
from tasks.dpsgd.config import METHODS, SGDConfig, SGDMethod

if TYPE_CHECKING:
    from tasks.dpsgd.train import Setup

# Targets above this certify nothing a reader would call private, and the noise they calibrate to is
# so small that the numerical accountants take minutes (PLD at sigma 0.05: 7 s; at epsilon 1e6: > 10 min).
MAX_EPSILON = 100.0


class DPSGDConfig(ApproxDPBudget, SGDConfig):  # mixins first: their keys are listed last
    method: Literal["dpsgd"] = "dpsgd"
    max_grad_norm: float = Field(1.0, gt=0)  # per-sample clipping bound C
    grad_sample_mode: Literal["hooks", "functorch", "ghost"] = "hooks"  # how Opacus gets per-sample norms
    accountant: Literal["rdp", "prv"] = "rdp"  # accountant for calibration and the reported epsilon

    @model_validator(mode="after")
    def _budget_can_be_calibrated(self) -> DPSGDConfig:
        """Refuse, when the config is read, a target the accountant cannot calibrate noise for in reasonable time."""
        floor = calibration_floor(accountant=self.accountant, delta=self.delta)
        if self.epsilon < floor:
            raise ValueError(f"epsilon {self.epsilon:g} is below {floor:.4g}, the smallest target the "
                             f"{self.accountant} accountant can calibrate noise for at delta {self.delta:g}; "
                             "raise epsilon or delta")
        if self.epsilon > MAX_EPSILON:
            raise ValueError(f"epsilon {self.epsilon:g} is above {MAX_EPSILON:g}, the largest target dpsgd "
                             "accepts: larger ones guarantee nothing and take the accountants minutes")
        return self


@METHODS.register
class DPSGD(SGDMethod):
    Config = DPSGDConfig

    def privatize(self, config: DPSGDConfig, setup: Setup) -> Setup:
        """Opacus' PrivacyEngine picks the noise multiplier that reaches the target epsilon after ``epochs``."""
        import torch
        from opacus import PrivacyEngine

        from tasks.dpsgd.train import Setup

        engine = PrivacyEngine(accountant=config.accountant)
        with warnings.catch_warnings():
            # The noise calibration's binary search probes huge noise levels, whose optimal RDP
            # order is the largest; the final epsilon is computed (and may warn) in ``privacy``.
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            made = engine.make_private_with_epsilon(
                module=setup.model, optimizer=setup.optimizer, data_loader=setup.loader, criterion=setup.criterion,
                target_epsilon=config.epsilon, target_delta=config.delta, epochs=config.epochs,
                max_grad_norm=config.max_grad_norm, poisson_sampling=True, grad_sample_mode=config.grad_sample_mode,
                noise_generator=torch.Generator().manual_seed(config.seed + 1),
            )
        if config.grad_sample_mode == "ghost":
            model, optimizer, criterion, loader = made  # ghost clipping wraps the loss for its double backward
        else:
            (model, optimizer, loader), criterion = made, setup.criterion
        return Setup(model, optimizer, loader, criterion, accountant=engine.accountant)

    def privacy(self, config: DPSGDConfig, setup: Setup, *, steps: int) -> dict[str, float]:
        """Epsilon under every accountant, recomputed from the noise, sample rate and steps this run really used."""
        history = setup.accountant.history
        sigma = setup.optimizer.noise_multiplier
        rate = _accounted_rate(setup.loader)
        if sum(h[2] for h in history) != steps or any(h[0] != sigma or h[1] != rate for h in history):
            raise RuntimeError(f"accountant history {history} disagrees with the run (sigma={sigma}, q={rate}, "
                               f"steps={steps})")
        epsilons = all_epsilons(history=[(sigma, rate, steps)], delta=config.delta, sampler="poisson")
        return {
            "privacy/epsilon": epsilons[EPSILON_METRICS[config.accountant]], **epsilons,
            "privacy/delta": config.delta, "privacy/noise_multiplier": sigma, "privacy/sample_rate": rate,
            "privacy/steps": float(steps), "privacy/max_grad_norm": config.max_grad_norm,
        }

    def audit_delta(self, config: DPSGDConfig) -> float:
        return config.delta  # the audit's bound is comparable with the claimed epsilon at this delta

    def privacy_unit(self, config: DPSGDConfig) -> str:
        return "example"

    def accountant(self, config: DPSGDConfig) -> str:
        return config.accountant

    def sampler(self, config: DPSGDConfig) -> str:
        return "poisson"  # Opacus' DPDataLoader

    def reference(self, config: DPSGDConfig) -> SGDConfig:
        return METHODS.convert(config, "nonprivate")


def _accounted_rate(loader: Any) -> float:
    """The sample rate Opacus' accountant uses, checked to be at least the rate its sampler draws with.

    Opacus' sampler draws each example with p = 1/k, k the batches of the loader it was given; the
    private loader then has int(1/p) batches, and the accountant uses q = 1/int(1/p). In floating point
    1/(1/k) falls just below k for some k (93, 99, 105, 117, ...: 1/(1/93) = 92.99999999999999), so the
    loader has k - 1 batches an epoch and the accountant uses q = 1/92 while the sampler draws with
    1/93; otherwise q = p. Accounting with a rate at least the true one gives an upper bound: the pair
    of output distributions the accountants analyse at rate p, ((1-p) N(0, s^2) + p N(1, s^2), N(0, s^2)),
    is a post-processing of the pair at q >= p (keep the output with probability p/q, else replace it
    by a fresh N(0, s^2) draw), so its epsilon is never larger. The steps counted are the steps taken.
    """
    rate = 1.0 / len(loader)
    if rate < loader.sample_rate:
        raise RuntimeError(f"Opacus accounts with sample rate {rate}, below the rate {loader.sample_rate} its "
                           "sampler draws with: the epsilon would not be an upper bound")
    return rate
