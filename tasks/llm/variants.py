"""The efficient variants of one model (the task's methods), applied in place, and what they weigh.

* ``fp32``: the weights as loaded. In the quick tier these are SmolLM2-135M-Instruct's weights
  dequantized from the Q4_1 GGUF: float32 values on a 4-bit grid, so every variant's quality loss is
  measured against a model that already carries 4-bit rounding; the full tier's ``hf_dir`` checkpoint
  is the full-precision reference.
* ``bf16``: the whole model cast to bfloat16, token embedding and (tied) output head included, because
  that is bf16 inference as it is deployed (Llama 3 is served in bf16): keeping the embedding in
  float32 would leave a fifth of SmolLM2's weights out of the comparison.
* ``int8``: weight-only int8 with one scale per output row, by torchao's ``Int8WeightOnlyConfig``, on
  the blocks' linear layers.
* ``fp8_rowwise``: the Llama 3 recipe (see :mod:`tasks.llm.fp8`), on the inner layers' FFN.
* ``pruned50``: half of each block linear's weights zeroed by magnitude; ``wanda50``: by Wanda,
  calibrated on text disjoint from the evaluation text (see :mod:`tasks.llm.prune`). Either
  unstructured or 2:4. The zeros are stored densely: on a CPU neither pattern makes the model smaller
  or faster, only a sparse kernel (2:4 on recent GPUs) would.

Every variant but bf16 touches the blocks' linear layers only, so the float32 token embedding (tied to
the output head in SmolLM2 and Llama 3.2) is shared by all of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tasks.llm.prune import prune_magnitude, two_four_mask, wanda_prune

METHODS = ("fp32", "bf16", "int8", "fp8_rowwise", "pruned50", "wanda50")
prune_linear = prune_magnitude  # the name callers used before pruning moved to tasks.llm.prune
__all__ = ["METHODS", "apply_variant", "block_linears", "decode_bytes_per_token", "linear_sparsity",
           "prune_linear", "two_four_mask", "weight_bytes"]


def block_linears(model: Any) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers inside the transformer blocks (not the output head)."""
    layers = model.model.layers
    return [(f"layers.{i}.{name}", m) for i, layer in enumerate(layers)
            for name, m in layer.named_modules() if isinstance(m, nn.Linear)]


def apply_variant(model: Any, method: str, *, fp8_activation_bound: float = 1200.0,
                  prune_pattern: str = "unstructured", calibration: torch.Tensor | None = None) -> Any:
    """Turn a float32 causal LM into the ``method`` variant (in place); returns the model.

    ``calibration`` (``wanda50`` only): a (sequences, tokens) tensor of token ids from text disjoint from
    the evaluation text.
    """
    if method == "fp32":
        return model
    if method == "bf16":
        return model.to(torch.bfloat16)
    if method == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        targets = {id(m) for _, m in block_linears(model)}
        # set_inductor_config=False: torchao would otherwise rewrite torch.compile's global settings.
        quantize_(model, Int8WeightOnlyConfig(set_inductor_config=False), filter_fn=lambda m, _fqn: id(m) in targets)
        return model
    if method == "fp8_rowwise":
        from tasks.llm.fp8 import apply_fp8_rowwise

        apply_fp8_rowwise(model.model.layers, activation_upper_bound=fp8_activation_bound)
        return model
    if method == "pruned50":
        for _, linear in block_linears(model):
            prune_magnitude(linear, pattern=prune_pattern)
        return model
    if method == "wanda50":
        if calibration is None:
            raise ValueError("wanda50 needs calibration token ids (a (sequences, tokens) tensor)")
        wanda_prune(model, calibration, pattern=prune_pattern)
        return model
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored, each storage once (tied weights count once).

    Quantized tensor subclasses (torchao) count their inner tensors: int8 data plus scales.
    """
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        for inner in _storage_tensors(tensor):
            key = inner.untyped_storage().data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += inner.numel() * inner.element_size()
    return total


def decode_bytes_per_token(model: Any) -> int:
    """Weight bytes one batch-one decoding step reads: every weight once, except an input embedding
    that is not tied to the output head, of which one row is read (the KV cache is left out: at the
    quick tier's 80 positions it is under 1% of the weights)."""
    total = weight_bytes(model)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is None or head.weight.untyped_storage().data_ptr() != embedding.untyped_storage().data_ptr():
        row = embedding.shape[1] * embedding.element_size()
        total -= embedding.numel() * embedding.element_size() - row
    return total


def linear_sparsity(model: Any) -> float:
    """Fraction of exact zeros in the float weights of the blocks' linear layers."""
    zeros = total = 0
    for _, linear in block_linears(model):
        w = linear.weight
        if type(w.data) is not torch.Tensor and not isinstance(w, nn.Parameter):
            continue
        try:
            zeros += int((w == 0).sum())
            total += w.numel()
        except (RuntimeError, NotImplementedError):  # quantized subclasses do not compare
            continue
    return zeros / total if total else 0.0


def _storage_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    flatten = getattr(type(data), "__tensor_flatten__", None)
    if flatten is None or type(data) is torch.Tensor:
        return [data]
    names, _ = data.__tensor_flatten__()
    return [t for name in names for t in _storage_tensors(getattr(data, name))]
