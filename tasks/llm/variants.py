"""What a variant of the model weighs and reads, and :func:`apply_variant`, a variant by name.

The variants themselves are the family's methods (``tasks/llm/methods/``); :func:`apply_variant` makes one
from its name and keys, for callers outside the llm run (the memorization family, tests).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from suite.errors import ConfigError
from tasks.llm.config import METHODS

__all__ = ["apply_variant", "block_linears", "decode_bytes_per_token", "linear_sparsity", "weight_bytes"]


def block_linears(model: Any) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers inside the transformer blocks (not the output head)."""
    layers = model.model.layers
    return [(f"layers.{i}.{name}", m) for i, layer in enumerate(layers)
            for name, m in layer.named_modules() if isinstance(m, nn.Linear)]


def apply_variant(model: Any, method: str, *, fp8_activation_bound: float = 1200.0,
                  prune_pattern: str = "unstructured", calibration: torch.Tensor | None = None) -> Any:
    """Turn a float32 causal LM into the ``method`` variant (in place); returns the model.

    The keyword arguments are the methods' keys: each method reads those its config has and ignores
    the others. ``calibration`` (``wanda50`` only): a (sequences, tokens) tensor of token ids from text
    disjoint from the evaluation text.
    """
    try:
        variant = METHODS.get(method)
    except ConfigError as exc:  # callers outside a config (memorization, tests) get the ValueError they catch
        raise ValueError(str(exc)) from None
    keys = {"fp8_activation_bound": fp8_activation_bound, "prune_pattern": prune_pattern}
    config = variant.Config(**{k: v for k, v in keys.items() if k in variant.Config.model_fields})
    return variant().apply(model, config, calibration=calibration)


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
