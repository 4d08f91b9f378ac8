"""Batched image-mixing augmentations: none, Mixup, CutMix, their naive K-image expansions, DMixup,
DCutMix, and the field's baselines Cutout, FMix and ResizeMix.

Tensor code (torch only, no I/O), usable in any training loop::

    mixer = build_mixer("dcutmix", num_classes=100, k=5, alpha=0.2)
    images, targets = mixer(images, labels, generator=g)

Every mixer returns the mixed batch (same shape, dtype and device) and float32 soft targets of shape
(B, num_classes) whose rows sum to 1. Each class docstring specifies its mode; README.md ("The
mixers") tabulates them, and tests/test_mixing.py checks every claim by counting pixels.

How it is vectorised: each mode first draws a *plan* for the batch (K source permutations, the
K weights of every sample, and for the box modes a per-pixel map of which source is visible), and
one shared routine applies it. No Python loop runs over the batch, nothing synchronises with the
host, and all randomness comes from the optional ``torch.Generator`` on the images' device.

On the CPU the plan's geometry, the pixel copies, the blends and the soft targets run in small C
kernels (``dcutmix.native``, built on first use with the system's compiler): from the same draws
they give the same boxes, pixels and targets as the tensor code (blends to the last bits), which
accelerators, ``torch.compile``, autograd and machines without a compiler run instead.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dcutmix import native

__all__ = [
    "MIXING_MODES",
    "CutMix",
    "Cutout",
    "DCutMix",
    "DMixup",
    "FMix",
    "Mixer",
    "Mixup",
    "NaiveCutMix",
    "NaiveMixup",
    "NoMix",
    "ResizeMix",
    "build_mixer",
    "compile_mixer",
    "mode_settings",
]

MIXING_MODES: tuple[str, ...] = (
    "none",
    "mixup",
    "cutmix",
    "naive_mixup",
    "naive_cutmix",
    "dmixup",
    "dcutmix",
    "cutout",
    "fmix",
    "resizemix",
)

MAX_K = 64


@dataclass
class _Plan:
    """What to mix: ``perms[j]`` is the source of partner j+1, ``weights[:, 0]`` the anchor's share.

    ``weights`` is (n, K) with n = B (per-sample draws) or 1 (one draw for the batch). The box
    modes say which source is visible at each pixel: either as an (n, H, W) ``pixel_level`` map, or,
    for nested boxes, separably as (n, H) ``rows`` and (n, W) ``cols`` depths whose minimum is the
    level. Blend modes have neither.
    """

    perms: Tensor
    weights: Tensor
    pixel_level: Tensor | None = None
    rows: Tensor | None = None
    cols: Tensor | None = None
    #: (top, height, left, width), each (n,), when the partner shows through one rectangle (CutMix)
    box: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    @property
    def level(self) -> Tensor | None:
        """The (n, H, W) map of the visible source index (None for the blend modes)."""
        if self.rows is not None:
            return torch.minimum(self.rows.unsqueeze(2), self.cols.unsqueeze(1))
        return self.pixel_level

    @property
    def is_box(self) -> bool:
        return self.rows is not None or self.pixel_level is not None


def _rand(
    shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)


def _log_gamma(
    alpha: float, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """log of Gamma(alpha, 1) draws, finite even for tiny alpha.

    Gamma(a) = Gamma(a + 1) * U**(1/a); in log space the second factor is log(U)/a, which stays
    finite where U**(1/a) would underflow to zero and turn a Beta or Dirichlet draw into 0/0.
    """
    return _log_gamma_and_uniform(alpha, shape, 0, device, generator)[0]


def _log_gamma_and_uniform(
    alpha: float, shape: tuple[int, ...], count: int, device: torch.device, generator
) -> tuple[Tensor, Tensor]:
    """``_log_gamma``'s draws and then ``count`` U(0, 1) draws, the uniform ones in one call.

    On the CPU the values are those of separate calls in the same order (a CPU generator fills a
    tensor in sequence); the single call saves an op per batch.
    """
    concentration = torch.full(shape, alpha + 1.0, device=device, dtype=torch.float32)
    g = torch._standard_gamma(concentration, generator=generator)
    size = g.numel()
    draws = _rand((size + count,), device, generator)
    u = draws[:size].view(shape).neg_().add_(1.0)  # 1 - U, in (0, 1]: the same rounding
    log_g = torch.log_(g.clamp_min_(torch.finfo(torch.float32).tiny))
    return log_g.add_(torch.log_(u).div_(alpha)), draws[size:]


def _beta(alpha: float, n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """(n,) draws of Beta(alpha, alpha), never NaN."""
    log_g = _log_gamma(alpha, (2, n), device, generator)
    return torch.sigmoid(log_g[0] - log_g[1])


def _permutations(count: int, batch: int, device: torch.device, generator) -> Tensor:
    """(count, batch) independent uniform random permutations of range(batch)."""
    return _rand((count, batch), device, generator).argsort(dim=1)


def _span_mask(start: Tensor, length: Tensor, size: int) -> Tensor:
    """(..., size) booleans: position p is inside [start, start + length)."""
    pos = torch.arange(size, device=start.device, dtype=start.dtype)
    start = start.unsqueeze(-1)
    return (pos >= start) & (pos < start + length.unsqueeze(-1))


def _clipped_box(
    lam: Tensor, height: int, width: int, device: torch.device, generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CutMix's box for each lam: sides H*sqrt(1-lam), W*sqrt(1-lam) rounded, centre uniform over
    the pixel grid, clipped at the borders. Returns (top, box_height, left, box_width) after clipping."""
    side = torch.sqrt(1.0 - lam)
    cut_h = torch.round(height * side)
    cut_w = torch.round(width * side)
    centre_y = torch.floor(_rand(tuple(lam.shape), device, generator) * height)
    centre_x = torch.floor(_rand(tuple(lam.shape), device, generator) * width)
    top = centre_y - torch.floor(cut_h / 2)
    left = centre_x - torch.floor(cut_w / 2)
    y0, y1 = top.clamp(0, height), (top + cut_h).clamp(0, height)
    x0, x1 = left.clamp(0, width), (left + cut_w).clamp(0, width)
    return y0, y1 - y0, x0, x1 - x0


