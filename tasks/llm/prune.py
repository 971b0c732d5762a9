"""One-shot pruning of the blocks' linear layers: by weight magnitude, and by Wanda.

* Magnitude (``pruned50``): half of each layer's weights, the smallest in absolute value, set to zero
  with no recovery: the naive baseline, unstructured per layer (``torch.nn.utils.prune.l1_unstructured``)
  or 2:4.
* Wanda (``wanda50``; Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language
  Models", 2023): a weight's score is its magnitude times the L2 norm, over calibration tokens, of the
  input feature it multiplies, ``S_ij = |W_ij| * ||X_j||``, and weights are compared within each output
  row (unstructured: the lowest half of every row; 2:4: two of every four consecutive inputs). No
  weight update, no gradient: one pass over calibration text. As in the paper's own implementation the
  layers are pruned in order: layer i's statistics are taken from its unpruned self, fed by layers
  0..i-1 already pruned, and its pruned output feeds layer i+1.

The masks are pure functions of scores (tested on hand-worked rows); :func:`wanda_prune` holds the state
(forward hooks on one decoder layer at a time).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PATTERNS = ("unstructured", "2:4")


def row_mask(scores: torch.Tensor, *, sparsity: float) -> torch.Tensor:
    """1 for the kept entries, 0 for the ``sparsity`` fraction of lowest scores of every row.

    Ties break by column (a stable sort), so the mask is the same on every run.
    """
    drop = int(scores.shape[-1] * sparsity)
    order = torch.sort(scores, dim=-1, stable=True).indices[..., :drop]
    return torch.ones_like(scores).scatter_(-1, order, 0.0)


def n_m_mask(scores: torch.Tensor, *, n: int = 2, m: int = 4) -> torch.Tensor:
    """1 for the ``n`` highest scores of every ``m`` consecutive entries along each row, else 0."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{n}:{m} pruning needs the input dimension divisible by {m}, got {cols}")
    groups = scores.reshape(rows, cols // m, m)
    keep = groups.topk(n, dim=-1).indices
    return torch.zeros_like(groups).scatter_(-1, keep, 1.0).reshape(rows, cols)


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """1 for the two largest-magnitude weights of every 4 consecutive ones along each row, else 0.

    Written here because torch's 2:4 helpers (``to_sparse_semi_structured``) need a CUDA device.
    """
    return n_m_mask(weight.detach().abs().float()).to(weight.dtype)


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||``: ``weight`` is (out, in), ``input_norm`` the (in,) L2 norms of the inputs."""
    return weight.detach().abs().float() * input_norm.float()[None, :]


def wanda_mask(weight: torch.Tensor, input_norm: torch.Tensor, *, pattern: str, sparsity: float = 0.5) -> torch.Tensor:
    """Wanda's keep-mask for one linear layer: per output row (``unstructured``) or per group of 4 (``2:4``)."""
    scores = wanda_scores(weight, input_norm)
    if pattern == "unstructured":
        return row_mask(scores, sparsity=sparsity)
    if pattern == "2:4":
        if sparsity != 0.5:
            raise ValueError(f"2:4 pruning removes exactly half of the weights, not {sparsity}")
        return n_m_mask(scores)
    raise ValueError(f"unknown prune pattern {pattern!r}; allowed: {', '.join(PATTERNS)}")


def prune_magnitude(linear: nn.Linear, *, pattern: str) -> None:
    """Zero half of ``linear.weight`` by magnitude (``unstructured`` over the layer, or ``2:4``)."""
    if pattern == "unstructured":
        from torch.nn.utils import prune

        prune.l1_unstructured(linear, "weight", amount=0.5)
        prune.remove(linear, "weight")  # fold the mask into the weight
    elif pattern == "2:4":
        with torch.no_grad():
            linear.weight.mul_(two_four_mask(linear.weight))
    else:
        raise ValueError(f"unknown prune pattern {pattern!r}; allowed: {', '.join(PATTERNS)}")


@torch.no_grad()
def wanda_prune(model: Any, calibration: torch.Tensor, *, pattern: str, sparsity: float = 0.5) -> int:
    """Prune the linear layers of ``model.model.layers`` by Wanda, calibrated on ``calibration``.

    ``calibration`` is a (sequences, tokens) tensor of token ids; it runs through the model as one
    batch (the quick tier's 8 x 256 tokens are a few MB of activations). Returns the number of
    calibration tokens seen by each layer.
    """
    if calibration.dim() != 2 or calibration.numel() == 0:
        raise ValueError("calibration must be a non-empty (sequences, tokens) tensor, "
                         f"got shape {tuple(calibration.shape)}")
    handles = [layer.register_forward_pre_hook(_prune_before_forward(pattern, sparsity), with_kwargs=True)
               for layer in model.model.layers]
    try:
        # The base model only: the output head's logits over the vocabulary are not needed.
        model.model(input_ids=calibration.to(model.device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return calibration.numel()


def _prune_before_forward(pattern: str, sparsity: float):
    """A decoder layer's pre-hook: run the layer once to gather input norms, prune it, let the real call proceed."""
    def hook(layer: nn.Module, args: tuple, kwargs: dict) -> None:
        linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
        sums = {m: torch.zeros(m.in_features, dtype=torch.float64, device=m.weight.device) for m in linears}

        def accumulate(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0].reshape(-1, module.in_features).double()
            sums[module] += (x * x).sum(dim=0)

        stats = [m.register_forward_pre_hook(accumulate) for m in linears]
        try:
            layer.forward(*args, **kwargs)  # .forward, not the call: this hook must not run again
        finally:
            for handle in stats:
                handle.remove()
        for m in linears:
            m.weight.mul_(wanda_mask(m.weight, sums[m].sqrt(), pattern=pattern, sparsity=sparsity).to(m.weight.dtype))

    return hook
