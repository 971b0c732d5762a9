"""Where a run computes: one resolver for every family's ``device`` key.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

from typing import Any

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> Any:
    """The ``torch.device`` for a config's ``device``: ``auto`` is cuda when torch sees a CUDA device, else cpu.

    ``cuda`` without a CUDA device is an error naming the fix (not a crash deep in the first
    ``.to(device)``).
    """
    import torch

    if choice not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {choice!r}")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use --set device=cpu or device=auto")
    return torch.device(choice)
