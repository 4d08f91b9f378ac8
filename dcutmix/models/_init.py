"""Weight initialisation shared by the CIFAR networks."""

from torch import nn


def init_conv_and_bn(model: nn.Module) -> None:
    """He (fan-out) normal for convolutions, unit scale and zero shift for batch norms."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
