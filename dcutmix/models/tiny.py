"""A small CNN for quick runs on CPU (the digits demo and the tests)."""

from __future__ import annotations

from torch import Tensor, nn

from dcutmix.models._checks import positive_int
from dcutmix.models._stages import StagedModel

__all__ = ["TinyNet"]


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyNet(StagedModel):
    """Four conv-BN-ReLU layers (width, width, 2x, 4x channels), global average pool, linear head.

    About 104k parameters at the default width of 32; global pooling lets any input size through.
    Hidden layers: 0 (input) and the output of each of the four conv layers (a stage each).
    """

    hidden_layers = (0, 1, 2, 3, 4)

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

    def parts(self) -> list:
        """The four conv layers, then the head."""
        return [*self.features, self._head]

    def _head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))
