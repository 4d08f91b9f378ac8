"""Wide ResNet (Zagoruyko and Komodakis, 2016) with pre-activation blocks, for small images."""

from __future__ import annotations

from torch import Tensor, nn

from dcutmix.errors import ConfigError
from dcutmix.models._checks import positive_int
from dcutmix.models._init import init_conv_and_bn
from dcutmix.models._stages import StagedModel

__all__ = ["WideResNet"]


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; a 1x1 convolution on the shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus the identity or projected shortcut."""
        activated = self.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        # a projection sees the pre-activated input, as in the paper's reference implementation
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return out + shortcut


class WideResNet(StagedModel):
    """WRN-depth-k: three stages of (depth-4)/6 blocks, 16k, 32k and 64k channels wide.

    Hidden layers: 0 (input) and the outputs of stages 1-3.
    """

    hidden_layers = (0, 1, 2, 3)

    def __init__(
        self,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        positive_int(in_channels, "in_channels")
        positive_int(depth, "model.depth")
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(
                f"model.depth: {depth} does not fit a Wide ResNet; use 6n+4 (e.g. 28)"
            )
        positive_int(widen_factor, "model.widen_factor")
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not 0 <= dropout < 1
        ):
            raise ConfigError(f"model.dropout: {dropout!r} is not valid; use a number in [0, 1)")
        blocks_per_stage = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)

        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        stages = []
        for width, stage_stride in zip(widths, (1, 2, 2), strict=True):
            blocks = []
            for index in range(blocks_per_stage):
                stride = stage_stride if index == 0 else 1
                blocks.append(WideBasicBlock(channels, width, stride, float(dropout)))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(channels)
        self.relu_final = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        init_conv_and_bn(self)
        nn.init.zeros_(self.fc.bias)

    def parts(self) -> list:
        """Stem and stage 1, stage 2, stage 3, the head."""
        return [lambda x: self.layer1(self.conv1(x)), self.layer2, self.layer3, self._head]

    def _head(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.relu_final(self.bn_final(x)))
        return self.fc(x.flatten(1))