class Mixer:
    """Base class: validates inputs, draws a plan, applies it and mixes the targets."""

    mode: ClassVar[str]
    #: two-image modes accept only k=2; K-image modes any k in [2, MAX_K]
    two_image: ClassVar[bool] = False
    #: box modes paste rectangles; blend modes weight whole images
    box: ClassVar[bool] = False
    default_k: ClassVar[int | None] = None
    default_alpha: ClassVar[float | None] = 1.0
    default_per_sample: ClassVar[bool] = False

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        k: int | None = None,
        alpha: float | None = None,
        prob: float = 1.0,
        per_sample: bool | None = None,
    ) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.k = self._check_k(k)
        self.alpha = self._check_alpha(alpha)
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob: must be a number in [0, 1], got {prob!r}")
        self.prob = float(prob)
        self.per_sample = self.default_per_sample if per_sample is None else bool(per_sample)

    def _check_k(self, k: int | None) -> int:
        if k is None:
            return self.default_k
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"k: must be an integer, got {k!r}")
        if self.two_image and k != 2:
            raise ValueError(
                f"k: {self.mode} mixes exactly 2 images, so k must be 2 or omitted; got {k}"
            )
        if not 2 <= k <= MAX_K:
            raise ValueError(f"k: {self.mode} needs an integer k in [2, {MAX_K}], got {k}")
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
            raise ValueError(f"alpha: must be a finite number > 0, got {alpha!r}")
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
        _check_generator(generator, images.device)
        if self.k is None or self.prob == 0.0:
            if targets is None:
                targets = _one_hot(labels, self.num_classes, images.device)
            return images, targets
        batch, _, height, width = images.shape
        n = batch if self.per_sample else 1
        plan = self._plan(batch, n, height, width, images.device, generator)
        if self.prob < 1.0:
            plan = _gate(plan, self.prob, images.device, generator)
        mixed = _apply_boxes(images, plan) if plan.is_box else _apply_blend(images, plan)
        return mixed, _mix_targets(targets, plan, labels, self.num_classes)

    def _plan(
        self, batch: int, n: int, height: int, width: int, device: torch.device, generator
    ) -> _Plan:
        raise NotImplementedError

    def _label_matrix(self, images: Tensor, labels: Tensor, one_hot: bool = True) -> Tensor | None:
        """The float32 (B, num_classes) targets of ``labels``, after checking both arguments.

        With ``one_hot=False``, class indices are only checked and None is returned.
        """
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected a 4-d tensor (B, C, H, W), got {shape}")
        if not self.box and self.k is not None and not images.is_floating_point():
            raise ValueError(
                f"images: {self.mode} blends pixels and needs a floating-point tensor, got {images.dtype}"
            )
        if not isinstance(labels, Tensor):
            raise ValueError(f"labels: expected a tensor, got {type(labels).__name__}")
        batch = images.shape[0]
        if batch == 0:
            raise ValueError("images: the batch is empty")
        if labels.shape[0:1] != (batch,):
            raise ValueError(
                f"labels: batch size {tuple(labels.shape)[:1]} does not match images' batch size {batch}"
            )
        if labels.dim() == 2 and labels.is_floating_point():
            if self.num_classes is not None and labels.shape[1] != self.num_classes:
                raise ValueError(
                    f"labels: probability labels have {labels.shape[1]} classes, num_classes is {self.num_classes}"
                )
            return labels.to(device=images.device, dtype=torch.float32)
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                "labels: expected integer class indices of shape (B,) or float probabilities of shape "
                f"(B, num_classes), got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        if self.num_classes is None:
            raise ValueError("num_classes: required when labels are integer class indices")
        if labels.device.type == "cpu" and not torch.compiler.is_compiling():
            # Only checked where it costs no device synchronisation; on an accelerator an
            # out-of-range index trips the scatter's own device-side check.
            low, high = (int(v) for v in torch.aminmax(labels))
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"labels: class indices must be in [0, {self.num_classes - 1}], got values in [{low}, {high}]"
                )
        return _one_hot(labels, self.num_classes, images.device) if one_hot else None


