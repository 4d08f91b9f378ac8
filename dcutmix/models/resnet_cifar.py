"""The CIFAR ResNets of He et al. (CVPR 2016, section 4.2): ResNet-20, 32, 44, 56 and 110.

Three stages of n basic blocks (depth 6n + 2) with 16, 32 and 64 channels (times ``width``),
the second and third starting with a stride-2 block, global average pooling, one linear layer.

Where a block changes the shape, its shortcut is one of:

- ``B`` (the default): a 1x1 stride-2 convolution and a batch norm. Random Erasing's
  Fashion-MNIST code, whose table the ``fmnist_resnet*`` presets compare with, builds its
  ResNets this way, so the figures are comparable;
- ``A``: He et al.'s own CIFAR choice, parameter-free: the input subsampled by 2 and
  zero-padded with the missing channels (appended after the existing ones); the parameter counts
  are then exactly the paper's (0.27M, 0.46M, 0.66M, 0.85M, 1.7M).

(That code builds its depths of 44 and more from bottleneck blocks, (depth - 2) / 6 per stage;
these are He et al.'s basic-block networks at every depth.)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dcutmix.errors import ConfigError
from dcutmix.models._checks import positive_int
from dcutmix.models._init import init_conv_and_bn
from dcutmix.models._stages import StagedModel
from dcutmix.models.regularisers import (
    check_dropblock,
    check_stochastic_depth,
    drop_block_with,
    drop_branch,
    set_survival,
)

__all__ = ["SHORTCUTS", "ResNetCifar"]

SHORTCUTS = ("A", "B")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class _PaddedIdentity(nn.Module):
    """Option A: subsample by ``stride`` and append zero channels up to ``out_channels``."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (He et al.'s original block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = _PaddedIdentity(out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )
        #: probability that the residual branch is kept in training (stochastic depth)
        self.survival = 1.0

    def forward(self, x: Tensor) -> Tensor:
        """ReLU of the residual branch plus the shortcut."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = drop_branch(self.bn2(self.conv2(out)), self.survival, self.training)
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


def _check_shape(depth: int, width: int, shortcut: str) -> int:
    """Blocks per stage for a valid (depth, width, shortcut), else a ConfigError naming the key."""
    positive_int(depth, "model.depth")
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"model.depth: {depth} does not fit a CIFAR ResNet; use 6n+2 (e.g. 20)")
    positive_int(width, "model.width")
    if shortcut not in SHORTCUTS:
        raise ConfigError(
            f"model.shortcut: {shortcut!r} is not valid; use A (zero-padded identity) or "
            "B (1x1 convolution and batch norm)"
        )
    return (depth - 2) // 6


class ResNetCifar(StagedModel):
    """He et al.'s CIFAR ResNet-depth, 16w/32w/64w channels; ``shortcut`` A or B (module doc).

    ``stochastic_depth`` and ``dropblock`` act as in the PyramidNets (branch l of L survives
    with 1 - (l / L)(1 - p_L); DropBlock on the outputs of the last two stages); both are off by
    default and add no parameters. Hidden layers: 0 (input) and the outputs of stages 1-3.
    """

    hidden_layers = (0, 1, 2, 3)

    def __init__(
        self,
        *,
        depth: int = 20,
        width: int = 1,
        shortcut: str = "B",
        stochastic_depth: float | None = None,
        dropblock: dict | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        positive_int(in_channels, "in_channels")
        blocks_per_stage = _check_shape(depth, width, shortcut)
        last_survival = check_stochastic_depth(stochastic_depth)
        self.dropblock = check_dropblock(dropblock)

        channels = 16 * width
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        for stage_width, stage_stride in zip((16, 32, 64), (1, 2, 2), strict=True):
            blocks = []
            for index in range(blocks_per_stage):
                stride = stage_stride if index == 0 else 1
                blocks.append(BasicBlock(channels, stage_width * width, stride, shortcut))
                channels = stage_width * width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        all_blocks = [b for stage in stages for b in stage]
        set_survival(all_blocks, last_survival)
        init_conv_and_bn(self)

    def parts(self) -> list:
        """Stem and stage 1, stage 2, stage 3, the head."""
        return [
            lambda x: self.layer1(self.relu(self.bn1(self.conv1(x)))),
            lambda x: drop_block_with(self.layer2(x), self.dropblock, self.training),
            lambda x: drop_block_with(self.layer3(x), self.dropblock, self.training),
            self._head,
        ]

    def _head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))
