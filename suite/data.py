"""Data sets shared by the tasks.

Quick tier: ``sklearn.datasets.load_digits`` (1,797 real 8x8 digits, shipped with
scikit-learn, no network). Full tier: torchvision's MNIST and CIFAR-10 read from a local
data directory (``data_dir`` in the config or ``SUITE_DATA``), downloaded only when asked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArraySplit:
    """A seeded train/test split held in memory."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


def digits(*, test_fraction: float = 0.2, split_seed: int = 0) -> ArraySplit:
    """sklearn digits as float32 images of shape (N, 1, 8, 8) in [0, 1], stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    return ArraySplit(x_tr, y_tr, x_te, y_te, n_classes=10)


def data_root(configured: str | None) -> Path:
    """The local data directory: the config's ``data_dir``, else ``SUITE_DATA``."""
    root = configured or os.environ.get("SUITE_DATA")
    if not root:
        raise FileNotFoundError("this tier reads data from a local directory: set data_dir in the config "
                                "(--set data_dir=PATH) or the SUITE_DATA environment variable")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} does not exist")
    return path


_VISION = {
    "mnist": ("MNIST", ((0.1307,), (0.3081,)), 10),
    "cifar10": ("CIFAR10", ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), 10),
}


def torchvision_split(name: str, root: Path, *, download: bool = False) -> tuple[Any, Any, int]:
    """(train, test, n_classes) torchvision datasets, normalized; a clear error when files are missing."""
    import torchvision
    from torchvision import transforms

    cls_name, (mean, std), n_classes = _VISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    try:
        train = cls(str(root), train=True, transform=tf, download=download)
        test = cls(str(root), train=False, transform=tf, download=download)
    except RuntimeError as exc:
        folder = root / cls_name
        if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
            raise ValueError(f"{cls_name} files under {folder} are corrupt or truncated ({exc}); delete {folder} and "
                             "place fresh torchvision files there, or run with --set download=true where the "
                             "network allows") from None
        raise FileNotFoundError(f"{cls_name} not found under {root} ({exc}); place the torchvision files there "
                                "or run with --set download=true where the network allows") from None
    except (ValueError, EOFError, OSError) as exc:  # a file that parses as the wrong thing
        raise ValueError(f"{cls_name} files under {root / cls_name} are unreadable ({exc}); delete them and place "
                         "fresh torchvision files there, or run with --set download=true") from None
    return train, test, n_classes
