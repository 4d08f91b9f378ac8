"""Applying a plan: the prob gate, the pixel copies of the box modes, the blends, the soft targets.

On the CPU the copies, blends and targets run in the C kernels of ``dcutmix.mixing.native``, which
give the tensor code's pixels and targets from the same plan (blends to the last bits).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dcutmix.mixing import native
from dcutmix.mixing.plan import Plan, rand


def one_hot_targets(labels: Tensor, num_classes: int, device: torch.device) -> Tensor:
    """(B, num_classes) float32 one-hot rows of checked class indices, on ``device``."""
    onehot = torch.zeros(labels.shape[0], num_classes, device=device, dtype=torch.float32)
    return onehot.scatter_(1, labels.to(device=device, dtype=torch.long).unsqueeze(1), 1.0)


def gate(plan: Plan, prob: float, device: torch.device, generator) -> Plan:
    """Mix the whole batch with probability ``prob``, decided on the device without a host sync."""
    mixed = rand((1,), device, generator) < prob
    anchor_only = torch.zeros_like(plan.weights)
    anchor_only[:, 0] = 1.0
    weights = torch.where(mixed, plan.weights, anchor_only)
    # An unmixed batch shows the anchor (level 0) everywhere.
    gated = [None if t is None else t * mixed for t in (plan.pixel_level, plan.rows, plan.cols)]
    box = None
    if plan.box is not None:
        top, box_h, left, box_w = plan.box
        box = (top, box_h * mixed, left, box_w)  # an empty rectangle when the coin says no
    return Plan(plan.perms, weights, *gated, box=box)


def source_indices(plan: Plan, batch: int) -> Tensor:
    """(K, B) batch index of every source, the anchor (itself) first."""
    anchor = torch.arange(batch, device=plan.perms.device).unsqueeze(0)
    return torch.cat([anchor, plan.perms], dim=0)


def apply_boxes(images: Tensor, plan: Plan) -> Tensor:
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
    sources = source_indices(plan, batch).T  # (B, K)
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


def _paste_box_cpu(images: Tensor, plan: Plan) -> Tensor:
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


def apply_blend(images: Tensor, plan: Plan) -> Tensor:
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


def mix_targets(
    targets: Tensor | None,
    plan: Plan,
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
        classes = classes.index_select(0, source_indices(plan, batch).reshape(-1)).view(-1, batch)
        weights = plan.weights.expand(batch, -1)
        zeros = torch.zeros(batch, classes_count, device=device, dtype=torch.float32)
        return zeros.scatter_add_(1, classes.T, weights)
    if targets is None:
        targets = one_hot_targets(labels, num_classes, device)
    batch = targets.shape[0]
    sources = source_indices(plan, batch)  # (K, B)
    by_source = targets.index_select(0, sources.reshape(-1)).view(-1, batch, targets.shape[1])
    # A broadcast product and a sum: einsum's batched matmul of B tiny (1, K) x (K, N) products
    # costs milliseconds on CPU.
    return (plan.weights.T.unsqueeze(2) * by_source).sum(0)
