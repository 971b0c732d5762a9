"""The efficient variants of one model (the task's methods), applied in place, and what they weigh.

Every variant touches the linear layers of the transformer blocks only; the token embedding (tied to
the output head in SmolLM2 and Llama 3.2) stays in float32, so all variants share it.

* ``fp32``: the dequantized weights as they are. ``bf16``: the whole model cast to bfloat16.
* ``int8``: weight-only int8 with one scale per output row, by torchao's ``Int8WeightOnlyConfig``.
* ``fp8_rowwise``: the Llama 3 recipe (see :mod:`tasks.llm.fp8`).
* ``pruned50``: half of each linear weight set to zero by magnitude, either unstructured per layer
  (``torch.nn.utils.prune.l1_unstructured``) or 2:4 semi-structured (the two largest of every four
  consecutive weights along the input dimension are kept). The zeros are stored densely: on a CPU
  neither pattern makes the model smaller or faster, only a sparse kernel (2:4 on recent GPUs) would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

METHODS = ("fp32", "bf16", "int8", "fp8_rowwise", "pruned50")


def block_linears(model: Any) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers inside the transformer blocks (not the output head)."""
    layers = model.model.layers
    return [(f"layers.{i}.{name}", m) for i, layer in enumerate(layers)
            for name, m in layer.named_modules() if isinstance(m, nn.Linear)]


def apply_variant(model: Any, method: str, *, fp8_activation_bound: float = 1200.0,
                  prune_pattern: str = "unstructured") -> Any:
    """Turn a float32 causal LM into the ``method`` variant (in place); returns the model."""
    if method == "fp32":
        return model
    if method == "bf16":
        return model.to(torch.bfloat16)
    if method == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        targets = {id(m) for _, m in block_linears(model)}
        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _fqn: id(m) in targets)
        return model
    if method == "fp8_rowwise":
        from tasks.llm.fp8 import apply_fp8_rowwise

        apply_fp8_rowwise(model.model.layers, activation_upper_bound=fp8_activation_bound)
        return model
    if method == "pruned50":
        for _, linear in block_linears(model):
            prune_linear(linear, pattern=prune_pattern)
        return model
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def prune_linear(linear: nn.Linear, *, pattern: str) -> None:
    """Zero half of ``linear.weight`` by magnitude (``unstructured`` or ``2:4``)."""
    if pattern == "unstructured":
        from torch.nn.utils import prune

        prune.l1_unstructured(linear, "weight", amount=0.5)
        prune.remove(linear, "weight")  # fold the mask into the weight
    elif pattern == "2:4":
        with torch.no_grad():
            linear.weight.mul_(two_four_mask(linear.weight))
    else:
        raise ValueError(f"unknown prune pattern {pattern!r}; allowed: unstructured, 2:4")


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """1 for the two largest-magnitude weights of every 4 consecutive ones along each row, else 0.

    Written here because torch's 2:4 helpers (``to_sparse_semi_structured``) need a CUDA device.
    """
    out_f, in_f = weight.shape
    if in_f % 4:
        raise ValueError(f"2:4 pruning needs the input dimension divisible by 4, got {in_f}")
    groups = weight.detach().abs().reshape(out_f, in_f // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(out_f, in_f).to(weight.dtype)


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
