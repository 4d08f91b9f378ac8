"""torchvision's ResNet-18 with the CIFAR stem, run in parts (imported only when one is built)."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from dcutmix.models._checks import positive_int
from dcutmix.models._stages import HiddenMix, StagedModel

__all__ = ["CifarResNet18"]


class CifarResNet18(ResNet):
    """torchvision's ResNet-18 (same module names) with the CIFAR stem, run in parts.

    Hidden layers: 0 (input) and the outputs of stages 1-4.
    """

    hidden_layers = (0, 1, 2, 3, 4)
    forward_to = StagedModel.forward_to
    forward_from = StagedModel.forward_from
    _check_layer = StagedModel._check_layer

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3) -> None:
        positive_int(in_channels, "in_channels")
        super().__init__(
            BasicBlock, [2, 2, 2, 2], num_classes=positive_int(num_classes, "num_classes")
        )
        # The ImageNet stem (7x7 stride 2, then max-pool) would shrink 32x32 inputs to 8x8 before
        # the first block; CIFAR ResNets keep full resolution there.
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

    def parts(self) -> list:
        """Stem and stage 1, stages 2, 3 and 4, the head."""
        return [
            lambda x: self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))),
            self.layer2,
            self.layer3,
            self.layer4,
            lambda x: self.fc(self.avgpool(x).flatten(1)),
        ]

    def forward(self, x: Tensor, hidden_mix: HiddenMix | None = None) -> Tensor:
        """Logits of shape (batch, num_classes); ``hidden_mix`` changes the state at its layer."""
        return StagedModel.forward(self, x, hidden_mix)
