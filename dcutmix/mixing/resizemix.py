"""ResizeMix (Qin et al. 2020): the partner shrunk by an exact area resample and pasted whole."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dcutmix.errors import InputError
from dcutmix.mixing import native
from dcutmix.mixing.apply import gate, mix_targets
from dcutmix.mixing.base import Mixer, NoWeights, check_generator, check_scale
from dcutmix.mixing.plan import Plan, permutations, rand, span_mask


def resize_matrix(start: Tensor, length: Tensor, size: int, dtype: torch.dtype) -> Tensor:
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
    inside = span_mask(start, length, size).unsqueeze(2)
    return overlap * inside


class ResizeMix(NoWeights, Mixer):
    """ResizeMix (Qin et al. 2020): tau ~ U(scale); x[perm] shrunk to (round(tau H), round(tau W))
    and pasted at a uniform position where it fits; targets weight the partner by the pasted area.

    The project's reading: one tau, position and permutation per batch as in the original
    (``per_sample=True`` draws them per image); the shrink is an exact area (box-filter) resample,
    which is antialiased, written as two products with resampling matrices built on the device,
    so that the data-dependent patch size never reaches the host and nothing synchronises. On the
    CPU a per-batch draw is read (host memory: no synchronisation) to cut the products to the
    patch, which gives the same pixels at a fraction of the cost.
    Arguments: ``scale`` (the [low, high] range of tau, default [0.1, 0.8]), k=2 (fixed); alpha
    is ignored (no Beta draw).
    """

    mode = "resizemix"
    two_image = True
    box = True
    default_k = 2
    options: ClassVar[tuple[str, ...]] = ("scale",)

    def __init__(self, *, scale: tuple[float, float] = (0.1, 0.8), **settings) -> None:
        super().__init__(**settings)
        self.scale = check_scale(scale)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, scale={self.scale})"

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        low, high = self.scale
        tau = low + (high - low) * rand((n,), device, generator)
        size = torch.tensor([[float(height)], [float(width)]], device=device)
        side = torch.round(tau * size).clamp_min(1.0)  # (2, n): patch height, width
        slack = size - side
        corner = torch.minimum(torch.floor(rand((2, n), device, generator) * (slack + 1)), slack)
        rows = span_mask(corner[0], side[0], height)
        cols = span_mask(corner[1], side[1], width)
        level = (rows.unsqueeze(2) & cols.unsqueeze(1)).long()
        pasted = side.prod(dim=0) / (height * width)
        perms = permutations(1, batch, device, generator)
        plan = Plan(perms, torch.stack([1.0 - pasted, pasted], dim=1), level)
        plan.corner, plan.side = corner, side  # for the resampling in _paste
        return plan

    def __call__(
        self, images: Tensor, labels: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paste a shrunk partner into each image: returns (mixed images, float32 targets)."""
        targets = self._label_matrix(images, labels)
        check_generator(generator, images.device)
        if not images.is_floating_point():
            raise InputError(
                "images",
                f"resizemix resamples pixels and needs a floating-point tensor, got {images.dtype}",
            )
        if self.prob == 0.0:
            return images, targets
        batch, _, height, width = images.shape
        n = batch if self.per_sample else 1
        plan = self._plan(batch, n, height, width, images.device, generator)
        corner, side = plan.corner, plan.side
        if self.prob < 1.0:
            plan = gate(plan, self.prob, images.device, generator)
        return paste_resized(images, plan, corner, side), mix_targets(targets, plan, labels)


def paste_resized(images: Tensor, plan: Plan, corner: Tensor, side: Tensor) -> Tensor:
    """x[perm] area-resampled into each box of ``plan``; the box's pixels replaced by it."""
    height, width = images.shape[-2:]
    work = torch.float64 if images.dtype == torch.float64 else torch.float32
    rows = resize_matrix(corner[0], side[0], height, work)  # (n, H, H)
    cols = resize_matrix(corner[1], side[1], width, work)  # (n, W, W)
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
    images: Tensor, plan: Plan, rows: Tensor, cols: Tensor, corner: Tensor, side: Tensor
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
