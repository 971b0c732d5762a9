"""int8: weight-only int8 with one scale per output row (torchao's ``Int8WeightOnlyConfig``) on the
blocks' linear layers. torchao's eager path converts the weights to float on every call, on any device,
so the variant's speed is emulated."""

from __future__ import annotations

from typing import Any, Literal

from tasks.llm.config import METHODS, LLMConfig, Variant


class Int8Config(LLMConfig):
    method: Literal["int8"] = "int8"


@METHODS.register
class Int8(Variant):
    Config = Int8Config

    def apply(self, model: Any, config: Int8Config, *, calibration: Any = None) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        from tasks.llm.variants import block_linears

        targets = {id(m) for _, m in block_linears(model)}
        # set_inductor_config=False: torchao would otherwise rewrite torch.compile's global settings.
        quantize_(model, Int8WeightOnlyConfig(set_inductor_config=False), filter_fn=lambda m, _fqn: id(m) in targets)
        return model

    def speed_emulated(self, model: Any) -> bool:
        return True

    def tags(self, config: Int8Config) -> dict[str, str]:
        return {"llm.int8_matmul": "emulated: torchao converts the int8 weights to float on every call"}
