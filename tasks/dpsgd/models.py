"""The CNNs of the dpsgd task: a small one for 8x8 digits, and the Opacus paper's MNIST and CIFAR-10 CNNs.

All use tanh and no BatchNorm (batch statistics would mix examples and break per-example
privacy); the MNIST and CIFAR-10 architectures follow the CNNs used in the Opacus paper's
benchmarks (after Papernot et al., "Tempered Sigmoid Activations for Deep Learning with
Differential Privacy").
"""

from __future__ import annotations

from torch import nn


def digits_cnn(n_classes: int = 10) -> nn.Module:
    """1x8x8 -> 10 classes, about 6k parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),   # 16x4x4
        nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),  # 32x2x2
        nn.Flatten(), nn.Linear(128, n_classes),
    )


def mnist_cnn(n_classes: int = 10) -> nn.Module:
    """1x28x28 MNIST CNN (two strided convolutions, two linear layers)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, n_classes),
    )


def cifar10_cnn(n_classes: int = 10) -> nn.Module:
    """3x32x32 CIFAR-10 CNN: three blocks of two 3x3 convolutions and average pooling."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.Tanh(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.Tanh(),
                nn.AvgPool2d(2)]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), nn.Flatten(),
                         nn.Linear(128 * 4 * 4, 128), nn.Tanh(), nn.Linear(128, n_classes))


MODELS = {"digits": digits_cnn, "mnist": mnist_cnn, "cifar10": cifar10_cnn}
