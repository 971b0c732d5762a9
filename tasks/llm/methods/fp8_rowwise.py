"""fp8_rowwise: the Llama 3 recipe (see :mod:`tasks.llm.fp8`) on the inner layers' FFN."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.llm.config import METHODS, LLMConfig, Variant


class Fp8RowwiseConfig(LLMConfig):
    method: Literal["fp8_rowwise"] = "fp8_rowwise"
    fp8_activation_bound: float = Field(1200.0, gt=0)  # cap on activation row maxima (the paper's 1200)


@METHODS.register
class Fp8Rowwise(Variant):
    Config = Fp8RowwiseConfig

    def apply(self, model: Any, config: Fp8RowwiseConfig, *, calibration: Any = None) -> Any:
        from tasks.llm.fp8 import apply_fp8_rowwise

        apply_fp8_rowwise(model.model.layers, activation_upper_bound=config.fp8_activation_bound)
        return model

    def speed_emulated(self, model: Any) -> bool:
        """Emulated unless a GPU runs torch._scaled_mm."""
        from tasks.llm.fp8 import scaled_mm_available

        return not (model.device.type == "cuda" and scaled_mm_available())

    def tags(self, config: Fp8RowwiseConfig) -> dict[str, str]:
        return {"llm.fp8_matmul": "emulated" if config.device == "cpu" else "scaled_mm on FP8 GPUs, else emulated"}
