"""Trained checkpoints on disk, so that each model is trained once per seed and reused across cells.

A checkpoint is keyed by everything that determines it (model, classes, data, epochs, optimizer
settings, seed, library versions) and written atomically by :func:`suite.cache.atomic_write`.
A load is checked: the file must unpickle as a tensor dict with exactly the model's keys and
shapes, else it is rebuilt with a log line. Cells of a parallel sweep that need the same
checkpoint take a file lock, so one trains and the others wait and read.
"""

from __future__ import annotations

import fcntl
import logging
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.cache import atomic_write, cache_key, cache_root

log = logging.getLogger(__name__)
FAMILY = "pruning"


def checkpoint_path(parts: Mapping[str, Any], *, root: Path | None = None) -> Path:
    return (root or cache_root(FAMILY)) / f"{cache_key(parts)}.pt"


def cached_training(model: nn.Module, parts: Mapping[str, Any], train: Callable[[nn.Module], None], *,
                    root: Path | None = None) -> bool:
    """Fill ``model`` with the trained weights for ``parts``: from disk, or by ``train(model)`` and
    storing the result. Returns True when read from disk."""
    path = checkpoint_path(parts, root=root)
    with _locked(path):
        state = load_checked(path, model)
        if state is not None:
            model.load_state_dict(state)
            return True
        train(model)
        with atomic_write(path) as f:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f)
        return False


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


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
