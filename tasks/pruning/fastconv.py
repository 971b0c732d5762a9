"""Faster convolutions for training on CPU: depthwise weight gradients, and 1x1 convolutions of 1x1 maps.

Why: in a single-threaded FBNetV3 training step at 32x32 (batch 128, channels_last, torch 2.14.1,
oneDNN 3.12) most of the time went to ``convolution_backward``, and most of that to the weight
gradient of the depthwise convolutions. oneDNN has a fast depthwise kernel (``jit_dw``) for the
weight gradient of 3x3 kernels only; a 5x5 one falls to its generic grouped kernel (``jit``), which
treats each group of 16 channels as a dense 16x16 convolution. Measured on a loaded 2-core AMD EPYC,
per call: C=96, 16x16, 3x3: 1.7 ms, 5x5: 16 ms; and on the late stages it is worse still, though
their maps are tiny: C=1320, 1x1, 5x5: 20 to 48 ms for 169k multiply-adds, and even a 3x3 at 2x2
(C=520) takes 4 to 6 ms. fbnetv3_g's depthwise weight gradients took ~260 ms of its ~900 ms step.

What this does instead, for the weight gradient only (the forward pass and the input gradient stay
with aten/oneDNN, whose depthwise kernels are fast for every kernel size):
- kernel taps that never meet a real input pixel (on a 1x1 map a 5x5 kernel with padding 2 has only
  its centre) get an exact zero, as aten's sum of products with the zero padding gives;
- when the output map is small (``SMALL_OUTPUT`` positions or fewer) and oneDNN would not use its
  depthwise kernel, each live tap's gradient is a sum over batch and positions of the output
  gradient times the matching slice of the input, one vectorized product and reduction per tap
  (per layer: C=1320 at 1x1 0.05 ms instead of 37; C=480 at 2x2, 5x5 0.3 ms instead of 4;
  C=168 at 4x4, 5x5 1.2 ms instead of 3.3);
- oneDNN's depthwise kernel is used (checked with ONEDNN_VERBOSE) when the kernel is at most 3x3
  and the input map at least as large as the kernel: those keep aten (0.03 to 0.15 ms at 4x4);
- larger output maps keep aten too: at 8x8 a 5x5 kernel costs about the same either way.
The result equals aten's up to float summation order (relative differences ~1e-6).

Second, a 1x1 convolution of a 1x1 map (FBNetV3's head, 1344 or 1728 to 1984 channels after the
global pooling, and the squeeze-excitation convolutions) is a matrix product: as ``F.linear`` (MKL's
GEMM) the head's forward and backward at batch 128 take 23 to 32 ms instead of oneDNN's 60 to 95 ms.
Larger maps keep oneDNN, which is as fast or faster there (measured at 2x2 to 16x16).

:class:`fast_convolutions` applies both by intercepting ``F.conv2d`` in a
:class:`torch.overrides.TorchFunctionMode`, only during a trainer's forward passes (the backward
that autograd records runs after): the models' modules stay
plain ``nn.Conv2d``, so torch-pruning's dependency graph, the MAC and FLOP counts and the latency
measurements see exactly what they saw before. Any call it does not cover (a depthwise one with
dilation, string padding, no weight gradient wanted or not on CPU; another that is not a 1x1
convolution of a 1x1 map) goes to ``F.conv2d`` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

SMALL_OUTPUT = 16  # output positions (Ho * Wo) up to which the per-tap reduction beats oneDNN's generic kernel

_aten = torch.ops.aten


def live_taps(size: int, out_size: int, kernel: int, *, stride: int, padding: int) -> list[tuple[int, int, int]]:
    """For one spatial dimension: ``(tap, first output, output count)`` of each kernel tap that meets
    at least one real (unpadded) input pixel, for outputs ``o`` reading input ``stride * o + tap - padding``."""
    taps = []
    for tap in range(kernel):
        first = max(0, -((tap - padding) // stride))  # smallest o with stride * o + tap - padding >= 0
        last = min(out_size - 1, (size - 1 + padding - tap) // stride)
        if first <= last:
            taps.append((tap, first, last - first + 1))
    return taps


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: tuple[int, int], *,
                          stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Gradient of a depthwise ``conv2d`` (one filter per channel, dilation 1) for its weight, shape
    ``(C, 1, kh, kw)``, computed tap by tap: ``sum over n, o of grad_out[n, c, o] * x[n, c, stride * o + tap - padding]``.

    Meant for small output maps (see the module's docstring); exact zeros for taps that only meet padding.
    """
    channels = x.shape[1]
    rows = live_taps(x.shape[2], grad_out.shape[2], kernel[0], stride=stride[0], padding=padding[0])
    cols = live_taps(x.shape[3], grad_out.shape[3], kernel[1], stride=stride[1], padding=padding[1])
    grad = x.new_zeros(kernel[0], kernel[1], channels)  # tap-major, so that each tap's row is contiguous
    for i, oh, nh in rows:
        for j, ow, nw in cols:
            h0, w0 = stride[0] * oh + i - padding[0], stride[1] * ow + j - padding[1]
            xs = x[:, :, h0:h0 + stride[0] * (nh - 1) + 1:stride[0], w0:w0 + stride[1] * (nw - 1) + 1:stride[1]]
            torch.sum(xs * grad_out[:, :, oh:oh + nh, ow:ow + nw], dim=(0, 2, 3), out=grad[i, j])
    return grad.permute(2, 0, 1).unsqueeze(1)


