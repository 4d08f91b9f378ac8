"""Published top-1 errors, shipped with the package for the report.

``paper_results.csv``: the DCutMix paper's tables. A row's ``method`` is a mixing mode (``kind``
"mixing") or a regulariser of the model or the trainer (``kind`` "regulariser": stochdepth,
dropblock, label_smoothing); ``run_method`` names the method a run's settings amount to, so a
measured row meets its paper row.

``fmnist_results.csv``: the field's published figures on Fashion-MNIST (Random Erasing's table,
a rerun of it on the current release, the dataset's benchmark list), each with its source, the
dataset release it was measured on, the recipe, and the caveat a reader needs beside it. Several
may match one run (``find_published``).
"""

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
    kind: str
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
            kind=row["kind"],
            k=_number(row["k"], int),
            alpha=_number(row["alpha"], float),
            prob=_number(row["prob"], float),
            top1_err=float(row["top1_err"]),
            source=row["source"],
        )
        for row in csv.DictReader(io.StringIO(text))
    )


# The paper's regularisers and the run settings that select them.
REGULARISERS = ("stochdepth", "dropblock", "label_smoothing")

# Rows of the paper's table this framework does not reproduce, and why.
NOT_REPRODUCED = {
    "stylemix": (
        "StyleMix mixes content and style through a pretrained AdaIN style-transfer network "
        "(Hong et al., 2021), whose weights cannot be obtained here; it is not faked"
    ),
    "stylecutmix": (
        "StyleCutMix mixes content and style through a pretrained AdaIN style-transfer network "
        "(Hong et al., 2021), whose weights cannot be obtained here; it is not faked"
    ),
}


def run_method(
    mode: str,
    *,
    stochastic_depth: float | None = None,
    dropblock: object = None,
    label_smoothing: float | None = None,
) -> str:
    """The paper's method a run amounts to: its mixing mode, or the one regulariser it adds to no
    mixing (``stochdepth``, ``dropblock``, ``label_smoothing``); combinations are joined by ``+``
    and match no paper row."""
    added = [
        name
        for name, used in (
            ("stochdepth", stochastic_depth is not None),
            ("dropblock", dropblock is not None),
            ("label_smoothing", bool(label_smoothing)),
        )
        if used
    ]
    if not added:
        return mode
    return "+".join(added if mode == "none" else [mode, *added])


def find_paper_result(
    dataset: str,
    model: str,
    mode: str,
    k: int | None,
    alpha: float | None,
    prob: float | None,
    *,
    stochastic_depth: float | None = None,
    dropblock: object = None,
    label_smoothing: float | None = None,
) -> PaperResult | None:
    """The published figure for these settings, or None when the paper has none.

    A regulariser run (e.g. PyramidNet-200 with ``model.stochastic_depth`` set and no mixing)
    matches the regulariser's row; the regulariser's own settings are not published, so any
    value matches.
    """
    method = run_method(
        mode,
        stochastic_depth=stochastic_depth,
        dropblock=dropblock,
        label_smoothing=label_smoothing,
    )
    for result in paper_results():
        if result.method in REGULARISERS and result.method == method:
            if (result.dataset, result.model) == (dataset, model):
                return result
        elif result.matches(dataset, model, method, k, alpha, prob):
            return result
    return None


def not_reproduced() -> list[tuple[PaperResult, str]]:
    """The paper's rows this framework does not reproduce, each with the reason."""
    return [(r, NOT_REPRODUCED[r.method]) for r in paper_results() if r.method in NOT_REPRODUCED]


def reproducible_results() -> tuple[PaperResult, ...]:
    """The paper's rows this framework reproduces (each has an experiment preset)."""
    return tuple(r for r in paper_results() if r.method not in NOT_REPRODUCED)


# The recipes the published figures name, in words.
RECIPES = {
    "RE": (
        "Random Erasing's: 300 epochs, batch 128, SGD lr 0.1 x0.1 at epochs 150 and 225, "
        "momentum 0.9, weight decay 5e-4, crop (padding 4) and flip"
    ),
}


@dataclass(frozen=True)
class PublishedResult:
    """A published figure from outside the paper, with where it comes from and what to mind.

    ``settings`` are the settings a run must have for the figure to apply (the CIFAR ResNets'
    ``width`` and ``shortcut``, random erasing's ``fill`` and ``attempts``), as the report's flat
    settings name them; ``plus_minus`` is the spread the source gives.
    """

    dataset: str
    model: str
    method: str
    top1_err: float
    plus_minus: float | None
    release: str
    recipe: str
    settings: tuple[tuple[str, str], ...]
    source: str
    caveat: str

    def label(self) -> str:
        """The figure as a table cell shows it, e.g. ``4.82 ± 0.04 (current)``."""
        spread = f" ± {self.plus_minus:.2f}" if self.plus_minus is not None else ""
        return f"{self.top1_err:.2f}{spread} ({self.release})"

    def recipe_text(self) -> str:
        """The recipe in words."""
        return RECIPES.get(self.recipe, self.recipe)


def _settings(text: str) -> tuple[tuple[str, str], ...]:
    pairs = [item.partition("=") for item in text.split(";") if item.strip()]
    return tuple((key.strip(), value.strip()) for key, _, value in pairs)


@cache
def published_results() -> tuple[PublishedResult, ...]:
    """Every row of ``fmnist_results.csv``."""
    text = resources.files(__name__).joinpath("fmnist_results.csv").read_text(encoding="utf-8")
    return tuple(
        PublishedResult(
            dataset=row["dataset"],
            model=row["model"],
            method=row["method"],
            top1_err=float(row["top1_err"]),
            plus_minus=_number(row["plus_minus"], float),
            release=row["dataset_release"],
            recipe=row["recipe"],
            settings=_settings(row["run_settings"]),
            source=row["source"],
            caveat=row["caveat"],
        )
        for row in csv.DictReader(io.StringIO(text))
    )


def find_published(
    dataset: str, model: str, method: str, settings: dict[str, object] | None = None
) -> tuple[PublishedResult, ...]:
    """The published figures for a run of ``method`` (``run_method``'s name) on ``dataset`` with
    ``model`` whose ``settings`` (the report's flat settings) are the ones each figure needs."""
    settings = settings or {}
    return tuple(
        result
        for result in published_results()
        if (result.dataset, result.model, result.method) == (dataset, model, method)
        and all(str(settings.get(key)) == value for key, value in result.settings)
    )
