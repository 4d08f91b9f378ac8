"""FMix (Harris et al. 2020): a low-pass Fourier noise mask decides which pixels the partner gives."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dcutmix.mixing.base import Mixer, check_positive
from dcutmix.mixing.plan import Plan, beta, permutations


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
    Arguments: ``decay`` (the spectrum's power, default 3.0), alpha (default 1.0), k=2 (fixed).
    """

    mode = "fmix"
    two_image = True
    box = True
    default_k = 2
    options: ClassVar[tuple[str, ...]] = ("decay",)

    def __init__(self, *, decay: float = 3.0, **settings) -> None:
        super().__init__(**settings)
        self.decay = check_positive("decay", decay)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, decay={self.decay})"

    def _plan(self, batch, n, height, width, device, generator) -> Plan:
        lam = beta(self.alpha, n, device, generator)
        noise = _lowpass_noise(n, height, width, self.decay, device, generator).view(n, -1)
        pixels = height * width
        count = torch.round(lam * pixels)
        # rank[p] = position of pixel p when sorted from the highest noise down
        order = noise.argsort(dim=1, descending=True)
        positions = torch.arange(pixels, device=device).expand(n, -1)
        rank = torch.empty_like(order).scatter_(1, order, positions)
        level = (rank < count.unsqueeze(1)).view(n, height, width).long()
        share = count / pixels
        perms = permutations(1, batch, device, generator)
        return Plan(perms, torch.stack([1.0 - share, share], dim=1), level)
