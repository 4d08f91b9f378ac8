"""Predictive entropy, summarised over all images and over correct and incorrect ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


def entropy_summary(entropy: Tensor, correct: Tensor) -> dict[str, Any]:
    """Mean and median predictive entropy over all images, and over correct and incorrect ones."""

    def summary(values: Tensor) -> dict[str, Any]:
        values = values.double()
        if values.numel() == 0:
            return {"count": 0, "mean": None, "median": None}
        # quantile, not median: torch's median returns the lower middle value of an even count
        median = float(values.quantile(0.5))
        return {"count": values.numel(), "mean": float(values.mean()), "median": median}

    correct = correct.bool()
    overall = summary(entropy)
    return {
        "mean": overall["mean"],
        "median": overall["median"],
        "correct": summary(entropy[correct]),
        "incorrect": summary(entropy[~correct]),
    }
