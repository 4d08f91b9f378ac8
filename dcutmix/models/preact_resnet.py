"""PreAct-ResNet-18 (He et al., ECCV 2016, "Identity Mappings in Deep Residual Networks").

The network of FMix's Fashion-MNIST and CIFAR tables, in the layout of FMix's public code: a 3x3
stride-1 stem of 64 channels followed by batch norm and ReLU, four stages of two pre-activation
blocks (BN-ReLU-conv3x3, twice) of 64, 128, 256 and 512 channels, a 1x1 convolution (no batch
norm) on the pre-activated input where a block changes the shape, no batch norm after the last
block, global average pooling and one linear layer (about 11.2M parameters with 10 classes).
"""

from __future__ import annotations

from torch import Tensor, nn

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

__all__ = ["PreActResNet18"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; the shortcut is the input or a 1x1 projection of its activation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )
        #: probability that the residual branch is kept in training (stochastic depth)
        self.survival = 1.0

    def forward(self, x: Tensor) -> Tensor:
        """Residual branch plus the identity or projected shortcut."""
        activated = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(activated))))
        out = drop_branch(out, self.survival, self.training)
        return out + (x if self.shortcut is None else self.shortcut(activated))


class PreActResNet18(StagedModel):
    """PreAct-ResNet-18 as FMix ran it (module doc); optional stochastic depth and DropBlock.

    ``stochastic_depth`` and ``dropblock`` act as in the PyramidNets (DropBlock on the outputs of
    the last two stages); both are off by default and add no parameters. Hidden layers: 0
    (input) and the outputs of stages 1-4.
    """

    hidden_layers = (0, 1, 2, 3, 4)

    def __init__(
        self,
        *,
        stochastic_depth: float | None = None,
        dropblock: dict | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        positive_int(num_classes, "num_classes")
        positive_int(in_channels, "in_channels")
        last_survival = check_stochastic_depth(stochastic_depth)
        self.dropblock = check_dropblock(dropblock)

        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        channels = 64
        stages = []
        for width, stride in zip((64, 128, 256, 512), (1, 2, 2, 2), strict=True):
            stages.append(
                nn.Sequential(PreActBlock(channels, width, stride), PreActBlock(width, width, 1))
            )
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        all_blocks = [b for stage in stages for b in stage]
        set_survival(all_blocks, last_survival)
        init_conv_and_bn(self)

    def parts(self) -> list:
        """Stem and stage 1, stages 2, 3 and 4, the head."""
        return [
            lambda x: self.layer1(self.relu(self.bn1(self.conv1(x)))),
            self.layer2,
            lambda x: drop_block_with(self.layer3(x), self.dropblock, self.training),
            lambda x: drop_block_with(self.layer4(x), self.dropblock, self.training),
            self._head,
        ]

    def _head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))
