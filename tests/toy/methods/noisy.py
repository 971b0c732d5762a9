"""noisy: the value released by the Laplace mechanism, a private method with a key of its own."""

from __future__ import annotations

import random
from typing import Literal

from suite.config import PureDPBudget
from tests.toy.config import METHODS, ToyConfig, ToyMethod

_SENSITIVITY = 1.0  # the value is clipped to [0, 1] before noise is added


class NoisyConfig(PureDPBudget, ToyConfig):  # mixins first: their keys are listed last
    method: Literal["noisy"] = "noisy"


@METHODS.register
class Noisy(ToyMethod):
    Config = NoisyConfig

    def outcome(self, config: NoisyConfig, value: float) -> dict[str, float]:
        scale = _SENSITIVITY / config.epsilon
        rng = random.Random(config.seed)
        noise = rng.expovariate(1 / scale) - rng.expovariate(1 / scale)  # Laplace(0, scale)
        return {"utility/accuracy": min(max(value, 0.0), 1.0) + noise,
                "privacy/epsilon": _SENSITIVITY / scale}  # the epsilon of the scale actually used

    def privacy_unit(self, config: NoisyConfig) -> str:
        return "example"

    def accountant(self, config: NoisyConfig) -> str:
        return "laplace"

    def sampler(self, config: NoisyConfig) -> None:
        return None  # pure epsilon-DP Laplace: exact, no Gaussian accountant analyses it
