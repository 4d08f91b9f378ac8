"""Image classifiers for the mixing experiments: PyramidNet, ResNet-18, He et al.'s CIFAR ResNets
(ResNet-20 to 110), PreAct-ResNet-18, WRN-28-10 and a tiny CNN.

Build one by its config name::

    model = build_model("pyramidnet200", num_classes=100)

Every model takes ``in_channels`` and ``num_classes``, runs on any device and memory format,
and pools globally, so image sizes other than 32x32 work too.
"""

from dcutmix.models.authors import load_authors_state_dict
from dcutmix.models.build import (
    MODEL_NAMES,
    build_model,
    check_model_config,
    count_parameters,
    hidden_layers,
    model_settings,
    recorded_settings,
)
from dcutmix.models.preact_resnet import PreActResNet18
from dcutmix.models.pyramidnet import PyramidNet
from dcutmix.models.regularisers import DropBlock
from dcutmix.models.resnet_cifar import ResNetCifar
from dcutmix.models.tiny import TinyNet
from dcutmix.models.wide_resnet import WideResNet

__all__ = [
    "MODEL_NAMES",
    "DropBlock",
    "PreActResNet18",
    "PyramidNet",
    "ResNetCifar",
    "TinyNet",
    "WideResNet",
    "build_model",
    "check_model_config",
    "count_parameters",
    "hidden_layers",
    "load_authors_state_dict",
    "model_settings",
    "recorded_settings",
]
