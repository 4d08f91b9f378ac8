"""Build a model by its config name; count its parameters."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from dcutmix.errors import ConfigError
from dcutmix.models.preact_resnet import PreActResNet18
from dcutmix.models.pyramidnet import PyramidNet
from dcutmix.models.regularisers import check_dropblock, check_stochastic_depth
from dcutmix.models.resnet import resnet18
from dcutmix.models.resnet_cifar import ResNetCifar
from dcutmix.models.tiny import TinyNet
from dcutmix.models.wide_resnet import WideResNet

__all__ = [
    "MODEL_NAMES",
    "build_model",
    "check_model_config",
    "count_parameters",
    "hidden_layers",
    "recorded_settings",
]

# He et al.'s CIFAR ResNets, one model group each (resnet20 ... resnet110)
_CIFAR_DEPTHS = (20, 32, 44, 56, 110)

# Each entry's keyword defaults are the published configuration; conf/model/<name>.yaml repeats
# them so a run's resolved config records every knob.
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "pyramidnet110": functools.partial(PyramidNet, depth=110, alpha=64, bottleneck=True),
    "pyramidnet200": functools.partial(PyramidNet, depth=200, alpha=240, bottleneck=True),
    "resnet18": resnet18,
    **{f"resnet{depth}": functools.partial(ResNetCifar, depth=depth) for depth in _CIFAR_DEPTHS},
    "preactresnet18": PreActResNet18,
    "wrn28_10": functools.partial(WideResNet, depth=28, widen_factor=10, dropout=0.0),
    "tiny": TinyNet,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

# Model knobs that results.json records beside the model's name: the report groups runs by them,
# and a published figure may need them (Random Erasing's ResNets are width 1, shortcut B). Other
# models' results.json stay as they were. The depth (which model.depth may change from the
# name's) and tiny's width tell the candidates of a proxy search (+sweep=nas_proxy) apart; tiny's
# width is recorded only when it is not tiny's default, so the runs of every earlier tiny sweep
# (which recorded no width) still share a row with today's default runs.
_RECORDED: dict[str, tuple[str, ...]] = {
    **{f"resnet{depth}": ("depth", "width", "shortcut") for depth in _CIFAR_DEPTHS},
}
_RECORDED_WHEN_CHANGED: dict[str, tuple[str, ...]] = {"tiny": ("width",)}

# arguments that come from the data, not from the model's own config group
_DATA_ARGUMENTS = frozenset({"num_classes", "in_channels"})


def model_settings(name: str) -> tuple[str, ...]:
    """The knobs ``build_model`` accepts for ``name`` besides num_classes and in_channels."""
    if name not in _BUILDERS:
        raise ConfigError(f"model.name: {name!r} is not a model; valid: {', '.join(MODEL_NAMES)}")
    parameters = inspect.signature(_BUILDERS[name]).parameters
    return tuple(sorted(key for key in parameters if key not in _DATA_ARGUMENTS))


def hidden_layers(name: str) -> tuple[int, ...]:
    """The layers at which model ``name`` can take and continue from a hidden state (0 = input)."""
    model_settings(name)  # names the valid models when ``name`` is not one
    builder = _BUILDERS[name]
    return getattr(builder, "func", builder).hidden_layers


def recorded_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The knobs of a model config group that results.json records (see ``_RECORDED``)."""
    name = config.get("name")
    recorded = {key: config.get(key) for key in _RECORDED.get(name, ())}
    if name in _RECORDED_WHEN_CHANGED:
        defaults = inspect.signature(_BUILDERS[name]).parameters
        for key in _RECORDED_WHEN_CHANGED[name]:
            if config.get(key) != defaults[key].default:
                recorded[key] = config.get(key)
    return recorded


def check_model_config(config: dict[str, Any]) -> None:
    """Check a model config group (name and knobs) without building it; ConfigError naming the key."""
    name = config.get("name")
    settings = model_settings(name)
    for key in config:
        if key != "name" and key not in settings:
            valid = ", ".join(settings) if settings else "none"
            raise ConfigError(f"model.{key}: not a setting of {name}; valid settings: {valid}")
    check_stochastic_depth(config.get("stochastic_depth"))
    check_dropblock(config.get("dropblock"))


def build_model(name: str, *, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """A freshly initialised model ``name`` with its knobs from ``kwargs`` (the model config group)."""
    settings = model_settings(name)
    for key in kwargs:
        if key not in settings:
            valid = ", ".join(settings) if settings else "none"
            raise ConfigError(f"model.{key}: not a setting of {name}; valid settings: {valid}")
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