def _one_hot(labels: Tensor, num_classes: int, device: torch.device) -> Tensor:
    """(B, num_classes) float32 one-hot rows of checked class indices, on ``device``."""
    onehot = torch.zeros(labels.shape[0], num_classes, device=device, dtype=torch.float32)
    return onehot.scatter_(1, labels.to(device=device, dtype=torch.long).unsqueeze(1), 1.0)


class NoMix(Mixer):
    """No mixing: the images unchanged, one-hot targets."""

    mode = "none"
    default_alpha = None

    def _check_k(self, k: int | None) -> None:
        if k not in (None, 1):
            raise ValueError(f"k: the 'none' mode mixes nothing; leave k unset (got {k!r})")
        return None

    def _check_alpha(self, alpha: float | None) -> None:
        return None


class Mixup(Mixer):
    """Mixup (Zhang et al. 2018): lam ~ Beta(alpha, alpha), x' = lam x + (1 - lam) x[perm].

    One lam for the batch as in the original; ``per_sample=True`` draws one per sample.
    """

    mode = "mixup"
    two_image = True
    default_k = 2

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        lam = _beta(self.alpha, n, device, generator)
        perms = _permutations(1, batch, device, generator)
        return _Plan(perms, torch.stack([lam, 1.0 - lam], dim=1), None)


class CutMix(Mixer):
    """CutMix (Yun et al. 2019): a box of area (1 - lam) H W, centre uniform, clipped at the borders,
    pasted from x[perm]; targets weighted by the area that is really pasted.

    One box for the batch as in the original; ``per_sample=True`` draws one per sample.
    """

    mode = "cutmix"
    two_image = True
    box = True
    default_k = 2

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        lam = _beta(self.alpha, n, device, generator)
        top, box_h, left, box_w = _clipped_box(lam, height, width, device, generator)
        pasted = box_h * box_w / (height * width)
        level = (
            _span_mask(top, box_h, height).unsqueeze(2)
            & _span_mask(left, box_w, width).unsqueeze(1)
        ).long()
        perms = _permutations(1, batch, device, generator)
        weights = torch.stack([1.0 - pasted, pasted], dim=1)
        return _Plan(perms, weights, level, box=(top, box_h, left, box_w))


class NaiveMixup(Mixer):
    """Naive K-image Mixup (a reconstruction; the paper's exact construction is not published):
    two-image Mixup applied K-1 times in a row, step j blending the running image with a fresh
    partner x[perm_j] by its own lam_j ~ Beta(alpha, alpha). The weights are the exact products
    of the lams: the anchor keeps prod(lam), partner j gets (1 - lam_j) * prod(lam after j).
    """

    mode = "naive_mixup"
    default_k = 3

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        lams = _beta(self.alpha, (self.k - 1) * n, device, generator).view(self.k - 1, n)
        weights = [torch.ones(n, device=device)]
        for lam in lams:
            weights = [w * lam for w in weights]
            weights.append(1.0 - lam)
        perms = _permutations(self.k - 1, batch, device, generator)
        return _Plan(perms, torch.stack(weights, dim=1), None)


class NaiveCutMix(Mixer):
    """Naive K-image CutMix (a reconstruction; the paper's exact construction is not published):
    K-1 independent CutMix boxes, each drawn as in CutMix and clipped, pasted one after another
    from independent permutations. Later boxes may cover earlier ones, so each source's weight is
    counted from the pixels visible at the end.
    """

    mode = "naive_cutmix"
    box = True
    default_k = 3

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        steps = self.k - 1
        lam = _beta(self.alpha, steps * n, device, generator).view(steps, n)
        top, box_h, left, box_w = _clipped_box(lam, height, width, device, generator)
        rows = _span_mask(top, box_h, height)  # (steps, n, H)
        cols = _span_mask(left, box_w, width)  # (steps, n, W)
        level = torch.zeros(n, height, width, device=device, dtype=torch.long)
        for j in range(steps):
            level = torch.where(rows[j].unsqueeze(2) & cols[j].unsqueeze(1), j + 1, level)
        counts = torch.stack([(level == s).sum(dim=(1, 2)) for s in range(self.k)], dim=1)
        perms = _permutations(steps, batch, device, generator)
        return _Plan(perms, counts.float() / (height * width), level)


class DMixup(Mixer):
    """DMixup: weights phi ~ Dirichlet(alpha * 1_K) per sample; x' = phi_0 x + sum_k phi_k x[perm_k]."""

    mode = "dmixup"
    default_k = 3
    default_alpha = 1.0 / 3.0
    default_per_sample = True

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        phi = torch.softmax(_log_gamma(self.alpha, (n, self.k), device, generator), dim=1)
        perms = _permutations(self.k - 1, batch, device, generator)
        return _Plan(perms, phi, None)


