"""Expected calibration error and the reliability table of a set of predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dcutmix.analyze.common import ECE_BINS

if TYPE_CHECKING:
    from torch import Tensor


def calibration(
    confidence: Tensor, correct: Tensor, bins: int = ECE_BINS
) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error in % and reliability-diagram bins over ``bins`` equal-width bins.

    Bin ``b`` holds confidences in ``(b/bins, (b+1)/bins]`` (the first also holds 0); each bin
    reports its edges, count, mean confidence and accuracy (both None when it is empty).
    """
    import torch

    confidence = confidence.double().flatten().cpu()
    correct = correct.double().flatten().cpu()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    index = torch.searchsorted(edges[1:-1], confidence)
    counts = torch.bincount(index, minlength=bins).double()
    filled = counts > 0
    mean_confidence = torch.bincount(index, confidence, minlength=bins) / counts.clamp(min=1)
    accuracy = torch.bincount(index, correct, minlength=bins) / counts.clamp(min=1)
    gaps = counts * (mean_confidence - accuracy).abs()
    ece = 100.0 * float(gaps.sum()) / max(1, confidence.numel())
    table = [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(counts[b]),
            "confidence": float(mean_confidence[b]) if filled[b] else None,
            "accuracy": float(accuracy[b]) if filled[b] else None,
        }
        for b in range(bins)
    ]
    return ece, table
