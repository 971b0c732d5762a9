"""FBNetV3 models from timm and what they cost: MACs, FLOPs, size, CPU latency."""

from __future__ import annotations

import statistics
import time

import timm
import torch
import torch_pruning as tp
from torch import nn

from suite.meters import count_flops, model_size


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
    """torch-pruning's counter at batch 1 (its "ops" are multiply-accumulates of convs and linears
    plus one op per element of norms, activations and pools)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_input(resolution).to(device))
    model.train(was_training)
    return float(macs), float(params)


def forward_flops(model: nn.Module, resolution: int) -> float:
    """PyTorch's FLOP counter over one forward pass at batch 1 (2 FLOPs per multiply-accumulate)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        flops = count_flops(lambda: model(example_input(resolution).to(device)))
    model.train(was_training)
    return float(flops)


def cost(model: nn.Module, resolution: int) -> dict[str, float]:
    macs, _ = macs_and_params(model, resolution)
    return {"compute/macs": macs, "compute/inference_flops": forward_flops(model, resolution), **model_size(model)}


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
