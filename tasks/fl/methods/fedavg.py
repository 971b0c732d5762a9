"""fedavg: Flower's FedAvg in fp32, in the clear: the baseline every other method is compared with."""

from __future__ import annotations

from typing import Literal

from tasks.fl.config import METHODS, FLConfig, FLMethod, Weighting


class FedAvgConfig(Weighting, FLConfig):  # mixins first: their keys are listed last
    method: Literal["fedavg"] = "fedavg"


@METHODS.register
class FedAvg(FLMethod):
    Config = FedAvgConfig

    def reference(self, config: FedAvgConfig) -> None:
        return None  # it is the reference
