"""Training FLOPs counted with PyTorch's FLOP counter, with grouped-convolution backward corrected.

What is counted: the multiply-accumulates (2 FLOPs each) of convolutions and matrix products in
the forward pass and in both halves of their backward pass (gradient of the input, gradient of the
weight). Norms, activations, pooling, the loss and the optimizer's update are not counted (the
counter has no formula for them); on these networks they are a few percent of the total.

Why not :func:`suite.meters.count_flops` as is: torch 2.14's formula for ``convolution_backward``
counts the weight gradient of a grouped convolution as if it had one group, so each depthwise
convolution's backward is counted ``groups`` times too large (64x for a 64-channel depthwise
conv; FBNetV3's training FLOPs come out 20x the forward's). Upstream fixed it later (pytorch/pytorch
pull request 183405 divides that term by ``groups``); the formula below replaces torch's for every
version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each half of a convolution's backward (input gradient, weight gradient) takes exactly as many
    multiply-accumulates as its forward pass: every (weight, input) product of the forward appears
    once in each. torch's forward formula already accounts for groups (through the weight's shape)."""
    forward = flop_counter.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _count(fn) -> int:
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return int(counter.get_total_flops())


def per_example(model: nn.Module, resolution: int, *, backward: bool) -> float:
    """FLOPs of one example through ``model`` (forward, and backward when ``backward``), counted on
    a batch of one. Convolution and matmul FLOPs grow linearly with the batch, so a minibatch costs
    its size times this. Eval mode, so that BatchNorm's running statistics are untouched (the
    counted operations are the same in both modes); the model's gradients are left as they were
    (Taylor importance may be reading them)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.randn(1, 3, resolution, resolution, device=device)
    if not backward:
        with torch.no_grad():
            flops = _count(lambda: model(x))
        model.train(was_training)
        return float(flops)
    params = list(model.parameters())
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        label = torch.zeros(1, dtype=torch.long, device=device)
        flops = _count(lambda: F.cross_entropy(model(x), label).backward())
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad
        model.train(was_training)
    return float(flops)


def training(model: nn.Module, resolution: int, *, examples: int) -> float:
    """FLOPs of ``examples`` training examples (forward and backward) through ``model``."""
    return per_example(model, resolution, backward=True) * examples


def forward(model: nn.Module, resolution: int, *, examples: int) -> float:
    """FLOPs of ``examples`` forward passes (BatchNorm recalibration, no gradients)."""
    return per_example(model, resolution, backward=False) * examples
