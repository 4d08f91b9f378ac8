"""ResNet-18 with the small-image stem: a 3x3 stride-1 first convolution and no max-pool."""

from __future__ import annotations

from torch import nn

from dcutmix.models._checks import positive_int

__all__ = ["resnet18"]


def resnet18(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for 32x32 images (about 11.2M parameters with 10 classes)."""
    positive_int(in_channels, "in_channels")
    from torchvision.models import resnet18

    model = resnet18(num_classes=positive_int(num_classes, "num_classes"))
    # The ImageNet stem (7x7 stride 2, then max-pool) would shrink 32x32 inputs to 8x8 before
    # the first block; CIFAR ResNets keep full resolution there.
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
