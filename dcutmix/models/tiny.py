"""A small CNN for quick runs on CPU (the digits demo and the tests)."""

from __future__ import annotations

from torch import Tensor, nn

from dcutmix.models._checks import positive_int

__all__ = ["TinyNet"]


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyNet(nn.Module):
    """Four conv-BN-ReLU layers (width, width, 2x, 4x channels), global average pool, linear head.

    About 104k parameters at the default width of 32; global pooling lets any input size through.
    """

    def __init__(self, *, width: int = 32, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        positive_int(in_channels, "in_channels")
        positive_int(width, "model.width")
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width, stride=1),
            _conv_bn_relu(width, width, stride=2),
            _conv_bn_relu(width, 2 * width, stride=2),
            _conv_bn_relu(2 * width, 4 * width, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.fc(self.avgpool(self.features(x)).flatten(1))
