"""secagg: Flower's SecAgg+ as shipped (fixed-point weights masked in a 2**32 field).

:class:`SecAggKeys` holds the SecAgg+ keys that every method under secure aggregation reads
(this one and the compressed ones, :mod:`tasks.fl.methods.compressed`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tasks.fl.config import METHODS, FLConfig, FLMethod, Weighting
from tasks.fl.rules import check_flower_field, check_secagg, flower_value


class SecAggKeys(BaseModel):
    """Mixin of the methods under SecAgg+; the rules are Flower's (:mod:`tasks.fl.rules`)."""

    num_shares: float = Field(0.5, gt=0)  # SecAgg+ shares per client; <= 1: a fraction of the round's clients
    threshold: float = Field(0.6, gt=0)  # SecAgg+ reconstruction threshold; <= 1: a fraction of the shares

    @model_validator(mode="after")
    def _flower_accepts_the_shares(self) -> SecAggKeys:
        check_secagg(self.num_shares, self.threshold, self.clients_per_round)  # type: ignore[attr-defined]
        return self

    def flower_shares(self) -> tuple[int | float, int | float]:
        """``(num_shares, reconstruction_threshold)`` as Flower's SecAgg+ workflow reads them."""
        return flower_value(self.num_shares), flower_value(self.threshold)


class SecAggConfig(SecAggKeys, Weighting, FLConfig):
    method: Literal["secagg"] = "secagg"

    @model_validator(mode="after")
    def _fits_flowers_field(self) -> SecAggConfig:
        check_flower_field(self.clients_per_round)
        return self


@METHODS.register
class SecAgg(FLMethod):
    Config = SecAggConfig

    def client_mods(self, config: SecAggConfig) -> list[Any]:
        from flwr.client.mod import secaggplus_mod

        from tasks.fl.apps import SeededNumpyMod

        return [SeededNumpyMod(config.seed), secaggplus_mod]

    def fit_workflow(self, config: SecAggConfig, plan: Any, strategy: Any) -> Any:
        from tasks.fl.secure import AbortingSecAggPlusWorkflow

        shares, threshold = config.flower_shares()
        # Flower's SecAgg+ weighs each client by its fit result's num_examples.
        return AbortingSecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=threshold,
                                          max_weight=float(config.client_weight_cap()))