class DCutMix(Mixer):
    """DCutMix: K nested boxes from Dirichlet stick-breaking, never clipped.

    Per sample: phi ~ Dirichlet(alpha * 1_K); stick fractions v_j = phi_j / (1 - phi_0 - ... - phi_{j-1}).
    Starting from the whole image, box j+1 is placed inside box j with sides scaled by sqrt(1 - v_j),
    rounded to whole pixels, at a uniformly drawn offset that keeps it wholly inside, and is filled
    from x[perm_{j+1}]. Each source's weight is the area of its visible frame.
    """

    mode = "dcutmix"
    box = True
    default_k = 5
    default_alpha = 0.2
    default_per_sample = True

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        k, steps = self.k, self.k - 1
        # The K Gamma draws are exchangeable, so they are read last to first: cum[:, i] is
        # log(phi_{K-1-i} + ... + phi_{K-1}) up to a constant, and sqrt(1 - v_j) =
        # sqrt(tail_{j+1} / tail_j) is a difference of logs, without dividing by ~0.
        # one uniform draw for the Gamma draws, the offsets of the boxes and the permutations
        log_g, uniform = _log_gamma_and_uniform(
            self.alpha, (n, k), steps * (2 * n + batch), device, generator
        )
        cum = torch.logcumsumexp(log_g, dim=1)
        shrink = torch.sub(cum[:, :-1], cum[:, 1:]).T.mul_(0.5).exp_()  # row K-2-j: box j+1 in j
        offsets = uniform[: steps * 2 * n].view(steps, 2, n)
        perms = uniform[steps * 2 * n :].view(steps, batch).argsort(dim=1)
        if native.available(device):
            # the same boxes from the same draws in one C loop (native.nested_boxes)
            rows, cols, visible = native.nested_boxes(shrink, offsets, height, width)
            return _Plan(perms, visible, rows=rows, cols=cols)

        # Rows and columns travel together as (2, n) tensors: [heights; widths], [tops; lefts].
        # Only the rounding of each side depends on its parent's, so the loop holds two small
        # in-place ops; the extra last row of zeros is the area inside the innermost box.
        sides = torch.zeros((k + 1, 2, n), device=device)
        sides[0] = torch.tensor([[float(height)], [float(width)]], device=device)
        for j in range(steps):
            torch.mul(sides[j], shrink[steps - 1 - j], out=sides[j + 1]).round_()
        inner = sides[1:k]
        slack = sides[:steps] - inner
        corners = torch.minimum(torch.floor(offsets * (slack + 1.0)), slack).cumsum_(0)

        # The boxes are nested, so a pixel lies in box j exactly when its row lies in the first j
        # row spans and its column in the first j column spans: the visible source is the smaller
        # of the two depths. Each depth profile is the running sum of +1 where a span starts and
        # -1 where it ends; rows and columns are counted together, over the longer side.
        size = max(height, width)
        edges = torch.cat([corners, corners + inner]).long().permute(1, 2, 0)  # (2, n, 2 steps)
        step = torch.ones((), dtype=torch.int32, device=device).expand(2, n, steps)
        starts_ends = torch.zeros((2, n, size + 1), dtype=torch.int32, device=device)
        starts_ends.scatter_add_(2, edges[..., :steps], step).scatter_add_(
            2, edges[..., steps:], -step
        )
        depth = starts_ends.cumsum(2, dtype=torch.int32)  # (2, n, size + 1)

        # visible area of source j = area of box j - area of box j+1 (the image is box 0)
        area = sides.prod(dim=1)
        visible = (area[:-1] - area[1:]).T.div_(height * width)
        return _Plan(perms, visible, rows=depth[0, :, :height], cols=depth[1, :, :width])


def _gate(plan: _Plan, prob: float, device: torch.device, generator) -> _Plan:
    """Mix the whole batch with probability ``prob``, decided on the device without a host sync."""
    mixed = _rand((1,), device, generator) < prob
    anchor_only = torch.zeros_like(plan.weights)
    anchor_only[:, 0] = 1.0
    weights = torch.where(mixed, plan.weights, anchor_only)
    # An unmixed batch shows the anchor (level 0) everywhere.
    gated = [None if t is None else t * mixed for t in (plan.pixel_level, plan.rows, plan.cols)]
    box = None
    if plan.box is not None:
        top, box_h, left, box_w = plan.box
        box = (top, box_h * mixed, left, box_w)  # an empty rectangle when the coin says no
    return _Plan(plan.perms, weights, *gated, box=box)


def _sources(plan: _Plan, batch: int) -> Tensor:
    """(K, B) batch index of every source, the anchor (itself) first."""
    anchor = torch.arange(batch, device=plan.perms.device).unsqueeze(0)
    return torch.cat([anchor, plan.perms], dim=0)


