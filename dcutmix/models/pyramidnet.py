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
from dcutmix.models._stages import StagedModel
from dcutmix.models.regularisers import (
    check_dropblock,
    check_stochastic_depth,
    drop_block,
    drop_branch,
    set_survival,
)

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
        #: probability that the residual branch is kept in training (stochastic depth)
        self.survival = 1.0

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus the (pooled, zero-padded) input."""
        out = self.conv1(self.bn1(x))
        out = self.bn3(self.conv2(self.relu(self.bn2(out))))
        out = drop_branch(out, self.survival, self.training)
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
        #: probability that the residual branch is kept in training (stochastic depth)
        self.survival = 1.0

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus the (pooled, zero-padded) input."""
        out = self.conv1(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.bn4(self.conv3(self.relu(self.bn3(out))))
        out = drop_branch(out, self.survival, self.training)
        shortcut = x if self.downsample is None else self.downsample(x)
        # not in place: under autocast the branch and the shortcut may differ in dtype
        return out + _widen(shortcut, out.shape[1])


class PyramidNet(StagedModel):
    """CIFAR-style PyramidNet: widths grow by ``alpha`` in total, evenly over all blocks.

    ``stochastic_depth`` (p_L, the last block's survival probability) keeps residual branch l of
    L with probability 1 - (l / L)(1 - p_L) in training; ``dropblock`` ({keep_prob, block_size})
    drops blocks of the outputs of the last two stages. Both are off (None) by default, add no
    parameters, and leave evaluation untouched. Hidden layers: 0 (input) and the outputs of
    stages 1-3.
    """

    hidden_layers = (0, 1, 2, 3)

    def __init__(
        self,
        *,
        depth: int = 110,
        alpha: float = 64,
        bottleneck: bool = True,
        stochastic_depth: float | None = None,
        dropblock: dict | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        positive_int(in_channels, "in_channels")
        blocks_per_stage = _check_shape(depth, alpha, bottleneck)
        last_survival = check_stochastic_depth(stochastic_depth)
        dropblock_settings = check_dropblock(dropblock)
        block = PyramidBottleneck if bottleneck else PyramidBasicBlock
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

        all_blocks = [b for stage in stages for b in stage]
        set_survival(all_blocks, last_survival)
        # Settings, not modules: the module tree (and the authors' checkpoints) stay unchanged.
        self.dropblock = dropblock_settings

        init_conv_and_bn(self)

    def parts(self) -> list:
        """Stem and stage 1, stage 2, stage 3, the head."""
        return [
            lambda x: self.layer1(self.bn1(self.conv1(x))),
            lambda x: self._drop_block(self.layer2(x)),
            lambda x: self._drop_block(self.layer3(x)),
            self._head,
        ]

    def _drop_block(self, x: Tensor) -> Tensor:
        if self.dropblock is None:
            return x
        return drop_block(
            x, self.dropblock["keep_prob"], self.dropblock["block_size"], self.training
        )

    def _head(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.relu_final(self.bn_final(x)))
        return self.fc(x.flatten(1))


def _check_shape(depth: int, alpha: float, bottleneck: bool) -> int:
    """Blocks per stage for a valid (depth, alpha, bottleneck), else a ConfigError naming the key."""
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
    return (depth - 2) // layers_per_block
