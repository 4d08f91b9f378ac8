"""Manifold Mixup (Verma et al. 2019): Mixup of a hidden state, with the model's cooperation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dcutmix.errors import InputError
from dcutmix.mixing.apply import gate, mix_targets
from dcutmix.mixing.base import Mixer, check_generator
from dcutmix.mixing.plan import Plan
from dcutmix.mixing.two_image import Mixup


@dataclass
class HiddenBlend:
    """Mixup of a hidden state at ``layer``: ``lam h + (1 - lam) h[perm]`` with the plan's weights.

    A model that runs in parts applies it to its state at ``layer`` (``model(x, hidden_mix=...)``).
    """

    layer: int
    plan: Plan

    def __call__(self, hidden: Tensor) -> Tensor:
        """The blended hidden state (any shape with the batch first); differentiable."""
        # Not apply_blend: its in-place, preallocated partner buffer cannot carry gradients.
        shape = (-1, self.plan.weights.shape[1]) + (1,) * (hidden.dim() - 1)
        weights = self.plan.weights.to(hidden.dtype).view(shape)
        mixed = hidden * weights[:, 0]
        for j, perm in enumerate(self.plan.perms, start=1):
            mixed = mixed + hidden.index_select(0, perm) * weights[:, j]
        return mixed


def _host_index(count: int, generator: torch.Generator | None) -> int:
    """A uniform index in range(count), drawn on the host without synchronising with a device.

    A CPU generator is used directly. An accelerator generator's state (its seed and offset)
    lives on the host, so a CPU generator seeded from it gives a reproducible draw that changes
    whenever the generator has advanced.
    """
    if generator is None or generator.device.type == "cpu":
        return int(torch.randint(count, (1,), generator=generator))
    digest = hashlib.blake2b(generator.get_state().numpy().tobytes(), digest_size=8).digest()
    host = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
    return int(torch.randint(count, (1,), generator=host))


def _check_layers(layers: object) -> tuple[int, ...]:
    if isinstance(layers, str) or not hasattr(layers, "__iter__"):
        raise InputError(
            "layers", f"expected a list of layer indices such as [0, 1, 2], got {layers!r}"
        )
    values = tuple(layers)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise InputError(
            "layers",
            f"expected a non-empty list of layer indices >= 0 (0 = the input), got {list(values)}",
        )
    if len(set(values)) != len(values):
        raise InputError("layers", f"each layer may appear once, got {list(values)}")
    return values


class ManifoldMixup(Mixer):
    """Manifold Mixup (Verma et al. 2019): Mixup of the hidden states at a layer drawn uniformly
    from ``layers`` (default: the input and the outputs of the first two stages), lam ~ Beta(alpha,
    alpha) with alpha 2.0 as in their CIFAR runs, one lam and one permutation per batch; the targets
    blend with the same lam.

    ``draw_hidden`` gives the targets and a ``HiddenBlend`` for a model that runs in parts; the
    engine passes it to the model. Called like the other mixers, on images alone, only the input
    can be mixed, so the call is Mixup of the images with this alpha (layer 0).
    Arguments: ``layers`` (the layers to draw from, each once; default [0, 1, 2]), alpha (default
    2.0), k=2 (fixed), per_sample (default False).
    """

    mode = "manifold_mixup"
    two_image = True
    default_k = 2
    default_alpha = 2.0
    default_layers: ClassVar[tuple[int, ...]] = (0, 1, 2)
    # recorded in results.json's config (mode_settings), so runs on different layers never pool
    options: ClassVar[tuple[str, ...]] = ("layers",)

    def __init__(self, *, layers: tuple[int, ...] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers = self.default_layers if layers is None else _check_layers(layers)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", layers={list(self.layers)})"

    _plan = Mixup._plan

    def draw_hidden(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, HiddenBlend | None]:
        """(float32 soft targets, the blend to apply at the drawn layer; None when not mixing)."""
        targets = self._label_matrix(images, labels)
        check_generator(generator, images.device)
        if self.prob == 0.0:
            return targets, None
        layer = self.layers[_host_index(len(self.layers), generator)]
        batch = images.shape[0]
        plan = self._plan(batch, batch if self.per_sample else 1, 0, 0, images.device, generator)
        if self.prob < 1.0:
            plan = gate(plan, self.prob, images.device, generator)
        return mix_targets(targets, plan, labels), HiddenBlend(layer, plan)
