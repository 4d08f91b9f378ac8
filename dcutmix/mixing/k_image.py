"""The K-image modes: the naive expansions of Mixup and CutMix, and the paper's DMixup and DCutMix
(Jeong et al., "Observations on K-image Expansion of Image-Mixing Augmentation", arXiv 2110.04248).
"""

from __future__ import annotations

import torch

from dcutmix.mixing import native
from dcutmix.mixing.base import Mixer
from dcutmix.mixing.plan import (
    Plan,
    beta,
    clipped_box,
    log_gamma,
    log_gamma_and_uniform,
    permutations,
    span_mask,
)


class NaiveMixup(Mixer):
    """Naive K-image Mixup (a reconstruction; the paper's exact construction is not published):
    two-image Mixup applied K-1 times in a row, step j blending the running image with a fresh
    partner x[perm_j] by its own lam_j ~ Beta(alpha, alpha). The weights are the exact products
    of the lams: the anchor keeps prod(lam), partner j gets (1 - lam_j) * prod(lam after j).
    The baseline of Jeong et al. (arXiv 2110.04248). Defaults: k=3, alpha=1.0, per_sample=False.
    """

    mode = "naive_mixup"
    default_k = 3

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        lams = beta(self.alpha, (self.k - 1) * n, device, generator).view(self.k - 1, n)
        weights = [torch.ones(n, device=device)]
        for lam in lams:
            weights = [w * lam for w in weights]
            weights.append(1.0 - lam)
        perms = permutations(self.k - 1, batch, device, generator)
        return Plan(perms, torch.stack(weights, dim=1), None)


class NaiveCutMix(Mixer):
    """Naive K-image CutMix (a reconstruction; the paper's exact construction is not published):
    K-1 independent CutMix boxes, each drawn as in CutMix and clipped, pasted one after another
    from independent permutations. Later boxes may cover earlier ones, so each source's weight is
    counted from the pixels visible at the end.
    The baseline of Jeong et al. (arXiv 2110.04248). Defaults: k=3, alpha=1.0, per_sample=False.
    """

    mode = "naive_cutmix"
    box = True
    default_k = 3

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        steps = self.k - 1
        lam = beta(self.alpha, steps * n, device, generator).view(steps, n)
        top, box_h, left, box_w = clipped_box(lam, height, width, device, generator)
        rows = span_mask(top, box_h, height)  # (steps, n, H)
        cols = span_mask(left, box_w, width)  # (steps, n, W)
        level = torch.zeros(n, height, width, device=device, dtype=torch.long)
        for j in range(steps):
            level = torch.where(rows[j].unsqueeze(2) & cols[j].unsqueeze(1), j + 1, level)
        counts = torch.stack([(level == s).sum(dim=(1, 2)) for s in range(self.k)], dim=1)
        perms = permutations(steps, batch, device, generator)
        return Plan(perms, counts.float() / (height * width), level)


class DMixup(Mixer):
    """DMixup (Jeong et al., arXiv 2110.04248): weights phi ~ Dirichlet(alpha * 1_K) per sample;
    x' = phi_0 x + sum_k phi_k x[perm_k]. Defaults: k=3, alpha=1/3, per_sample=True.
    """

    mode = "dmixup"
    default_k = 3
    default_alpha = 1.0 / 3.0
    default_per_sample = True

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        phi = torch.softmax(log_gamma(self.alpha, (n, self.k), device, generator), dim=1)
        perms = permutations(self.k - 1, batch, device, generator)
        return Plan(perms, phi, None)


class DCutMix(Mixer):
    """DCutMix (Jeong et al., arXiv 2110.04248): K nested boxes from Dirichlet stick-breaking,
    never clipped. Defaults: k=5, alpha=0.2, per_sample=True.

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

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        k, steps = self.k, self.k - 1
        # The K Gamma draws are exchangeable, so they are read last to first: cum[:, i] is
        # log(phi_{K-1-i} + ... + phi_{K-1}) up to a constant, and sqrt(1 - v_j) =
        # sqrt(tail_{j+1} / tail_j) is a difference of logs, without dividing by ~0.
        # one uniform draw for the Gamma draws, the offsets of the boxes and the permutations
        log_g, uniform = log_gamma_and_uniform(
            self.alpha, (n, k), steps * (2 * n + batch), device, generator
        )
        cum = torch.logcumsumexp(log_g, dim=1)
        shrink = torch.sub(cum[:, :-1], cum[:, 1:]).T.mul_(0.5).exp_()  # row K-2-j: box j+1 in j
        offsets = uniform[: steps * 2 * n].view(steps, 2, n)
        perms = uniform[steps * 2 * n :].view(steps, batch).argsort(dim=1)
        if native.available(device):
            # the same boxes from the same draws in one C loop (native.nested_boxes)
            rows, cols, visible = native.nested_boxes(shrink, offsets, height, width)
            return Plan(perms, visible, rows=rows, cols=cols)

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
        return Plan(perms, visible, rows=depth[0, :, :height], cols=depth[1, :, :width])
