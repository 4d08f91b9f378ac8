"""The ``Mixer`` base class, which every mode subclasses, and the checks of its arguments."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from dcutmix.errors import InputError
from dcutmix.mixing.apply import apply_blend, apply_boxes, gate, mix_targets, one_hot_targets
from dcutmix.mixing.plan import Plan

#: the largest K of the K-image modes
MAX_K = 64


class Mixer:
    """Base class of every mode: validates inputs, draws a plan, applies it, mixes the targets.

    Keyword-only arguments (each mode documents its defaults and its own extra settings):

    - ``num_classes``: the number of classes; needed for integer class labels (probability labels
      of shape (B, num_classes) carry it). A config check builds mixers without it and the run
      gives it once the data is known (``set_num_classes``).
    - ``k``: how many images are mixed, the anchor included (2 for the two-image modes, 2 to
      ``MAX_K`` for the K-image modes, unset for ``none`` and Cutout).
    - ``alpha``: the concentration of the Beta or Dirichlet draw of the weights (> 0).
    - ``prob``: the probability that a batch is mixed at all, in [0, 1] (None: the mode's
      ``default_prob``, 1 but for random_erasing, where it is each image's probability).
    - ``per_sample``: one draw per image (True) or one for the whole batch (False).

    Calling a mixer, ``mixer(images, labels, generator=None)``, returns the mixed (B, C, H, W)
    batch and float32 (B, num_classes) soft targets; all randomness comes from ``generator``.
    """

    mode: ClassVar[str]
    #: two-image modes accept only k=2; K-image modes any k in [2, MAX_K]
    two_image: ClassVar[bool] = False
    #: box modes paste rectangles; blend modes weight whole images
    box: ClassVar[bool] = False
    default_k: ClassVar[int | None] = None
    default_alpha: ClassVar[float | None] = 1.0
    default_per_sample: ClassVar[bool] = False
    default_prob: ClassVar[float] = 1.0

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        k: int | None = None,
        alpha: float | None = None,
        prob: float | None = None,
        per_sample: bool | None = None,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.k = self._check_k(k)
        self.alpha = self._check_alpha(alpha)
        prob = self.default_prob if prob is None else prob
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise InputError("prob", f"must be a number in [0, 1], got {prob!r}")
        self.prob = float(prob)
        self.per_sample = self.default_per_sample if per_sample is None else bool(per_sample)

    def set_num_classes(self, num_classes: int) -> None:
        """Give a mixer built without classes (as a config check builds it) its dataset's count."""
        self.num_classes = check_num_classes(num_classes)

    def _check_k(self, k: int | None) -> int:
        if k is None:
            return self.default_k
        if isinstance(k, bool) or not isinstance(k, int):
            raise InputError("k", f"must be an integer, got {k!r}")
        if self.two_image and k != 2:
            raise InputError(
                "k", f"{self.mode} mixes exactly 2 images, so k must be 2 or omitted; got {k}"
            )
        if not 2 <= k <= MAX_K:
            raise InputError("k", f"{self.mode} needs an integer k in [2, {MAX_K}], got {k}")
        return k

    def _check_alpha(self, alpha: float | None) -> float:
        if alpha is None:
            return self.default_alpha
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha)
            or alpha <= 0
        ):
            raise InputError("alpha", f"must be a finite number > 0, got {alpha!r}")
        return float(alpha)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, k={self.k}, alpha={self.alpha}, "
            f"prob={self.prob}, per_sample={self.per_sample})"
        )

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mix a batch: returns (mixed images, float32 soft targets of shape (B, num_classes))."""
        # None for class indices: their one-hot rows are built only where they are needed
        targets = self._label_matrix(images, labels, one_hot=False)
        check_generator(generator, images.device)
        if self.k is None or self.prob == 0.0:
            if targets is None:
                targets = one_hot_targets(labels, self.num_classes, images.device)
            return images, targets
        batch, _, height, width = images.shape
        n = batch if self.per_sample else 1
        plan = self._plan(batch, n, height, width, images.device, generator)
        if self.prob < 1.0:
            plan = gate(plan, self.prob, images.device, generator)
        mixed = apply_boxes(images, plan) if plan.is_box else apply_blend(images, plan)
        return mixed, mix_targets(targets, plan, labels, self.num_classes)

    def _plan(
        self, batch: int, n: int, height: int, width: int, device: torch.device, generator
    ) -> Plan:
        raise NotImplementedError

    def _label_matrix(self, images: Tensor, labels: Tensor, one_hot: bool = True) -> Tensor | None:
        """The float32 (B, num_classes) targets of ``labels``, after checking both arguments.

        With ``one_hot=False``, class indices are only checked and None is returned.
        """
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError("images", f"expected a 4-d tensor (B, C, H, W), got {shape}")
        if not self.box and self.k is not None and not images.is_floating_point():
            raise InputError(
                "images",
                f"{self.mode} blends pixels and needs a floating-point tensor, got {images.dtype}",
            )
        if not isinstance(labels, Tensor):
            raise InputError("labels", f"expected a tensor, got {type(labels).__name__}")
        batch = images.shape[0]
        if batch == 0:
            raise InputError("images", "the batch is empty")
        if labels.shape[0:1] != (batch,):
            raise InputError(
                "labels",
                f"batch size {tuple(labels.shape)[:1]} does not match images' batch size {batch}",
            )
        if labels.dim() == 2 and labels.is_floating_point():
            if self.num_classes is not None and labels.shape[1] != self.num_classes:
                raise InputError(
                    "labels",
                    f"probability labels have {labels.shape[1]} classes, num_classes is {self.num_classes}",
                )
            return labels.to(device=images.device, dtype=torch.float32)
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise InputError(
                "labels",
                "expected integer class indices of shape (B,) or float probabilities of shape "
                f"(B, num_classes), got {labels.dtype} of shape {tuple(labels.shape)}",
            )
        if self.num_classes is None:
            raise InputError("num_classes", "required when labels are integer class indices")
        if labels.device.type == "cpu" and not torch.compiler.is_compiling():
            # Only checked where it costs no device synchronisation; on an accelerator an
            # out-of-range index trips the scatter's own device-side check.
            low, high = (int(v) for v in torch.aminmax(labels))
            if low < 0 or high >= self.num_classes:
                raise InputError(
                    "labels",
                    f"class indices must be in [0, {self.num_classes - 1}], got values in [{low}, {high}]",
                )
        return one_hot_targets(labels, self.num_classes, images.device) if one_hot else None


def check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError("num_classes", f"must be a positive integer, got {num_classes!r}")
    return num_classes


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise InputError(
            "generator", f"expected a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator.device.type != device.type:
        raise InputError(
            "generator",
            f"lives on {generator.device}, but the images are on {device}; "
            "create it with torch.Generator(device=images.device)",
        )


def check_int_option(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(name, f"must be a whole number >= 1, got {value!r}")
    return value


def check_positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InputError(name, f"must be a finite number > 0, got {value!r}")
    return float(value)


def check_scale(value: object) -> tuple[float, float]:
    numbers = list(value) if isinstance(value, (list, tuple)) else None
    if (
        numbers is None
        or len(numbers) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
        or not 0 < numbers[0] <= numbers[1] <= 1
    ):
        raise InputError(
            "scale", f"must be a [low, high] pair with 0 < low <= high <= 1, got {value!r}"
        )
    return float(numbers[0]), float(numbers[1])


class NoWeights:
    """Mixin for modes that draw no Beta weights: like ``none``, they ignore alpha, so that one
    sweep can set alpha for every mode it runs."""

    default_alpha = None

    def _check_alpha(self, alpha: float | None) -> None:
        return None
