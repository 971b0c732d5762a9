"""Structured channel pruning with torch-pruning, and the search for the ratio that meets a MACs target.

Two ways to spread the cut, both torch-pruning's:

* local (``global_pruning=False``): every prunable group loses the same fraction of its channels,
  so the pruned architecture, and with it the MACs, depends on the ratio alone and not on the
  criterion or the weights. The ratio is searched once per (model, target, input size, classes)
  on throw-away copies and cached; the criteria decide *which* channels go.
* global (``global_pruning=True``): channels are ranked across all groups (scores normalized per
  group by their mean, torch-pruning's default), so how many each layer loses depends on the
  trained weights and the criterion. The search then runs on the run's own model: each guess
  prunes a copy with the run's criterion, and the copy that meets the target is the result.
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

# Global pruning may not empty a layer: each group keeps at least this fraction of its channels.
GLOBAL_MAX_RATIO = 0.9


def make_pruner(model: nn.Module, importance: tp.importance.Importance, *, ratio: float, steps: int,
                resolution: int, global_pruning: bool = False) -> tp.pruner.BasePruner:
    """torch-pruning's pruner over ``model``, scoring channels with ``importance`` (a criterion's,
    :mod:`tasks.pruning.methods.criteria`); its dependency graph keeps SE blocks, depthwise convs and
    residual additions consistent. The classifier's outputs (the classes) are never pruned."""
    device = next(model.parameters()).device
    return tp.pruner.BasePruner(
        model, example_input(resolution).to(device), importance=importance,
        pruning_ratio=ratio, iterative_steps=steps, global_pruning=global_pruning,
        max_pruning_ratio=GLOBAL_MAX_RATIO if global_pruning else 1.0,
        ignored_layers=[model.get_classifier()],
    )


def pruned_copy(model: nn.Module, importance: tp.importance.Importance, ratio: float, resolution: int, *,
                global_pruning: bool) -> nn.Module:
    """A copy of ``model`` pruned by ``ratio`` in one step (the original is left untouched). The
    copy carries the original's gradients, which Taylor importance reads."""
    clone = copy.deepcopy(model)
    for mine, theirs in zip(clone.parameters(), model.parameters()):
        mine.grad = None if theirs.grad is None else theirs.grad.clone()
    make_pruner(clone, importance, ratio=ratio, steps=1, resolution=resolution, global_pruning=global_pruning).step()
    clone.zero_grad(set_to_none=True)
    return clone


def search_ratio(macs_at: Callable[[float], float], full_macs: float, target_macs: float, *, tolerance: float,
                 max_iter: int = 20) -> tuple[float, float]:
    """The ratio whose pruned MACs (``macs_at(ratio)``) are within ``tolerance`` of the target (aiming
    at a quarter of it). MACs fall as the ratio grows, roughly as (1 - ratio)^2 (convolutions lose
    input and output channels), so the first guess is 1 - sqrt(target / MACs) and the next ones
    interpolate inside the bracket (regula falsi, Illinois variant). Returns (ratio, MACs)."""
    if full_macs <= target_macs * (1 + tolerance):
        return 0.0, full_macs
    lo, hi = (0.0, full_macs), (0.95, 0.0)  # the upper end's MACs are a lower bound, not measured
    guess, best, side = 1 - (target_macs / full_macs) ** 0.5, lo, 0
    for _ in range(max_iter):
        macs = macs_at(guess)
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


def local_macs_at(model: nn.Module, resolution: int) -> Callable[[float], float]:
    """MACs of ``model`` pruned locally by a ratio (any criterion gives the same architecture)."""

    def macs_at(ratio: float) -> float:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            clone = pruned_copy(model.cpu().eval(), tp.importance.RandomImportance(), ratio, resolution,
                                global_pruning=False)
        return macs_and_params(clone, resolution)[0]

    return macs_at


def cached_local_ratio(model_name: str, build: Callable[[], nn.Module], target_macs: float, *, resolution: int,
                       n_classes: int, tolerance: float) -> tuple[float, float]:
    """:func:`search_ratio` for local pruning of a fresh ``build()``, cached on disk: it depends on
    the architecture only."""
    parts = {"what": "pruning-ratio", "model": model_name, "target_macs": target_macs, "resolution": resolution,
             "n_classes": n_classes, "tolerance": tolerance, "torch_pruning": tp.__version__}

    def compute() -> dict[str, np.ndarray]:
        model = build()
        ratio, macs = search_ratio(local_macs_at(model, resolution), macs_and_params(model, resolution)[0],
                                   target_macs, tolerance=tolerance)
        return {"ratio": np.array(ratio), "macs": np.array(macs)}

    found = cached_arrays(parts, compute, shapes={"ratio": (), "macs": ()}, family="pruning")
    return float(found.arrays["ratio"]), float(found.arrays["macs"])


def prune_globally_to(model: nn.Module, importance: Callable[[], tp.importance.Importance], target_macs: float, *,
                      resolution: int, tolerance: float) -> tuple[nn.Module, float]:
    """``model`` pruned globally to ``target_macs`` within ``tolerance``, each guess scored by a fresh
    ``importance()``: the copy that met the target, and its ratio (the fraction of all channels
    torch-pruning removed).
    Random importance draws from torch's generator, so every guess starts from the same state."""
    rng = torch.random.get_rng_state()
    tried: dict[float, nn.Module] = {}

    def macs_at(ratio: float) -> float:
        torch.random.set_rng_state(rng)
        tried.clear()  # keep one copy at a time: the search returns its best, which is re-made below
        tried[ratio] = pruned_copy(model, importance(), ratio, resolution, global_pruning=True)
        return macs_and_params(tried[ratio], resolution)[0]

    try:
        ratio, _ = search_ratio(macs_at, macs_and_params(model, resolution)[0], target_macs, tolerance=tolerance)
    except RuntimeError as exc:
        # Seen on a 32-image smoke run (Taylor, iterative): at the last step any ratio above zero cut
        # 17% of the MACs at once, the channels tied at the lowest score going together, so no ratio
        # landed within the tolerance.
        raise RuntimeError(f"global pruning ({type(importance()).__name__}): {exc}; the MACs move in steps when "
                           "channel scores tie: use local pruning, more taylor_batches, or a wider macs_tolerance"
                           ) from exc
    if ratio not in tried:
        macs_at(ratio)
    return tried[ratio], ratio
