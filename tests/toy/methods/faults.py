"""Methods that fail on purpose, for the runners' fault handling: crash, nan, hang."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from tests.toy.config import METHODS, ToyConfig, ToyMethod


class CrashConfig(ToyConfig):
    method: Literal["crash"] = "crash"
    message: str = "planned crash of the toy task"  # the RuntimeError's message


@METHODS.register
class Crash(ToyMethod):
    Config = CrashConfig

    def outcome(self, config: CrashConfig, value: float) -> dict[str, float]:
        raise RuntimeError(config.message)


class NanConfig(ToyConfig):
    method: Literal["nan"] = "nan"


@METHODS.register
class Nan(ToyMethod):
    Config = NanConfig

    def outcome(self, config: NanConfig, value: float) -> dict[str, float]:
        return {"utility/accuracy": float("nan")}


class HangConfig(ToyConfig):
    method: Literal["hang"] = "hang"
    hang_s: float = Field(3600.0, ge=0)  # how long it hangs before it reports the value


@METHODS.register
class Hang(ToyMethod):
    Config = HangConfig

    def outcome(self, config: HangConfig, value: float) -> dict[str, float]:
        time.sleep(config.hang_s)
        return {"utility/accuracy": value}
