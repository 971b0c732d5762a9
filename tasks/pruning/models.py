"""FBNetV3 models from timm and what they cost: MACs, FLOPs, size, CPU latency."""

from __future__ import annotations

import statistics
import time

import timm
import torch
from torch import nn

from suite.meters import model_size
from tasks.pruning import flops


def build(name: str, n_classes: int, *, pretrained: bool = False) -> nn.Module:
    """A timm FBNetV3 with a ``n_classes``-way classifier.

    ``pretrained`` loads timm's ImageNet weights from the local cache only (no download here:
    the suite runs offline); the classifier is re-initialized for the task's classes.
    """
    if pretrained:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = timm.create_model(name, num_classes=n_classes, pretrained=pretrained)
    # timm initializes the classifier uniform in +-1/sqrt(n_classes), sized for 1000 classes; with 10
    # the initial logits reach tens (cross-entropy ~20) and the first epochs only undo that.
    classifier = model.get_classifier()
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)
    return model


def example_input(resolution: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, resolution, resolution)


def macs_and_params(model: nn.Module, resolution: int) -> tuple[float, float]:
    """Multiply-accumulates of one example's forward pass, and the parameter count.

    The MACs are PyTorch's FLOP counter halved: convolutions (groups accounted) and matrix products,
    the classifier included, and nothing else (norms, activations, pooling and the SE gates' products
    are not counted). torch-pruning's ``count_ops_and_params`` is not used for this: it matches
    modules by exact type, so on timm's FBNetV3 it skips the classifier (timm's ``Linear``) and the
    fused ``BatchNormAct2d`` layers while adding conv biases and pooling; the two agree within 0.2%
    here, but this one says exactly what it counts."""
    return flops.per_example(model, resolution, backward=False) / 2, float(sum(p.numel() for p in model.parameters()))


def forward_flops(model: nn.Module, resolution: int) -> float:
    """PyTorch's FLOP counter over one forward pass at batch 1 (2 FLOPs per multiply-accumulate)."""
    return flops.per_example(model, resolution, backward=False)


def cost(model: nn.Module, resolution: int) -> dict[str, float]:
    inference_flops = forward_flops(model, resolution)
    return {"compute/macs": inference_flops / 2, "compute/inference_flops": inference_flops, **model_size(model)}


@torch.inference_mode()
def latency_ms(model: nn.Module, resolution: int, *, batch: int, repeats: int, warmup: int = 3,
               channels_last: bool = True) -> float:
    """Median wall time of a CPU forward pass in eval mode, after ``warmup`` untimed passes, with the
    process's torch threads (the runner fixes them per cell)."""
    model = model.to("cpu").eval()
    x = example_input(resolution, batch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
