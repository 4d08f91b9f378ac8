"""PyramidNet for small images (Han et al., CVPR 2017), the CutMix and DCutMix authors' backbone.

Module and parameter names follow the authors' released code, so their published CIFAR
checkpoints load with ``strict=True`` once the DataParallel ``module.`` prefix is stripped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dcutmix.errors import ConfigError
from dcutmix.models._checks import positive_int
from dcutmix.models._init import init_conv_and_bn

__all__ = ["PyramidBasicBlock", "PyramidBottleneck", "PyramidNet"]


def _widen(shortcut: Tensor, channels: int) -> Tensor:
    """Zero-pad ``shortcut`` along channels up to ``channels`` (the paper's parameter-free shortcut)."""
    missing = channels - shortcut.shape[1]
    if missing == 0:
        return shortcut
    # F.pad makes the zeros on the shortcut's own device, dtype and memory format, and traces
    # cleanly under torch.compile; the authors' code allocated them with .cuda() instead.
    return F.pad(shortcut, (0, 0, 0, 0, 0, missing))


def _downsample(stride: int) -> nn.Module | None:
    # ceil_mode keeps odd feature maps the same size as the strided convolution's output
    return nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride != 1 else None


class PyramidBasicBlock(nn.Module):
    """Two 3x3 convolutions, BN first and no ReLU before the first convolution."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(stride)

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus the (pooled, zero-padded) input."""
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(self.relu(self.bn2(out))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + _widen(shortcut, out.shape[1])


class PyramidBottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions with four BNs; the output has 4x the planes."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(stride)

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus the (pooled, zero-padded) input."""
        out = self.conv1(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.bn4(self.conv3(self.relu(self.bn3(out))))
        shortcut = x if self.downsample is None else self.downsample(x)
        # not in place: under autocast the branch and the shortcut may differ in dtype
        return out + _widen(shortcut, out.shape[1])


class PyramidNet(nn.Module):
    """CIFAR-style PyramidNet: widths grow by ``alpha`` in total, evenly over all blocks."""

    def __init__(
        self,
        *,
        depth: int = 110,
        alpha: float = 64,
        bottleneck: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        positive_int(in_channels, "in_channels")
        positive_int(depth, "model.depth")
        if not isinstance(bottleneck, bool):
            raise ConfigError(f"model.bottleneck: {bottleneck!r} is not valid; use true or false")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
            raise ConfigError(f"model.alpha: {alpha!r} is not valid; use a positive number")
        layers_per_block = 9 if bottleneck else 6
        if depth < 2 + layers_per_block or (depth - 2) % layers_per_block:
            kind = "bottleneck" if bottleneck else "basic-block"
            raise ConfigError(
                f"model.depth: {depth} does not fit a {kind} PyramidNet; "
                f"use {layers_per_block}n+2 (e.g. {layers_per_block * 12 + 2})"
            )
        block = PyramidBottleneck if bottleneck else PyramidBasicBlock
        blocks_per_stage = (depth - 2) // layers_per_block
        step = alpha / (3 * blocks_per_stage)

        stem = 16
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        # The running width stays fractional and each block rounds it (Python's round, as the
        # authors do), so the channel counts and hence the checkpoints match theirs exactly.
        width = float(stem)
        channels = stem
        stages = []
        for stage_stride in (1, 2, 2):
            blocks = []
            for index in range(blocks_per_stage):
                width += step
                stride = stage_stride if index == 0 else 1
                blocks.append(block(channels, round(width), stride))
                channels = round(width) * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(channels)
        self.relu_final = nn.ReLU(inplace=True)
        # adaptive (the authors used a fixed 8x8 pool) so any image size works; no parameters
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        init_conv_and_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape (batch, num_classes)."""
        x = self.bn1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(self.relu_final(self.bn_final(x)))
        return self.fc(x.flatten(1))