def _apply_boxes(images: Tensor, plan: _Plan) -> Tensor:
    """Every pixel from the source its level names: one gather across the batch, any dtype.

    A rectangle shared by the whole batch (``plan.box`` with n = 1) is pasted by slicing instead
    on the CPU, where reading it costs no synchronisation (``_paste_box_cpu``, same pixels); any
    other plan is copied there by the C kernel in runs of pixels (``native.paste``, same pixels).

    Pasting the partners level by level instead (a whole-batch copy and a 0/1 blend per source)
    was measured on the project's CPU machine: at 32x32 it was 2x slower than this gather, its
    extra whole-batch buffers costing more than the gather's per-element indexing.
    """
    if (
        plan.box is not None
        and plan.box[0].shape[0] == 1
        and images.device.type == "cpu"
        and not torch.compiler.is_compiling()
    ):
        return _paste_box_cpu(images, plan)
    if native.usable(images):
        # the same pixels copied in runs by a C loop, without an index per pixel
        if plan.rows is not None:
            return native.paste(images, plan.perms, rows=plan.rows, cols=plan.cols)
        return native.paste(images, plan.perms, level=plan.pixel_level)
    batch, channels, height, width = images.shape
    sources = _sources(plan, batch).T  # (B, K)
    if plan.rows is not None:
        # Separable levels: first the source of each (row, column depth) pair, a small (B, H, K)
        # table, then one lookup per pixel by its column's depth; no (B, H, W) level map is built.
        depths = torch.arange(sources.shape[1], device=sources.device)
        row_levels = torch.minimum(plan.rows.unsqueeze(2), depths).expand(batch, height, -1)
        by_depth = torch.gather(sources, 1, row_levels.reshape(batch, -1)).view(batch, height, -1)
        cols = plan.cols.expand(batch, width).unsqueeze(1).expand(batch, height, width)
        source_of_pixel = torch.gather(by_depth, 2, cols)
    else:
        level = plan.pixel_level.expand(batch, height, width).reshape(batch, height * width)
        source_of_pixel = torch.gather(sources, 1, level.long()).view(batch, height, width)
    index = source_of_pixel.unsqueeze(1).expand(batch, channels, height, width)
    return torch.gather(images, 0, index)


def _paste_box_cpu(images: Tensor, plan: _Plan) -> Tensor:
    """One rectangle shared by the batch, pasted by slicing: the gather's pixels, copied row by row.

    On the CPU the box is already in host memory, so reading it costs no synchronisation; a
    whole-batch copy and one sliced copy replace the per-pixel gather (CutMix at B=128 3x32x32
    on the project's machine: 1.04 ms with the gather, 0.45 to 0.54 ms with this path).
    """
    top, box_h, left, box_w = (int(v) for v in torch.cat(plan.box).tolist())
    mixed = images.clone()
    if box_h and box_w:
        rows, cols = slice(top, top + box_h), slice(left, left + box_w)
        mixed[:, :, rows, cols] = images[:, :, rows, cols].index_select(0, plan.perms[0])
    return mixed


def _apply_blend(images: Tensor, plan: _Plan) -> Tensor:
    if images.dtype in (torch.float32, torch.float64) and native.usable(images):
        # the same products and sums in one pass over the batch, in C (native.blend)
        return native.blend(images, plan.perms, plan.weights)
    weights = plan.weights.to(images.dtype).view(-1, plan.weights.shape[1], 1, 1, 1)
    mixed = images * weights[:, 0]
    # One buffer for every partner: a fresh allocation per partner costs as much as the copy.
    partner = torch.empty_like(images)
    for j, perm in enumerate(plan.perms, start=1):
        mixed.addcmul_(torch.index_select(images, 0, perm, out=partner), weights[:, j])
    return mixed


