"""FP8 row-wise quantization, the recipe of "The Llama 3 Herd of Models" (2024), section 6.2.

Weights: float8 e4m3 with one scale per output row. Activations: quantized on the fly with one
scale per token (row), the row's absolute maximum capped at an upper bound (1200 in the paper)
so that a rare huge activation cannot crush the resolution of the whole row. Only the FFN's
gate, up and down projections are quantized, and the first and last transformer layers stay in
high precision.

On a CPU the matmul is emulated: both operands are rounded to e4m3 exactly as an FP8 GEMM would see
them, then multiplied in float32 and rescaled, so quality is real and speed is not (it is slower
than float32). On a CUDA device with FP8 support ``torch._scaled_mm`` runs the real row-wise FP8
GEMM. The maths is written here because no maintained library exposes the row-wise scheme with
the activation upper bound on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def quantize_rowwise(x: torch.Tensor, *, upper_bound: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (..., k) -> (e4m3 values, float32 scale per row) with ``x ~= values * scale``.

    The row maximum is capped at ``upper_bound``: entries beyond it saturate at +-448 * scale.
    """
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    if upper_bound is not None:
        amax = amax.clamp(max=upper_bound)
    scale = amax.clamp(min=1e-12) / E4M3_MAX
    values = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return values, scale


class Fp8RowwiseLinear(nn.Module):
    """A bias-free linear layer with e4m3 row-wise weights and dynamic row-wise activations."""

    def __init__(self, linear: nn.Linear, *, activation_upper_bound: float) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Fp8RowwiseLinear supports bias-free linear layers only (Llama's FFN has none)")
        weight, scale = quantize_rowwise(linear.weight.data)
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale.squeeze(-1))  # one per output row
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation_upper_bound = activation_upper_bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, xs = quantize_rowwise(x.reshape(-1, shape[-1]), upper_bound=self.activation_upper_bound)
        if x.is_cuda and scaled_mm_available():
            out = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale[None, :],
                                   out_dtype=torch.bfloat16)
        else:  # emulation: exact e4m3 operands, float32 products
            out = (xq.float() @ self.weight_fp8.float().t()) * xs * self.weight_scale
        return out.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, e4m3 rowwise, activation bound {self.activation_upper_bound}"


def apply_fp8_rowwise(layers: nn.ModuleList, *, activation_upper_bound: float = 1200.0) -> int:
    """Swap the FFN projections of every layer but the first and last; returns how many were swapped."""
    swapped = 0
    for layer in list(layers)[1:-1]:
        mlp = layer.mlp
        for name in FFN_PROJECTIONS:
            setattr(mlp, name, Fp8RowwiseLinear(getattr(mlp, name), activation_upper_bound=activation_upper_bound))
            swapped += 1
    return swapped


def scaled_mm_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
