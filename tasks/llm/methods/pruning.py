"""pruned50 and wanda50: half of each block linear's weights zeroed, by magnitude or by Wanda.

Wanda is calibrated on text disjoint from the evaluation text (see :mod:`tasks.llm.prune` and
:mod:`tasks.llm.texts`). Either pattern, unstructured or 2:4, stores its zeros densely: on a CPU neither
makes the model smaller or faster, only a sparse kernel (2:4 on recent GPUs) would.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasks.llm.config import METHODS, LLMConfig, Variant


class PruningConfig(LLMConfig):
    """The keys of both pruning methods."""

    prune_pattern: Literal["unstructured", "2:4"] = "unstructured"  # which half is zeroed


class Pruned50Config(PruningConfig):
    method: Literal["pruned50"] = "pruned50"


@METHODS.register
class Pruned50(Variant):
    Config = Pruned50Config
    decodes_as_loaded = True  # zeros in place: same dtype, same nn.Linear layers

    def apply(self, model: Any, config: Pruned50Config, *, calibration: Any = None) -> Any:
        from tasks.llm.prune import prune_magnitude
        from tasks.llm.variants import block_linears

        for _, linear in block_linears(model):
            prune_magnitude(linear, pattern=config.prune_pattern)
        return model


class Wanda50Config(PruningConfig):
    method: Literal["wanda50"] = "wanda50"
    calibration_sequences: int = Field(8, ge=1)  # calibration windows, drawn with the seed
    calibration_tokens: int = Field(256, ge=8)  # tokens per calibration window


@METHODS.register
class Wanda50(Variant):
    Config = Wanda50Config
    decodes_as_loaded = True  # zeros in place: same dtype, same nn.Linear layers

    def apply(self, model: Any, config: Wanda50Config, *, calibration: Any = None) -> Any:
        """``calibration``: a (sequences, tokens) tensor of token ids from text disjoint from the evaluation text."""
        from tasks.llm.prune import wanda_prune

        if calibration is None:
            raise ValueError("wanda50 needs calibration token ids (a (sequences, tokens) tensor)")
        wanda_prune(model, calibration, pattern=config.prune_pattern)
        return model

    def calibration(self, config: Wanda50Config, encode: Any) -> Any:
        """Windows of the pydoc text that shares nothing with the held-out text, drawn with the seed."""
        import torch

        from tasks.llm import texts

        ids = encode(texts.calibration_text(held_out_every=config.held_out_every))
        windows = texts.calibration_windows(ids, sequences=config.calibration_sequences,
                                            length=config.calibration_tokens, seed=config.seed)
        return torch.tensor(windows)
