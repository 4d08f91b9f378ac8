"""Random Erasing (Zhong et al. 2017): per image, a random rectangle of fill, no second image."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from dcutmix.errors import InputError
from dcutmix.mixing.base import Mixer, NoWeights, check_generator, check_int_option, check_scale
from dcutmix.mixing.plan import rand, span_mask

#: the fills: uniform random values over the pixel range (the paper's default, RE-R), the
#: dataset mean (RE-M: 0 in normalised images), or a number (the authors' code: 0.4914)
FILLS = ("random", "mean")


def _check_aspect(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= 1
    ):
        raise InputError(
            "aspect",
            f"must be a number in (0, 1], the smallest aspect ratio r1 (ratios are drawn from "
            f"[r1, 1/r1]), got {value!r}",
        )
    return float(value)


def _check_fill(value: object) -> str | float:
    if value in FILLS:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(
            "fill",
            f"must be random (uniform over the pixel range), mean (the dataset mean, 0 after "
            f"normalising) or a number, got {value!r}",
        )
    return float(value)


class RandomErasing(NoWeights, Mixer):
    """Random Erasing (Zhong et al. 2017): each image is erased with probability ``prob`` (p,
    default 0.5, one coin per image): a rectangle of area s ~ U(area) x H W and aspect ratio
    r ~ U(aspect, 1 / aspect) (uniform in r), h = round(sqrt(s r)), w = round(sqrt(s / r)), is
    drawn until it fits (h < H and w < W), up to ``attempts`` times, and placed with its corner
    uniform among the positions where it fits; its pixels get ``fill``. Targets stay one-hot.

    The paper retries until a box fits; ``attempts`` draws are made at once (10 by default: at
    the default area and aspect no 28x28 or 32x32 image is left unerased for want of a fitting
    box in any practical number of batches). The authors' Fashion-MNIST code makes one attempt
    (``attempts=1``: an image whose first box does not fit stays as it is) and fills the constant
    0.4914 after normalising (``fill=0.4914``).

    ``fill``: ``random`` (the paper's default: each erased pixel and channel uniform over the
    range the batch's values span in that channel, which for normalised images holding black
    and white pixels is the normalised [0, 255]; the project's reading for a mixer that sees
    normalised images), ``mean`` (0, the dataset mean of normalised images) or a number.
    ``per_sample=False`` draws one coin and one rectangle for the whole batch. Every draw comes
    from the generator at once; nothing loops over the batch or synchronises with the host.
    """

    mode = "random_erasing"
    box = True
    default_per_sample = True
    default_prob = 0.5
    options: ClassVar[tuple[str, ...]] = ("area", "aspect", "fill", "attempts")

    def __init__(
        self,
        *,
        area: tuple[float, float] = (0.02, 0.4),
        aspect: float = 0.3,
        fill: str | float = "random",
        attempts: int = 10,
        **settings,
    ) -> None:
        super().__init__(**settings)
        try:
            self.area = check_scale(area)
        except InputError:
            raise InputError(
                "area",
                f"must be a [low, high] pair of image fractions, 0 < low <= high <= 1, got {area!r}",
            ) from None
        self.aspect = _check_aspect(aspect)
        self.fill = _check_fill(fill)
        self.attempts = check_int_option("attempts", attempts)

    def _check_k(self, k: int | None) -> None:
        if k not in (None, 1):
            raise InputError(
                "k", f"random_erasing mixes no second image; leave k unset (got {k!r})"
            )
        return None

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, area={list(self.area)}, aspect={self.aspect}, "
            f"fill={self.fill!r}, attempts={self.attempts})"
        )

    def draw_boxes(
        self, n: int, height: int, width: int, device: torch.device, generator
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(top, box height, left, box width) per draw, each (n,) float; an image left alone has
        an empty box (its coin said no, or no attempt fitted)."""
        low, high = self.area
        # one tensor of every draw, in a fixed order: area, ratio, top, left per attempt; the coin
        u = rand((4, self.attempts, n), device, generator)
        coin = rand((n,), device, generator) < self.prob
        target = (low + (high - low) * u[0]) * (height * width)
        ratio = self.aspect + (1.0 / self.aspect - self.aspect) * u[1]
        box_h = torch.round(torch.sqrt(target * ratio))
        box_w = torch.round(torch.sqrt(target / ratio))
        fits = (box_h < height) & (box_w < width)
        # the first attempt that fits (argmax finds the first True; none fits: no erasing)
        first = fits.to(torch.uint8).argmax(dim=0, keepdim=True)
        erase = coin & fits.any(dim=0)
        box_h, box_w = box_h.gather(0, first)[0], box_w.gather(0, first)[0]
        top = torch.floor(u[2].gather(0, first)[0] * (height - box_h + 1))
        left = torch.floor(u[3].gather(0, first)[0] * (width - box_w + 1))
        return top, box_h * erase, left, box_w * erase

    def _fill_values(self, images: Tensor, generator) -> Tensor | float:
        if self.fill == "mean":
            return 0.0
        if self.fill != "random":
            return self.fill
        values = images.float()
        low = values.amin(dim=(0, 2, 3), keepdim=True)
        high = values.amax(dim=(0, 2, 3), keepdim=True)
        noise = low + (high - low) * rand(tuple(images.shape), images.device, generator)
        if not images.is_floating_point():
            noise = torch.round(noise)
        return noise.to(images.dtype)

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Erase one rectangle per image: returns (erased images, one-hot targets)."""
        targets = self._label_matrix(images, labels)
        check_generator(generator, images.device)
        if self.prob == 0.0:
            return images, targets
        batch, _, height, width = images.shape
        n = batch if self.per_sample else 1
        top, box_h, left, box_w = self.draw_boxes(n, height, width, images.device, generator)
        hole = span_mask(top, box_h, height).unsqueeze(2) & span_mask(left, box_w, width).unsqueeze(
            1
        )
        fill = self._fill_values(images, generator)
        if isinstance(fill, float):
            return images.masked_fill(hole.unsqueeze(1), fill), targets
        return torch.where(hole.unsqueeze(1), fill, images), targets
