"""fp32 and bf16: the weights as loaded, and the whole model cast to bfloat16.

* ``fp32``: in the quick tier these are SmolLM2-135M-Instruct's weights dequantized from the Q4_1
  GGUF, float32 values on a 4-bit grid, so every variant's quality loss is measured against a model
  that already carries 4-bit rounding; the full tier's ``hf_dir`` checkpoint is the full-precision
  reference.
* ``bf16``: token embedding and (tied) output head included, because that is bf16 inference as it is
  deployed (Llama 3 is served in bf16): keeping the embedding in float32 would leave a fifth of
  SmolLM2's weights out of the comparison.
"""

from __future__ import annotations

from typing import Any, Literal

from tasks.llm.config import METHODS, LLMConfig, Variant


class Fp32Config(LLMConfig):
    method: Literal["fp32"] = "fp32"


@METHODS.register
class Fp32(Variant):
    Config = Fp32Config
    decodes_as_loaded = True

    def apply(self, model: Any, config: Fp32Config, *, calibration: Any = None) -> Any:
        return model


class Bf16Config(LLMConfig):
    method: Literal["bf16"] = "bf16"


@METHODS.register
class Bf16(Variant):
    Config = Bf16Config

    def apply(self, model: Any, config: Bf16Config, *, calibration: Any = None) -> Any:
        import torch

        return model.to(torch.bfloat16)
