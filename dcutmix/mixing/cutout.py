"""Cutout (DeVries & Taylor 2017): a square of zeros, no second image."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dcutmix.errors import InputError
from dcutmix.mixing import native
from dcutmix.mixing.base import Mixer, NoWeights, check_generator, check_int_option
from dcutmix.mixing.plan import rand, span_mask


class Cutout(NoWeights, Mixer):
    """Cutout (DeVries & Taylor 2017): per image, a square of side ``length`` centred at a uniform
    pixel, clipped at the borders, set to 0 (the mean of normalised images); targets stay one-hot.

    A whole batch is cut with probability ``prob``; ``per_sample=False`` shares one square.
    Arguments: ``length`` (the square's side in pixels, default 16, at most the image's side),
    ``num_classes``, ``prob``, ``per_sample`` (default True); ``k`` and ``alpha`` must be unset.
    """

    mode = "cutout"
    box = True
    default_per_sample = True
    options: ClassVar[tuple[str, ...]] = ("length",)

    def __init__(self, *, length: int = 16, **settings) -> None:
        super().__init__(**settings)
        self.length = check_int_option("length", length)

    def _check_k(self, k: int | None) -> None:
        if k not in (None, 1):
            raise InputError("k", f"cutout mixes no second image; leave k unset (got {k!r})")
        return None

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, length={self.length})"

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cut one square per image: returns (images with squares of zeros, one-hot targets)."""
        targets = self._label_matrix(images, labels)
        check_generator(generator, images.device)
        batch, _, height, width = images.shape
        if self.length > min(height, width):
            raise InputError(
                "length",
                f"{self.length} is larger than the {height}x{width} images; "
                f"use at most {min(height, width)}",
            )
        if self.prob == 0.0:
            return images, targets
        device = images.device
        n = batch if self.per_sample else 1
        size = torch.tensor([[float(height)], [float(width)]], device=device)
        start = torch.floor(rand((2, n), device, generator) * size) - self.length // 2
        if native.usable(images):  # the same zeros, copied and cleared by a C loop
            cut = self.prob == 1.0 or bool(rand((1,), device, generator) < self.prob)
            return (native.cutout(images, start, self.length) if cut else images.clone()), targets
        side = torch.full_like(start, float(self.length))
        rows = span_mask(start[0], side[0], height)
        cols = span_mask(start[1], side[1], width)
        hole = rows.unsqueeze(2) & cols.unsqueeze(1)  # (n, H, W); the span mask clips at borders
        if self.prob < 1.0:
            hole = hole & (rand((1,), device, generator) < self.prob)
        return images.masked_fill(hole.unsqueeze(1), 0), targets
