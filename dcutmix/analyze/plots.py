"""Plots of several runs' analyses, averaged per mixing mode."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcutmix.analyze.common import ANALYSIS_FILE, PLOT_FGSM, PLOT_LOSS_LANDSCAPE, PLOT_RELIABILITY
from dcutmix.store.files import atomic_save_figure, read_json

if TYPE_CHECKING:
    pass


Curve = tuple[list[float], list[float], list[float], int]  # x, mean, standard deviation, runs


def _mean_curve(curves: list[tuple[list[float], list[float | None]]]) -> Curve:
    """The x values all curves share, and the mean and standard deviation over curves at each."""
    points = [dict(zip(xs, ys, strict=True)) for xs, ys in curves]
    shared = sorted(set(points[0]).intersection(*points[1:]))
    columns = [[math.nan if p[x] is None else p[x] for p in points] for x in shared]
    return (
        shared,
        [statistics.fmean(c) for c in columns],
        [statistics.pstdev(c) for c in columns],
        len(curves),
    )


def _runs_label(mode: str, runs: int) -> str:
    return f"{mode} ({runs} run{'s' if runs > 1 else ''})"


def _line_plot(series: Mapping[str, Curve], labels: tuple[str, str, str], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for mode, (xs, mean, spread, runs) in series.items():
        (line,) = axes.plot(xs, mean, marker="o", label=_runs_label(mode, runs))
        if runs > 1:
            low = [m - s for m, s in zip(mean, spread, strict=True)]
            high = [m + s for m, s in zip(mean, spread, strict=True)]
            axes.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
    xlabel, ylabel, title = labels
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=150)
    return path


def _pool_bins(analyses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One reliability table from several runs: counts add, means are weighted by count."""
    pooled = []
    for column in zip(*(a["calibration"]["bins"] for a in analyses), strict=True):
        count = sum(b["count"] for b in column)
        filled = [b for b in column if b["count"]]
        pooled.append(
            {
                "lower": column[0]["lower"],
                "upper": column[0]["upper"],
                "count": count,
                "confidence": sum(b["count"] * b["confidence"] for b in filled) / count
                if count
                else None,
                "accuracy": sum(b["count"] * b["accuracy"] for b in filled) / count
                if count
                else None,
            }
        )
    return pooled


def _reliability_plot(pooled: Mapping[str, tuple[list[dict], float, int]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(4, len(pooled))
    rows = -(-len(pooled) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows))
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat[len(pooled) :]:
        axes.set_visible(False)
    for axes, (mode, (bins, ece, runs)) in zip(grid.flat, pooled.items(), strict=False):
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = bins[0]["upper"] - bins[0]["lower"]
        accuracy = [b["accuracy"] or 0.0 for b in bins]
        gap = [(b["confidence"] or 0.0) - a for b, a in zip(bins, accuracy, strict=True)]
        axes.bar(centres, accuracy, width=width, edgecolor="black", linewidth=0.5, label="accuracy")
        axes.bar(
            centres,
            gap,
            bottom=accuracy,
            width=width,
            color="tab:red",
            alpha=0.3,
            label="gap to confidence",
        )
        axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        axes.set_title(f"{_runs_label(mode, runs)}: ECE {ece:.2f}%", fontsize=9)
    grid.flat[0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=150)
    return path


def plot_analyses(runs_by_mode: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """Draw the loss-landscape, FGSM and reliability plots as PNGs, averaging each mode's runs.

    Runs without analysis.json are left out, and modes without any; returns the files written.
    """
    by_mode = {}
    for mode, runs in runs_by_mode.items():
        analyses = [read_json(Path(run) / ANALYSIS_FILE) for run in runs]
        if found := [a for a in analyses if isinstance(a, dict)]:
            by_mode[mode] = found
    if not by_mode:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    landscape, fgsm, reliability = {}, {}, {}
    for mode, analyses in by_mode.items():
        landscape[mode] = _mean_curve(
            [(a["loss_landscape"]["sigmas"], a["loss_landscape"]["loss"]) for a in analyses]
        )
        # Epsilon 0 is the clean error, so each FGSM curve starts from the unattacked model.
        fgsm[mode] = _mean_curve(
            [
                ([0, *a["fgsm"]["epsilons_255"]], [a["clean"]["top1_err"], *a["fgsm"]["top1_err"]])
                for a in analyses
            ]
        )
        ece = statistics.fmean(a["calibration"]["ece"] for a in analyses)
        reliability[mode] = (_pool_bins(analyses), ece, len(analyses))
    return [
        _line_plot(
            landscape,
            (
                "sigma (absolute, on Conv/Linear weights)",
                "validation loss",
                "Loss under random weight noise",
            ),
            out_dir / PLOT_LOSS_LANDSCAPE,
        ),
        _line_plot(
            fgsm,
            ("FGSM epsilon (/255)", "top-1 error (%)", "FGSM adversarial error"),
            out_dir / PLOT_FGSM,
        ),
        _reliability_plot(reliability, out_dir / PLOT_RELIABILITY),
    ]
