"""A batch's mixing plan and the random draws every mode makes it from.

All randomness comes from the optional ``torch.Generator`` on the images' device, in float32, so
the same generator gives the same plan on any host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Plan:
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


def rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)


def log_gamma(
    alpha: float, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """log of Gamma(alpha, 1) draws, finite even for tiny alpha.

    Gamma(a) = Gamma(a + 1) * U**(1/a); in log space the second factor is log(U)/a, which stays
    finite where U**(1/a) would underflow to zero and turn a Beta or Dirichlet draw into 0/0.
    """
    return log_gamma_and_uniform(alpha, shape, 0, device, generator)[0]


def log_gamma_and_uniform(
    alpha: float, shape: tuple[int, ...], count: int, device: torch.device, generator
) -> tuple[Tensor, Tensor]:
    """``log_gamma``'s draws and then ``count`` U(0, 1) draws, the uniform ones in one call.

    On the CPU the values are those of separate calls in the same order (a CPU generator fills a
    tensor in sequence); the single call saves an op per batch.
    """
    concentration = torch.full(shape, alpha + 1.0, device=device, dtype=torch.float32)
    g = torch._standard_gamma(concentration, generator=generator)
    size = g.numel()
    draws = rand((size + count,), device, generator)
    u = draws[:size].view(shape).neg_().add_(1.0)  # 1 - U, in (0, 1]: the same rounding
    log_g = torch.log_(g.clamp_min_(torch.finfo(torch.float32).tiny))
    return log_g.add_(torch.log_(u).div_(alpha)), draws[size:]


def beta(alpha: float, n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """(n,) draws of Beta(alpha, alpha), never NaN."""
    log_g = log_gamma(alpha, (2, n), device, generator)
    return torch.sigmoid(log_g[0] - log_g[1])


def permutations(count: int, batch: int, device: torch.device, generator) -> Tensor:
    """(count, batch) independent uniform random permutations of range(batch)."""
    return rand((count, batch), device, generator).argsort(dim=1)


def span_mask(start: Tensor, length: Tensor, size: int) -> Tensor:
    """(..., size) booleans: position p is inside [start, start + length)."""
    pos = torch.arange(size, device=start.device, dtype=start.dtype)
    start = start.unsqueeze(-1)
    return (pos >= start) & (pos < start + length.unsqueeze(-1))


def clipped_box(
    lam: Tensor, height: int, width: int, device: torch.device, generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CutMix's box for each lam: sides H*sqrt(1-lam), W*sqrt(1-lam) rounded, centre uniform over
    the pixel grid, clipped at the borders. Returns (top, box_height, left, box_width) after clipping."""
    side = torch.sqrt(1.0 - lam)
    cut_h = torch.round(height * side)
    cut_w = torch.round(width * side)
    centre_y = torch.floor(rand(tuple(lam.shape), device, generator) * height)
    centre_x = torch.floor(rand(tuple(lam.shape), device, generator) * width)
    top = centre_y - torch.floor(cut_h / 2)
    left = centre_x - torch.floor(cut_w / 2)
    y0, y1 = top.clamp(0, height), (top + cut_h).clamp(0, height)
    x0, x1 = left.clamp(0, width), (left + cut_w).clamp(0, width)
    return y0, y1 - y0, x0, x1 - x0
