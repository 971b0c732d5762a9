"""Networks of the labeldp task: the dpsgd task's small digits CNN, and a CIFAR-10 ResNet-18.

Label DP does not clip per-example gradients, so BatchNorm is fine here (unlike DP-SGD).
"""

from __future__ import annotations

from torch import nn

from tasks.dpsgd.models import digits_cnn


def resnet18(n_classes: int = 10) -> nn.Module:
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), the CIFAR variant the paper trains."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=n_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


MODELS = {"digits_cnn": digits_cnn, "resnet18": resnet18}
