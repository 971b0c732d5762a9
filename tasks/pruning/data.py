"""Images for the pruning task: digits upsampled to RGB (quick tier), CIFAR-10 or an ImageNet folder (full tier)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from suite import data
from tasks.pruning.config import PruningConfig

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Images:
    """A training and a test set, iterated in minibatches; ``fingerprint`` names the data in cache keys."""

    train: Any  # a tensor pair (x, y) held in memory, or a torch Dataset read from disk
    test: Any
    n_classes: int
    fingerprint: dict[str, Any]

    @property
    def n_train(self) -> int:
        return len(self.train[1]) if isinstance(self.train, tuple) else len(self.train)

    def train_batches(self, batch_size: int, *, seed: int) -> Iterator[Batch]:
        """One epoch in a seeded random order; the last short batch is dropped (BatchNorm needs > 1)."""
        order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(seed))
        return _batches(self.train, order, batch_size, drop_last=True)

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        n = len(self.test[1]) if isinstance(self.test, tuple) else len(self.test)
        return _batches(self.test, torch.arange(n), batch_size, drop_last=False)


def _batches(source: Any, order: torch.Tensor, batch_size: int, *, drop_last: bool) -> Iterator[Batch]:
    if isinstance(source, tuple):
        x, y = source
        stop = len(order) - len(order) % batch_size if drop_last and len(order) >= batch_size else len(order)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]
        return
    sampler = torch.utils.data.SubsetRandomSampler(order.tolist()) if drop_last else order.tolist()
    loader = torch.utils.data.DataLoader(source, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                         num_workers=4, pin_memory=torch.cuda.is_available())
    yield from loader


def load_images(config: PruningConfig) -> Images:
    if config.dataset == "digits":
        return _digits(config)
    if config.dataset == "cifar10":
        return _cifar10(config)
    return _imagenet_folder(config)


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    return (x[:n], y[:n]) if n is not None else (x, y)


def upsample_rgb(images: np.ndarray, resolution: int) -> torch.Tensor:
    """(N, 1, h, w) grey images in [0, 1] to (N, 3, resolution, resolution), bilinear."""
    x = torch.as_tensor(images, dtype=torch.float32)
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous()


def _digits(config: PruningConfig) -> Images:
    s = data.digits(split_seed=config.split_seed)
    x_train, x_test = upsample_rgb(s.x_train, config.resolution), upsample_rgb(s.x_test, config.resolution)
    mean, std = x_train.mean(), x_train.std()
    train = _subset((x_train - mean) / std, torch.as_tensor(s.y_train), config.train_subset)
    test = _subset((x_test - mean) / std, torch.as_tensor(s.y_test), config.test_subset)
    fingerprint = {"x_train": train[0].numpy(), "y_train": train[1].numpy()}
    return Images(train, test, s.n_classes, fingerprint)


def _cifar10(config: PruningConfig) -> Images:
    if config.resolution != 32:
        raise ValueError(f"cifar10 is 32x32: set resolution=32 (got {config.resolution})")
    train_ds, test_ds, n_classes = data.torchvision_split("cifar10", data.data_root(config.data_dir),
                                                          download=config.download)

    def stack(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*torch.utils.data.DataLoader(ds, batch_size=1000))
        return torch.cat(xs), torch.cat(ys)

    train = _subset(*stack(train_ds), config.train_subset)
    test = _subset(*stack(test_ds), config.test_subset)
    return Images(train, test, n_classes, {"dataset": "cifar10", "n_train": len(train[1])})


def _imagenet_folder(config: PruningConfig) -> Images:
    """``data_dir`` with ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG`` (torchvision ImageFolder layout)."""
    import torchvision
    from torchvision import transforms

    root = data.data_root(config.data_dir)
    missing = [d for d in ("train", "val") if not (root / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"imagenet reads {root}/train and {root}/val (ImageFolder layout); missing: {missing}")
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    side = config.resolution
    train_tf = transforms.Compose([transforms.RandomResizedCrop(side), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), norm])
    test_tf = transforms.Compose([transforms.Resize(int(side * 256 / 224)), transforms.CenterCrop(side),
                                  transforms.ToTensor(), norm])
    train = torchvision.datasets.ImageFolder(str(root / "train"), transform=train_tf)
    test = torchvision.datasets.ImageFolder(str(root / "val"), transform=test_tf)
    n_classes, n_files = len(train.classes), len(train)
    if config.train_subset is not None:
        train = torch.utils.data.Subset(train, range(min(config.train_subset, len(train))))
    if config.test_subset is not None:
        test = torch.utils.data.Subset(test, range(min(config.test_subset, len(test))))
    return Images(train, test, n_classes, {"dataset": "imagenet", "root": str(root), "n_files": n_files,
                                           "n_train": len(train), "resolution": side})
