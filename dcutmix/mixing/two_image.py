"""The two-image modes the paper starts from: no mixing, Mixup and CutMix."""

from __future__ import annotations

import torch

from dcutmix.errors import InputError
from dcutmix.mixing.base import Mixer
from dcutmix.mixing.plan import Plan, beta, clipped_box, permutations, span_mask


class NoMix(Mixer):
    """No mixing: the images unchanged, one-hot targets (the baseline every table starts from).

    Takes only ``num_classes`` and ``prob``; ``k`` and ``alpha`` must be left unset.
    """

    mode = "none"
    default_alpha = None

    def _check_k(self, k: int | None) -> None:
        if k not in (None, 1):
            raise InputError("k", f"the 'none' mode mixes nothing; leave k unset (got {k!r})")
        return None

    def _check_alpha(self, alpha: float | None) -> None:
        return None


class Mixup(Mixer):
    """Mixup (Zhang et al. 2018): lam ~ Beta(alpha, alpha), x' = lam x + (1 - lam) x[perm].

    One lam for the batch as in the original; ``per_sample=True`` draws one per sample.
    Defaults: k=2 (fixed), alpha=1.0, per_sample=False.
    """

    mode = "mixup"
    two_image = True
    default_k = 2

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        lam = beta(self.alpha, n, device, generator)
        perms = permutations(1, batch, device, generator)
        return Plan(perms, torch.stack([lam, 1.0 - lam], dim=1), None)


class CutMix(Mixer):
    """CutMix (Yun et al. 2019): a box of area (1 - lam) H W, centre uniform, clipped at the borders,
    pasted from x[perm]; targets weighted by the area that is really pasted.

    One box for the batch as in the original; ``per_sample=True`` draws one per sample.
    Defaults: k=2 (fixed), alpha=1.0, per_sample=False.
    """

    mode = "cutmix"
    two_image = True
    box = True
    default_k = 2

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        lam = beta(self.alpha, n, device, generator)
        top, box_h, left, box_w = clipped_box(lam, height, width, device, generator)
        pasted = box_h * box_w / (height * width)
        level = (
            span_mask(top, box_h, height).unsqueeze(2) & span_mask(left, box_w, width).unsqueeze(1)
        ).long()
        perms = permutations(1, batch, device, generator)
        weights = torch.stack([1.0 - pasted, pasted], dim=1)
        return Plan(perms, weights, level, box=(top, box_h, left, box_w))