class DepthwiseConv2d(torch.autograd.Function):
    """``F.conv2d`` for a depthwise convolution (groups == channels, one filter each, dilation 1)
    whose backward computes the input gradient with aten and the weight gradient with
    :func:`depthwise_weight_grad` when the output map is small, with aten otherwise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        want_input, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        small = _per_tap_is_faster(x, weight, grad_out)
        grad_x, grad_w, _ = _aten.convolution_backward(
            grad_out, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], x.shape[1],
            [want_input, want_weight and not small, False])
        if want_weight and small:
            grad_w = depthwise_weight_grad(x, grad_out, tuple(weight.shape[2:]), stride=ctx.stride,
                                           padding=ctx.padding)
        grad_b = grad_out.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def _per_tap_is_faster(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor) -> bool:
    kh, kw = weight.shape[2:]
    onednn_depthwise = kh <= 3 and kw <= 3 and x.shape[2] >= kh and x.shape[3] >= kw
    return not onednn_depthwise and grad_out.shape[2] * grad_out.shape[3] <= SMALL_OUTPUT


def _pair(value: int | Sequence[int]) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    return None  # a string ("same", "valid") or anything else: not covered


def _covered(x, weight, stride, padding, dilation, groups) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``(stride, padding)`` as pairs when the call is one this module handles, else None."""
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)) or x.dim() != 4:
        return None
    if not (torch.is_grad_enabled() and weight.requires_grad) or x.device.type != "cpu" or weight.device.type != "cpu":
        return None
    channels = x.shape[1]
    if groups != channels or weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1:
        return None
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if stride is None or padding is None or dilation != (1, 1):
        return None
    return stride, padding


def _is_pointwise_of_one_pixel(x, weight, stride, padding, dilation, groups) -> bool:
    """A 1x1 convolution (any stride, no padding, one group) of a 1x1 map on the CPU."""
    return (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and x.dim() == 4
            and x.shape[2:] == (1, 1) and weight.dim() == 4 and weight.shape[2:] == (1, 1) and groups == 1
            and _pair(padding) == (0, 0) and _pair(stride) is not None and _pair(dilation) is not None
            and x.device.type == "cpu")


def _call(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d``'s signature: the calls covered, computed the faster way; None for the others."""
    pairs = _covered(x, weight, stride, padding, dilation, groups)
    if pairs is not None:
        return DepthwiseConv2d.apply(x, weight, bias, *pairs)
    if _is_pointwise_of_one_pixel(x, weight, stride, padding, dilation, groups):
        return F.linear(x.flatten(1), weight.flatten(1), bias)[:, :, None, None]
    return None


class fast_convolutions(TorchFunctionMode):  # noqa: N801 (used as a context manager, like torch's modes)
    """Within this context, depthwise ``F.conv2d`` calls that need a weight gradient use
    :class:`DepthwiseConv2d`, and 1x1 convolutions of 1x1 maps ``F.linear``; every other call runs
    unchanged.

    Example::

        with fast_convolutions():
            logits = model(x)
        loss_fn(logits, y).backward()
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            out = _call(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)
