"""Published top-1 errors of the DCutMix paper, shipped with the package for the report."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class PaperResult:
    """One published figure; ``k``, ``alpha`` and ``prob`` are None where the paper does not say."""

    dataset: str
    model: str
    method: str
    k: int | None
    alpha: float | None
    prob: float | None
    top1_err: float
    source: str

    def matches(
        self,
        dataset: str,
        model: str,
        mode: str,
        k: int | None,
        alpha: float | None,
        prob: float | None,
    ) -> bool:
        """Whether a run's settings are the ones this figure was published for."""
        if (dataset, model, mode) != (self.dataset, self.model, self.method):
            return False
        if self.k is not None and k != self.k:
            return False
        # The table writes 1/3 as 0.3333, so compare to its four decimals.
        return _close(self.alpha, alpha) and _close(self.prob, prob)


def _close(published: float | None, used: float | None) -> bool:
    if published is None:
        return True
    return used is not None and math.isclose(published, used, rel_tol=0, abs_tol=1e-4)


def _number(text: str, kind: type) -> int | float | None:
    return kind(text) if text.strip() else None


@cache
def paper_results() -> tuple[PaperResult, ...]:
    """Every row of ``paper_results.csv``."""
    text = resources.files(__name__).joinpath("paper_results.csv").read_text(encoding="utf-8")
    return tuple(
        PaperResult(
            dataset=row["dataset"],
            model=row["model"],
            method=row["method"],
            k=_number(row["k"], int),
            alpha=_number(row["alpha"], float),
            prob=_number(row["prob"], float),
            top1_err=float(row["top1_err"]),
            source=row["source"],
        )
        for row in csv.DictReader(io.StringIO(text))
    )


def find_paper_result(
    dataset: str, model: str, mode: str, k: int | None, alpha: float | None, prob: float | None
) -> PaperResult | None:
    """The published figure for these settings, or None when the paper has none."""
    for result in paper_results():
        if result.matches(dataset, model, mode, k, alpha, prob):
            return result
    return None
