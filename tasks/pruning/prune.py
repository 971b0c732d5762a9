"""Structured channel pruning with torch-pruning, and the search for the ratio that meets a MACs target.

Pruning is local (``global_pruning=False``): every prunable group loses the same fraction of its
channels, so the pruned architecture, and with it the MACs, depends on the ratio alone and not on
the criterion or the weights. The ratio is therefore searched once per (model, target, input
size, classes) on a throw-away copy and cached; the criteria decide *which* channels go.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from suite.cache import cached_arrays
from tasks.pruning.models import example_input, macs_and_params


def importance(criterion: str) -> tp.importance.Importance:
    """magnitude: L2 norm over each channel's whole dependency group; taylor: |w * dL/dw| summed over
    the group (needs gradients); random: the control."""
    if criterion == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if criterion == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown pruning criterion {criterion!r}: use magnitude, taylor or random")


def make_pruner(model: nn.Module, criterion: str, *, ratio: float, steps: int, resolution: int) -> tp.pruner.BasePruner:
    """torch-pruning's pruner over ``model``; its dependency graph keeps SE blocks, depthwise convs and
    residual additions consistent. The classifier's outputs (the classes) are never pruned."""
    device = next(model.parameters()).device
    return tp.pruner.BasePruner(
        model, example_input(resolution).to(device), importance=importance(criterion),
        pruning_ratio=ratio, iterative_steps=steps, global_pruning=False,
        ignored_layers=[model.get_classifier()],
    )


def macs_at_ratio(model: nn.Module, ratio: float, resolution: int) -> float:
    """MACs of a copy of ``model`` pruned by ``ratio`` (the original is left untouched)."""
    clone = copy.deepcopy(model).cpu().eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        make_pruner(clone, "random", ratio=ratio, steps=1, resolution=resolution).step()
    return macs_and_params(clone, resolution)[0]


def search_ratio(model: nn.Module, target_macs: float, resolution: int, *, tolerance: float,
                 max_iter: int = 20) -> tuple[float, float]:
    """The per-layer ratio whose pruned MACs are within ``tolerance`` of the target (aiming at a
    quarter of it). MACs fall as the ratio grows, roughly as (1 - ratio)^2 (convolutions lose input
    and output channels), so the first guess is 1 - sqrt(target / MACs) and the next ones
    interpolate inside the bracket (regula falsi, Illinois variant); each guess costs a pruning of a
    copy. Returns (ratio, MACs at that ratio)."""
    full = macs_and_params(model, resolution)[0]
    if full <= target_macs * (1 + tolerance):
        return 0.0, full
    lo, hi = (0.0, full), (0.95, 0.0)  # the upper end's MACs are a lower bound, not measured
    guess, best, side = 1 - (target_macs / full) ** 0.5, lo, 0
    for _ in range(max_iter):
        macs = macs_at_ratio(model, guess, resolution)
        if abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (guess, macs)
        if abs(macs - target_macs) <= tolerance / 4 * target_macs:
            break
        if macs > target_macs:
            lo, side = (guess, macs), (side if side < 0 else 0) - 1
        else:
            hi, side = (guess, macs), (side if side > 0 else 0) + 1
        # Illinois: halve the far end's distance to the target when one end keeps moving
        lo_gap = (lo[1] - target_macs) / (2 if side > 1 else 1)
        hi_gap = (target_macs - hi[1]) / (2 if side < -1 else 1)
        guess = lo[0] + (hi[0] - lo[0]) * lo_gap / (lo_gap + hi_gap)
    if abs(best[1] - target_macs) > tolerance * target_macs:
        raise RuntimeError(f"no pruning ratio brings the MACs within {tolerance:.0%} of {target_macs:.4g}: "
                           f"closest {best[1]:.4g} at ratio {best[0]:.4f}")
    return best


def cached_ratio(model_name: str, build: Callable[[], nn.Module], target_macs: float, *, resolution: int,
                 n_classes: int, tolerance: float) -> tuple[float, float]:
    """:func:`search_ratio` on a fresh ``build()``, cached on disk: it depends on the architecture only."""
    parts = {"what": "pruning-ratio", "model": model_name, "target_macs": target_macs, "resolution": resolution,
             "n_classes": n_classes, "tolerance": tolerance, "torch_pruning": tp.__version__}

    def compute() -> dict[str, np.ndarray]:
        ratio, macs = search_ratio(build(), target_macs, resolution, tolerance=tolerance)
        return {"ratio": np.array(ratio), "macs": np.array(macs)}

    found = cached_arrays(parts, compute, shapes={"ratio": (), "macs": ()}, family="pruning")
    return float(found.arrays["ratio"]), float(found.arrays["macs"])
