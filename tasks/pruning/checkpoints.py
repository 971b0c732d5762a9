"""Trained checkpoints on disk, so that each model is trained once per seed and reused across cells.

A checkpoint is keyed by everything that determines it (model, classes, data, epochs, optimizer
settings, seed, library versions) and built by :func:`suite.cache.build_once`: written
atomically, and under a file lock, so that of the cells of a parallel sweep that need the same
checkpoint one trains and the others wait and read. A load is checked: the file must unpickle as
a tensor dict with exactly the model's keys and shapes, else it is rebuilt with a log line.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.cache import build_once, cache_key, cache_root

log = logging.getLogger(__name__)
FAMILY = "pruning"


def checkpoint_path(parts: Mapping[str, Any], *, root: Path | None = None) -> Path:
    return (root or cache_root(FAMILY)) / f"{cache_key(parts)}.pt"


def cached_training(model: nn.Module, parts: Mapping[str, Any], train: Callable[[nn.Module], None], *,
                    root: Path | None = None) -> bool:
    """Fill ``model`` with the trained weights for ``parts``: from disk, or by ``train(model)`` and
    storing the result. Returns True when read from disk."""

    def build() -> dict[str, torch.Tensor]:
        train(model)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    built = build_once(checkpoint_path(parts, root=root), load=lambda path: load_checked(path, model), build=build,
                       save=torch.save)
    if built.hit:
        model.load_state_dict(built.value)
    return built.hit


def load_checked(path: Path, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The state dict in ``path`` if it matches ``model`` key for key and shape for shape, else None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        expected = model.state_dict()
        if not isinstance(state, dict) or set(state) != set(expected):
            raise ValueError("keys differ from the model's")
        bad = [k for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise ValueError(f"shapes differ from the model's for {bad[:3]}")
        return state
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable checkpoint %s (%s); retraining", path, exc)
        return None

