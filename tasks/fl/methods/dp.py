"""dp: central DP on FedAvg (Flower's server-side clipping and Gaussian noise), Poisson-sampled clients.

Each round samples every client independently with probability ``q = clients_per_round /
num_clients`` and divides the clipped updates' sum by the fixed ``clients_per_round``
(DP-FedAvg, McMahan et al. 2018; :mod:`tasks.fl.strategy`), so one client's sensitivity is
``clip_norm / clients_per_round``. Clients weigh 1 each: the sensitivity assumes it, so dp has
no ``weighting`` key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from suite.privacy import calibration_floor
from tasks.fl.config import METHODS, FLConfig, FLMethod

SAMPLER = "poisson"  # how dp samples clients (tasks.fl.strategy.sample_partitions)


class DPConfig(FLConfig):
    method: Literal["dp"] = "dp"
    epsilon: float | None = Field(None, gt=0)  # target client-level epsilon (the noise is calibrated to it)
    delta: float = Field(gt=0, lt=1)  # target delta
    noise_multiplier: float | None = Field(None, gt=0)  # Gaussian noise std / sensitivity; null: calibrated to epsilon
    clip_norm: float = Field(gt=0)  # L2 bound of each client's update (Flower's server-side clipping)

    @model_validator(mode="after")
    def _one_noise_that_can_be_reached(self) -> DPConfig:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("method dp needs either a target epsilon (the noise multiplier is calibrated to it) "
                             f"or a noise_multiplier, not both nor neither (got epsilon={self.epsilon}, "
                             f"noise_multiplier={self.noise_multiplier})")
        if self.epsilon is not None:
            floor = calibration_floor(accountant="rdp", delta=self.delta)
            if self.epsilon < floor:
                raise ValueError(f"epsilon: {self.epsilon} is below {floor:.4g}, the smallest target the RDP "
                                 f"calibration can reach at delta {self.delta:g} whatever the noise; use a larger "
                                 "epsilon or delta, or a noise_multiplier")
        return self


@METHODS.register
class DP(FLMethod):
    Config = DPConfig

    def client_sampler(self, config: DPConfig) -> str:
        return SAMPLER

    def fit_workflow(self, config: DPConfig, plan: Any, strategy: Any) -> Any:
        from tasks.fl.strategy import dp_fit_workflow

        return dp_fit_workflow(strategy)

    def wrap_strategy(self, config: DPConfig, strategy: Any, *, noise_multiplier: float | None) -> Any:
        from tasks.fl.strategy import SeededDpClipping

        return SeededDpClipping(strategy, seed=config.seed, noise_multiplier=noise_multiplier,
                                clipping_norm=config.clip_norm)

    def noise_multiplier(self, config: DPConfig) -> float:
        """As given, or the smallest that reaches the target epsilon after ``rounds`` rounds at
        sampling rate ``clients_per_round / num_clients`` (Opacus)."""
        if config.noise_multiplier is not None:
            return float(config.noise_multiplier)
        from opacus.accountants.utils import get_noise_multiplier

        return float(get_noise_multiplier(target_epsilon=config.epsilon, target_delta=config.delta,
                                          sample_rate=config.clients_per_round / config.num_clients,
                                          steps=config.rounds, accountant="rdp"))

    def privacy_metrics(self, config: DPConfig, *, noise_multiplier: float | None) -> dict[str, float]:
        """Client-level epsilon of the run's Gaussian mechanism, from its actual parameters, under
        the RDP, PRV and PLD accountants; ``privacy/epsilon`` is RDP's (the one the noise is calibrated with).

        Each round samples every client independently with probability ``q`` and adds noise of
        std ``sigma * clip_norm / clients_per_round`` to the sum of the clipped updates over the
        fixed ``clients_per_round``: the Poisson-subsampled Gaussian mechanism with noise
        multiplier ``sigma``, ``rounds`` times (an empty round is noised too).
        """
        from suite.privacy import all_epsilons

        rate = config.clients_per_round / config.num_clients
        epsilons = all_epsilons(history=[(noise_multiplier, rate, config.rounds)], delta=config.delta, sampler=SAMPLER)
        return {**epsilons, "privacy/epsilon": epsilons["privacy/epsilon_rdp"], "privacy/delta": config.delta,
                "privacy/noise_multiplier": noise_multiplier, "privacy/sample_rate": rate,
                "privacy/steps": float(config.rounds)}

    def privacy_unit(self, config: DPConfig) -> str:
        return "client"

    def accountant(self, config: DPConfig) -> str:
        return "rdp"

    def sampler(self, config: DPConfig) -> str:
        return SAMPLER
