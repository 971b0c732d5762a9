"""ok: reports the trained value."""

from __future__ import annotations

from typing import Literal

from tests.toy.config import METHODS, ToyConfig, ToyMethod


class OkConfig(ToyConfig):
    method: Literal["ok"] = "ok"


@METHODS.register
class Ok(ToyMethod):
    Config = OkConfig

    def outcome(self, config: OkConfig, value: float) -> dict[str, float]:
        return {"utility/accuracy": value}
