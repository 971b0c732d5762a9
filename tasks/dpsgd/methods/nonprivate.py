"""nonprivate: plain SGD on the same data, model and seed, the reference of every DP-SGD run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tasks.dpsgd.config import METHODS, SGDConfig, SGDMethod

if TYPE_CHECKING:
    from tasks.dpsgd.train import Setup


class NonPrivateConfig(SGDConfig):
    method: Literal["nonprivate"] = "nonprivate"


@METHODS.register
class NonPrivate(SGDMethod):
    Config = NonPrivateConfig

    def privatize(self, config: NonPrivateConfig, setup: Setup) -> Setup:
        return setup

    def privacy(self, config: NonPrivateConfig, setup: Setup, *, steps: int) -> dict[str, float]:
        return {}

    def audit_delta(self, config: NonPrivateConfig) -> float:
        return 0.0  # no claim to hold it to: the bound is a pure-DP one