def _mix_targets(
    targets: Tensor | None,
    plan: _Plan,
    labels: Tensor | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """Each sample's target: the sum of its sources' targets weighted by the plan.

    ``labels`` are the class indices behind one-hot ``targets`` (None for probability labels);
    ``targets`` None stands for those one-hot rows (of ``num_classes`` classes), not yet built.
    """
    device = plan.weights.device
    if labels is not None and labels.dim() == 1 and device.type == "cpu":
        # Each source's weight added into its class, in source order: the dense product below up
        # to rounding, without its (K, B, classes) buffer. On an accelerator a scatter adds in
        # any order, so there the dense product keeps the targets bit-reproducible.
        classes_count = num_classes if targets is None else targets.shape[1]
        if native.available(device):  # the same sums in the same order, in one C loop
            return native.mix_targets(labels.cpu(), plan.perms, plan.weights, classes_count)
        batch = labels.shape[0]
        classes = labels.to(device=device, dtype=torch.long)
        classes = classes.index_select(0, _sources(plan, batch).reshape(-1)).view(-1, batch)
        weights = plan.weights.expand(batch, -1)
        zeros = torch.zeros(batch, classes_count, device=device, dtype=torch.float32)
        return zeros.scatter_add_(1, classes.T, weights)
    if targets is None:
        targets = _one_hot(labels, num_classes, device)
    batch = targets.shape[0]
    sources = _sources(plan, batch)  # (K, B)
    by_source = targets.index_select(0, sources.reshape(-1)).view(-1, batch, targets.shape[1])
    # A broadcast product and a sum: einsum's batched matmul of B tiny (1, K) x (K, N) products
    # costs milliseconds on CPU.
    return (plan.weights.T.unsqueeze(2) * by_source).sum(0)


def _check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: must be a positive integer, got {num_classes!r}")
    return num_classes


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator: expected a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator.device.type != device.type:
        raise ValueError(
            f"generator: lives on {generator.device}, but the images are on {device}; "
            "create it with torch.Generator(device=images.device)"
        )


# --- The field's baselines: Cutout, FMix, ResizeMix -------------------------------------------------


def _check_int_option(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be a whole number >= 1, got {value!r}")
    return value


def _check_positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return float(value)


def _check_scale(value: object) -> tuple[float, float]:
    numbers = list(value) if isinstance(value, (list, tuple)) else None
    if (
        numbers is None
        or len(numbers) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
        or not 0 < numbers[0] <= numbers[1] <= 1
    ):
        raise ValueError(
            f"scale: must be a [low, high] pair with 0 < low <= high <= 1, got {value!r}"
        )
    return float(numbers[0]), float(numbers[1])


class _NoWeights:
    """Mixin for modes that draw no Beta weights: like ``none``, they ignore alpha, so that one
    sweep can set alpha for every mode it runs."""

    default_alpha = None

    def _check_alpha(self, alpha: float | None) -> None:
        return None


class Cutout(_NoWeights, Mixer):
    """Cutout (DeVries & Taylor 2017): per image, a square of side ``length`` centred at a uniform
    pixel, clipped at the borders, set to 0 (the mean of normalised images); targets stay one-hot.

    A whole batch is cut with probability ``prob``; ``per_sample=False`` shares one square.
    """

    mode = "cutout"
    box = True
    default_per_sample = True
    options: ClassVar[tuple[str, ...]] = ("length",)

    def __init__(self, *, length: int = 16, **settings) -> None:
        super().__init__(**settings)
        self.length = _check_int_option("length", length)

    def _check_k(self, k: int | None) -> None:
        if k not in (None, 1):
            raise ValueError(f"k: cutout mixes no second image; leave k unset (got {k!r})")
        return None

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, length={self.length})"

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cut one square per image: returns (images with squares of zeros, one-hot targets)."""
        targets = self._label_matrix(images, labels)
        _check_generator(generator, images.device)
        batch, _, height, width = images.shape
        if self.length > min(height, width):
            raise ValueError(
                f"length: {self.length} is larger than the {height}x{width} images; "
                f"use at most {min(height, width)}"
            )
        if self.prob == 0.0:
            return images, targets
        device = images.device
        n = batch if self.per_sample else 1
        size = torch.tensor([[float(height)], [float(width)]], device=device)
        start = torch.floor(_rand((2, n), device, generator) * size) - self.length // 2
        if native.usable(images):  # the same zeros, copied and cleared by a C loop
            cut = self.prob == 1.0 or bool(_rand((1,), device, generator) < self.prob)
            return (native.cutout(images, start, self.length) if cut else images.clone()), targets
        side = torch.full_like(start, float(self.length))
        rows = _span_mask(start[0], side[0], height)
        cols = _span_mask(start[1], side[1], width)
        hole = rows.unsqueeze(2) & cols.unsqueeze(1)  # (n, H, W); the span mask clips at borders
        if self.prob < 1.0:
            hole = hole & (_rand((1,), device, generator) < self.prob)
        return images.masked_fill(hole.unsqueeze(1), 0), targets


def _lowpass_noise(
    n: int, height: int, width: int, decay: float, device: torch.device, generator
) -> Tensor:
    """(n, H, W) grey images of Fourier noise whose amplitude falls as 1 / f**decay."""
    fy = torch.fft.fftfreq(height, device=device).unsqueeze(1)
    fx = torch.fft.rfftfreq(width, device=device).unsqueeze(0)
    freq = torch.sqrt(fy * fy + fx * fx).clamp_min(1.0 / max(height, width))
    amplitude = freq.pow(-decay)
    parts = torch.randn(
        (2, n, height, width // 2 + 1), generator=generator, device=device, dtype=torch.float32
    )
    spectrum = torch.complex(parts[0] * amplitude, parts[1] * amplitude)
    return torch.fft.irfft2(spectrum, s=(height, width))


class FMix(Mixer):
    """FMix (Harris et al. 2020): lam ~ Beta(alpha, alpha); the round(lam H W) highest pixels of a
    low-pass Fourier noise image (amplitude 1 / f**decay, f floored at 1 / max(H, W)) come from
    x[perm]. Targets are the exact pixel shares.

    One mask and one permutation per batch as in the original; ``per_sample=True`` draws one mask
    per image. The top pixels are found by ranking on the device, so nothing synchronises.
    """

    mode = "fmix"
    two_image = True
    box = True
    default_k = 2
    options: ClassVar[tuple[str, ...]] = ("decay",)

    def __init__(self, *, decay: float = 3.0, **settings) -> None:
        super().__init__(**settings)
        self.decay = _check_positive("decay", decay)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, decay={self.decay})"

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        lam = _beta(self.alpha, n, device, generator)
        noise = _lowpass_noise(n, height, width, self.decay, device, generator).view(n, -1)
        pixels = height * width
        count = torch.round(lam * pixels)
        # rank[p] = position of pixel p when sorted from the highest noise down
        order = noise.argsort(dim=1, descending=True)
        positions = torch.arange(pixels, device=device).expand(n, -1)
        rank = torch.empty_like(order).scatter_(1, order, positions)
        level = (rank < count.unsqueeze(1)).view(n, height, width).long()
        share = count / pixels
        perms = _permutations(1, batch, device, generator)
        return _Plan(perms, torch.stack([1.0 - share, share], dim=1), level)


def _resize_matrix(start: Tensor, length: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """(n, size, size) rows that area-resample a line of ``size`` pixels into [start, start + length).

    Output pixel i of the span covers source interval [a, b) = (i - start) * size / length + [0, 1)
    * size / length; its row holds each source pixel's overlap with that interval over b - a: an
    exact box filter with fractional edges, so shrinking averages instead of aliasing. Rows
    outside the span are zero.
    """
    pos = torch.arange(size, device=start.device, dtype=dtype)
    start, length = start.to(dtype), length.to(dtype)
    step = (size / length).unsqueeze(1)  # (n, 1)
    a = ((pos - start.unsqueeze(1)) * step).unsqueeze(2)  # (n, size, 1)
    b = a + step.unsqueeze(2)
    overlap = (torch.minimum(b, pos + 1.0) - torch.maximum(a, pos)).clamp_min(0.0) / step.unsqueeze(
        2
    )
    inside = _span_mask(start, length, size).unsqueeze(2)
    return overlap * inside


class ResizeMix(_NoWeights, Mixer):
    """ResizeMix (Qin et al. 2020): tau ~ U(scale); x[perm] shrunk to (round(tau H), round(tau W))
    and pasted at a uniform position where it fits; targets weight the partner by the pasted area.

    The project's reading: one tau, position and permutation per batch as in the original
    (``per_sample=True`` draws them per image); the shrink is an exact area (box-filter) resample,
    which is antialiased, written as two products with resampling matrices built on the device,
    so that the data-dependent patch size never reaches the host and nothing synchronises. On the
    CPU a per-batch draw is read (host memory: no synchronisation) to cut the products to the
    patch, which gives the same pixels at a fraction of the cost.
    """

    mode = "resizemix"
    two_image = True
    box = True
    default_k = 2
    options: ClassVar[tuple[str, ...]] = ("scale",)

    def __init__(self, *, scale: tuple[float, float] = (0.1, 0.8), **settings) -> None:
        super().__init__(**settings)
        self.scale = _check_scale(scale)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, scale={self.scale})"

    def _plan(self, batch, n, height, width, device, generator) -> _Plan:
        low, high = self.scale
        tau = low + (high - low) * _rand((n,), device, generator)
        size = torch.tensor([[float(height)], [float(width)]], device=device)
        side = torch.round(tau * size).clamp_min(1.0)  # (2, n): patch height, width
        slack = size - side
        corner = torch.minimum(torch.floor(_rand((2, n), device, generator) * (slack + 1)), slack)
        rows = _span_mask(corner[0], side[0], height)
        cols = _span_mask(corner[1], side[1], width)
        level = (rows.unsqueeze(2) & cols.unsqueeze(1)).long()
        pasted = side.prod(dim=0) / (height * width)
        perms = _permutations(1, batch, device, generator)
        plan = _Plan(perms, torch.stack([1.0 - pasted, pasted], dim=1), level)
        plan.corner, plan.side = corner, side  # for the resampling in _paste
        return plan

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paste a shrunk partner into each image: returns (mixed images, float32 targets)."""
        targets = self._label_matrix(images, labels)
        _check_generator(generator, images.device)
        if not images.is_floating_point():
            raise ValueError(
                f"images: resizemix resamples pixels and needs a floating-point tensor, got {images.dtype}"
            )
        if self.prob == 0.0:
            return images, targets
        batch, _, height, width = images.shape
        n = batch if self.per_sample else 1
        plan = self._plan(batch, n, height, width, images.device, generator)
        corner, side = plan.corner, plan.side
        if self.prob < 1.0:
            plan = _gate(plan, self.prob, images.device, generator)
        return _paste_resized(images, plan, corner, side), _mix_targets(targets, plan, labels)


def _paste_resized(images: Tensor, plan: _Plan, corner: Tensor, side: Tensor) -> Tensor:
    """x[perm] area-resampled into each box of ``plan``; the box's pixels replaced by it."""
    height, width = images.shape[-2:]
    work = torch.float64 if images.dtype == torch.float64 else torch.float32
    rows = _resize_matrix(corner[0], side[0], height, work)  # (n, H, H)
    cols = _resize_matrix(corner[1], side[1], width, work)  # (n, W, W)
    if images.dtype == work and images.is_contiguous() and native.usable(images):
        # The products without their zeros, in a C loop: each patch row sums the few partner
        # rows in its band (native.resize_paste). The coin is read from host memory.
        if not bool(plan.pixel_level.any()):
            return images
        box = torch.cat([corner, side]).long()  # (4, n): top, left, height, width
        return native.resize_paste(images, plan.perms[0], rows, cols, box)
    if images.device.type == "cpu" and rows.shape[0] == 1 and not torch.compiler.is_compiling():
        # On the CPU the draws are already host values, so reading them costs no synchronisation,
        # and products restricted to the patch cost tau**2 of the full-frame ones.
        return _paste_patch_cpu(images, plan, rows[0], cols[0], corner[:, 0], side[:, 0])
    partner = images.index_select(0, plan.perms[0]).to(work)
    resized = rows.unsqueeze(1) @ partner @ cols.transpose(1, 2).unsqueeze(1)
    box = plan.pixel_level.bool().unsqueeze(1)
    return torch.where(box, resized.to(images.dtype), images)


def _paste_patch_cpu(
    images: Tensor, plan: _Plan, rows: Tensor, cols: Tensor, corner: Tensor, side: Tensor
) -> Tensor:
    """The same resample as the full-frame products, computed only for one shared patch."""
    if not bool(plan.pixel_level.any()):  # the batch lost the prob coin
        return images
    top, left, patch_h, patch_w = (int(v) for v in torch.cat([corner, side]).tolist())
    rows = rows[top : top + patch_h]  # (h, H)
    cols = cols[left : left + patch_w]  # (w, W)
    batch, channels, height, width = images.shape
    # Shrink every image first, then pick the partners: only small patches are copied. The
    # column pass is one large product over all rows of the batch, the fastest shape for BLAS.
    narrow = images.to(rows.dtype).reshape(-1, width) @ cols.T
    patch = rows @ narrow.view(batch * channels, height, patch_w)
    patch = patch.view(batch, channels, patch_h, patch_w).index_select(0, plan.perms[0])
    mixed = images.clone()
    mixed[:, :, top : top + patch_h, left : left + patch_w] = patch.to(images.dtype)
    return mixed


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
        FMix,
        ResizeMix,
    )
}
#: settings only some modes have, and the modes that have them
MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "length": ("cutout",),
    "decay": ("fmix",),
    "scale": ("resizemix",),
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
    prob: float = 1.0,
    per_sample: bool | None = None,
    layers: tuple[int, ...] | None = None,
    **options: object,
) -> Mixer:
    """The mixer for ``mode`` (one of MIXING_MODES); unset settings take the mode's reference values.

    ``options`` are the settings only some modes have (MODE_OPTIONS: length, decay, scale); None
    means unset. ``layers`` is the hidden-state mixers' (manifold_mixup) list of layers.
    """
    if mode not in _MIXERS:
        raise ValueError(
            f"mode: unknown mixing mode {mode!r}; choose one of {', '.join(MIXING_MODES)}"
        )
    for name, value in options.items():
        if name not in MODE_OPTIONS:
            raise ValueError(
                f"{name}: not a mixing setting; the optional ones are {', '.join(MODE_OPTIONS)}"
            )
        if value is not None and mode not in MODE_OPTIONS[name]:
            raise ValueError(
                f"{name}: only {', '.join(MODE_OPTIONS[name])} has this setting, not {mode}; leave it unset"
            )
    extra = {name: value for name, value in options.items() if value is not None}
    # only the hidden-state mixers take layers
    if layers is not None and not hasattr(_MIXERS[mode], "draw_hidden"):
        raise ValueError(f"layers: {mode} mixes images, not hidden layers; leave layers unset")
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


