"""ResNet-18 with the small-image stem: a 3x3 stride-1 first convolution and no max-pool."""

from __future__ import annotations

from torch import nn

__all__ = ["resnet18"]


def resnet18(*, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for 32x32 images (about 11.2M parameters with 10 classes)."""
    # torchvision is imported here, not at start-up: it costs seconds and most runs never need it
    from dcutmix.models._cifar_resnet import CifarResNet18

    return CifarResNet18(num_classes=num_classes, in_channels=in_channels)


# the same as CifarResNet18.hidden_layers, known without importing torchvision
resnet18.hidden_layers = (0, 1, 2, 3, 4)
