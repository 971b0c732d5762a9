"""ray_address: reports whether the run was given a Ray address (a sweep lends one to cells that ask)."""

from __future__ import annotations

import os
from typing import Literal

from tests.toy.config import METHODS, ToyConfig, ToyMethod


class RayAddressConfig(ToyConfig):
    method: Literal["ray_address"] = "ray_address"


@METHODS.register
class RayAddress(ToyMethod):
    Config = RayAddressConfig

    def outcome(self, config: RayAddressConfig, value: float) -> dict[str, float]:
        host, _, port = os.environ.get("RAY_ADDRESS", "").rpartition(":")
        return {"utility/accuracy": float(bool(host) and port.isdigit())}
