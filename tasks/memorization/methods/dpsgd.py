"""dpsgd: DP-SGD (DP-AdamW) through Opacus, noise calibrated to the target epsilon.

Poisson sampling with rate batch_size / examples, per-example clipping at ``max_grad_norm``,
Gaussian noise calibrated by Opacus to the target epsilon after ``epochs``
(``make_private_with_epsilon``). Per-example gradients come from Opacus' ``hooks`` mode, which
has grad samplers for ``nn.Linear`` and ``nn.Embedding`` and, in Opacus 1.6, computes those of
layers it has none for (``LlamaRMSNorm``'s weight) with functorch, layer by layer: cheaper on the
quick model than ``functorch`` on the whole model. Ghost clipping refuses the tied input and
output embeddings. Opacus and torch are imported inside the hooks (``suite list`` imports this module).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from suite.config import ApproxDPBudget
from tasks.memorization.config import METHODS, MemorizationConfig, MemorizationMethod, Prepared

if TYPE_CHECKING:
    from tasks.memorization.train import TrainingRecord


class DPSGDConfig(ApproxDPBudget, MemorizationConfig):  # mixins first: their keys are listed last
    method: Literal["dpsgd"] = "dpsgd"
    max_grad_norm: float = Field(1.0, gt=0)  # per-example clipping bound C
    max_physical_batch: int | None = Field(None, ge=1)  # split logical batches to fit memory (Opacus); null: don't
    accountant: Literal["rdp", "prv"] = "rdp"  # calibrates the noise and reports privacy/epsilon
    grad_sample_mode: Literal["hooks", "functorch"] = "hooks"  # how Opacus gets per-example gradients


@METHODS.register
class DPSGD(MemorizationMethod):
    Config = DPSGDConfig

    def prepare(self, config: DPSGDConfig, model: Any, optimizer: Any, loader: Any) -> Prepared:
        # Known and harmless here: the suite measures, it does not deploy (secure RNG).
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        engine, model, optimizer, loader = _make_private(config, model, optimizer, loader)

        def noise(steps: int) -> tuple[float, float]:
            sigma = optimizer.noise_multiplier
            return sigma, _sample_rate(engine, loader, sigma, steps)

        return Prepared(model=model, optimizer=optimizer, loader=loader, noise=noise,
                        batches=lambda: _physical_batches(loader, optimizer, config.max_physical_batch))

    def privacy_metrics(self, config: DPSGDConfig, record: TrainingRecord) -> dict[str, float]:
        """Epsilon recomputed from the noise, sample rate and steps the training really used."""
        from suite.privacy import all_epsilons, dpsgd_epsilon

        history = [(record.noise_multiplier, record.sample_rate, record.steps)]
        return {
            "privacy/epsilon": dpsgd_epsilon(history=history, delta=config.delta, accountant=config.accountant),
            **all_epsilons(history=history, delta=config.delta),
            "privacy/delta": config.delta, "privacy/noise_multiplier": record.noise_multiplier,
            "privacy/sample_rate": record.sample_rate, "privacy/steps": float(record.steps),
            "privacy/max_grad_norm": config.max_grad_norm,
        }

    def audit_delta(self, config: DPSGDConfig) -> float:
        return config.delta

    def privacy_unit(self, config: DPSGDConfig) -> str:
        return "example"

    def accountant(self, config: DPSGDConfig) -> str:
        return config.accountant

    def sampler(self, config: DPSGDConfig) -> str:
        return "poisson"


def _make_private(config: DPSGDConfig, model: Any, optimizer: Any, loader: Any) -> tuple[Any, Any, Any, Any]:
    import torch
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant=config.accountant)
    with warnings.catch_warnings():
        # The calibration's search probes huge noise levels, whose optimal RDP order is the largest.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=config.epsilon,
            target_delta=config.delta, epochs=config.epochs, max_grad_norm=config.max_grad_norm,
            poisson_sampling=True, grad_sample_mode=config.grad_sample_mode,
            noise_generator=torch.Generator().manual_seed(config.seed + 1))
    return engine, model, optimizer, loader


def _physical_batches(loader: Any, optimizer: Any, size: int | None) -> Any:
    """The loader itself, or Opacus' BatchMemoryManager splitting each logical batch into ``size`` rows."""
    import contextlib

    if size is None:
        return contextlib.nullcontext(loader)
    from opacus.utils.batch_memory_manager import BatchMemoryManager

    return BatchMemoryManager(data_loader=loader, max_physical_batch_size=size, optimizer=optimizer)


def _sample_rate(engine: Any, loader: Any, sigma: float, steps: int) -> float:
    """The rate the accountant used, checked against the run: one entry of (sigma, q, steps)."""
    history = engine.accountant.history
    rate = 1.0 / len(loader)
    if sum(h[2] for h in history) != steps or any(h[0] != sigma or h[1] != rate for h in history):
        raise RuntimeError(f"accountant history {history} disagrees with the run (sigma={sigma}, q={rate}, "
                           f"steps={steps})")
    return rate