# --- Manifold Mixup: mixing hidden states, with the model's cooperation -------------------------


@dataclass
class HiddenBlend:
    """Mixup of a hidden state at ``layer``: ``lam h + (1 - lam) h[perm]`` with the plan's weights.

    A model that runs in parts applies it to its state at ``layer`` (``model(x, hidden_mix=...)``).
    """

    layer: int
    plan: _Plan

    def __call__(self, hidden: Tensor) -> Tensor:
        """The blended hidden state (any shape with the batch first); differentiable."""
        # Not _apply_blend: its in-place, preallocated partner buffer cannot carry gradients.
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
        raise ValueError(
            f"layers: expected a list of layer indices such as [0, 1, 2], got {layers!r}"
        )
    values = tuple(layers)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(
            f"layers: expected a non-empty list of layer indices >= 0 (0 = the input), got {list(values)}"
        )
    if len(set(values)) != len(values):
        raise ValueError(f"layers: each layer may appear once, got {list(values)}")
    return values


class ManifoldMixup(Mixer):
    """Manifold Mixup (Verma et al. 2019): Mixup of the hidden states at a layer drawn uniformly
    from ``layers`` (default: the input and the outputs of the first two stages), lam ~ Beta(alpha,
    alpha) with alpha 2.0 as in their CIFAR runs, one lam and one permutation per batch; the targets
    blend with the same lam.

    ``draw_hidden`` gives the targets and a ``HiddenBlend`` for a model that runs in parts; the
    engine passes it to the model. Called like the other mixers, on images alone, only the input
    can be mixed, so the call is Mixup of the images with this alpha (layer 0).
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
        _check_generator(generator, images.device)
        if self.prob == 0.0:
            return targets, None
        layer = self.layers[_host_index(len(self.layers), generator)]
        batch = images.shape[0]
        plan = self._plan(batch, batch if self.per_sample else 1, 0, 0, images.device, generator)
        if self.prob < 1.0:
            plan = _gate(plan, self.prob, images.device, generator)
        return _mix_targets(targets, plan, labels), HiddenBlend(layer, plan)


MIXING_MODES = (*MIXING_MODES, ManifoldMixup.mode)
_MIXERS[ManifoldMixup.mode] = ManifoldMixup
__all__ += ["HiddenBlend", "ManifoldMixup"]
