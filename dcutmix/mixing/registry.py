"""The one registry of mixing modes: names, classes, the settings only some modes have, and
``build_mixer``, the way a config or a user turns a mode's name into a mixer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dcutmix.errors import InputError
from dcutmix.mixing.base import Mixer
from dcutmix.mixing.cutout import Cutout
from dcutmix.mixing.fmix import FMix
from dcutmix.mixing.k_image import DCutMix, DMixup, NaiveCutMix, NaiveMixup
from dcutmix.mixing.manifold import ManifoldMixup
from dcutmix.mixing.random_erasing import RandomErasing
from dcutmix.mixing.resizemix import ResizeMix
from dcutmix.mixing.two_image import CutMix, Mixup, NoMix

#: every mode, in the order tables list them: the paper's two-image and K-image modes, then the
#: field's baselines; a new mode is one more class here
_MIXERS: dict[str, type[Mixer]] = {
    cls.mode: cls
    for cls in (
        NoMix,
        Mixup,
        CutMix,
        NaiveMixup,
        NaiveCutMix,
        DMixup,
        DCutMix,
        Cutout,
        RandomErasing,
        FMix,
        ResizeMix,
        ManifoldMixup,
    )
}
MIXING_MODES: tuple[str, ...] = tuple(_MIXERS)
#: settings only some modes have (a class's ``options``), and the modes that have them; a hidden-state
#: mixer's ``layers`` is its own argument of ``build_mixer``
MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    name: tuple(mode for mode, cls in _MIXERS.items() if name in getattr(cls, "options", ()))
    for name in dict.fromkeys(
        option for cls in _MIXERS.values() for option in getattr(cls, "options", ())
    )
    if name != "layers"
}


def mode_settings(mixer: Mixer) -> dict[str, object]:
    """The settings only ``mixer``'s mode has (e.g. cutout's length), as plain values."""
    values = {name: getattr(mixer, name) for name in getattr(mixer, "options", ())}
    return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}


def build_mixer(
    mode: str,
    *,
    num_classes: int | None = None,
    k: int | None = None,
    alpha: float | None = None,
    prob: float | None = None,
    per_sample: bool | None = None,
    layers: tuple[int, ...] | None = None,
    **options: object,
) -> Mixer:
    """The mixer for ``mode`` (one of MIXING_MODES); unset settings take the mode's reference values.

    ``num_classes``, ``k``, ``alpha``, ``prob`` and ``per_sample`` are the ``Mixer`` arguments;
    None means the mode's default (each class's docstring names it and the paper the mode comes
    from). ``options`` are the settings only some modes have (MODE_OPTIONS: length, area,
    aspect, fill, attempts, decay, scale); None means unset. ``layers`` is the hidden-state mixers' (manifold_mixup) list of
    layers. A bad value raises ``InputError`` (a ``ValueError``) whose ``key`` names the argument.
    """
    if mode not in _MIXERS:
        raise InputError(
            "mode", f"unknown mixing mode {mode!r}; choose one of {', '.join(MIXING_MODES)}"
        )
    for name, value in options.items():
        if name not in MODE_OPTIONS:
            raise InputError(
                name, f"not a mixing setting; the optional ones are {', '.join(MODE_OPTIONS)}"
            )
        if value is not None and mode not in MODE_OPTIONS[name]:
            raise InputError(
                name,
                f"only {', '.join(MODE_OPTIONS[name])} has this setting, not {mode}; leave it unset",
            )
    extra = {name: value for name, value in options.items() if value is not None}
    # only the hidden-state mixers take layers
    if layers is not None and not hasattr(_MIXERS[mode], "draw_hidden"):
        raise InputError("layers", f"{mode} mixes images, not hidden layers; leave layers unset")
    if layers is not None:
        extra["layers"] = layers
    return _MIXERS[mode](
        num_classes=num_classes, k=k, alpha=alpha, prob=prob, per_sample=per_sample, **extra
    )


def compile_mixer(mixer: Mixer) -> Callable[..., tuple[Tensor, Tensor]]:
    """``mixer`` under ``torch.compile`` (``mixing.compile=true``): same call, same outputs.

    The random draws keep their explicit generator, so a compiled mixer gives exactly what the
    eager one gives for the same generator; what it saves is the many small kernels of the plan.
    """
    return torch.compile(mixer.__call__, dynamic=False)
