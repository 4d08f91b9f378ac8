"""Rendering the statistics as figures: error against K or alpha, learning curves."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dcutmix.report.render import _HEADINGS, _sweep_names, headline_metric, show_value
from dcutmix.report.runs import _number, read_val_curve
from dcutmix.report.stats import Row, Stat, fixed_settings, varying_settings
from dcutmix.store.files import atomic_save_figure

PLOT_ERROR_VS_K = "plot_error_vs_k.png"


PLOT_ERROR_VS_ALPHA = "plot_error_vs_alpha.png"


PLOT_LEARNING_CURVES = "plot_learning_curves.png"


# More lines than this in one plot cannot be told apart by colour.
MAX_CURVES = 10


# Plots.


def _context(rows: Sequence[Row]) -> str:
    fixed = fixed_settings(rows)
    parts = [
        *_sweep_names(rows),
        *(str(fixed[key]) for key in ("dataset", "model") if key in fixed),
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _label(settings: dict[str, Any], keys: Sequence[str]) -> str:
    parts = [
        show_value(settings[key])
        if key == "mode"
        else f"{_HEADINGS.get(key, key)}={show_value(settings[key])}"
        for key in keys
        if settings.get(key) is not None  # no mixing has no K or alpha: say nothing, not "K=—"
    ]
    return ", ".join(parts) or "all runs"


def _new_axes() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.8), layout="constrained")
    return figure, figure.add_subplot()


def _legend(axes: Any, title: str | None = None) -> None:
    # Beside the axes, so it never hides a line however many there are.
    axes.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title=title,
        title_fontsize="small", frameon=False,
    )  # fmt: skip


def plot_error_vs(rows: Sequence[Row], setting: str, path: Path, best: bool = False) -> bool:
    """Top-1 error against ``k`` or ``alpha``, a line per other setting; False if too few values."""
    from matplotlib.ticker import MaxNLocator

    headline = headline_metric(best)
    others = [key for key in varying_settings(rows) if key != setting]
    lines: dict[tuple[Any, ...], list[tuple[float, Stat]]] = {}
    baselines: list[tuple[Row, Stat]] = []
    for row in rows:
        stat, x = row.stats[headline], _number(row.settings.get(setting))
        if stat.mean is None:
            continue
        if x is None:
            baselines.append((row, stat))
        else:
            lines.setdefault(tuple(row.settings.get(key) for key in others), []).append((x, stat))
    if not any(len({x for x, _ in points}) >= 2 for points in lines.values()):
        return False
    figure, axes = _new_axes()
    for values, points in lines.items():
        points.sort(key=lambda point: point[0])
        axes.errorbar(
            [x for x, _ in points],
            [stat.mean for _, stat in points],
            yerr=[stat.std or 0.0 for _, stat in points],
            marker="o",
            capsize=3,
            label=_label(dict(zip(others, values, strict=True)), others),
        )
    for row, stat in baselines:
        # Runs without this setting (no mixing) are a reference level, not a point on the axis.
        axes.axhline(
            stat.mean, linestyle="--", linewidth=1, color="grey", label=_label(row.settings, others)
        )
    xs = [x for points in lines.values() for x, _ in points]
    which = "best epoch" if best else "last epoch"
    axes.set_ylabel(f"top-1 error, {which} (%)")
    if setting == "k":
        axes.set_xlabel("K (images mixed per sample)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title("Top-1 error vs K" + _context(rows))
    else:
        axes.set_xlabel(f"{setting} (Dirichlet / Beta concentration)")
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            axes.set_xscale("log")
        axes.set_title(f"Top-1 error vs {setting}" + _context(rows))
    axes.grid(alpha=0.3)
    _legend(axes, title="error bars: std over seeds")
    atomic_save_figure(figure, path, format="png", dpi=120)
    return True


def plot_learning_curves(rows: Sequence[Row], path: Path) -> bool:
    """Validation top-1 error per epoch, mean over seeds; False when no run has 2 epochs.

    One curve per configuration, or one per mode when more than ``MAX_CURVES`` configurations
    would make the lines impossible to tell apart.
    """
    from matplotlib.ticker import MaxNLocator

    if not any((run.results.get("epochs_completed") or 0) >= 2 for row in rows for run in row.runs):
        return False
    keys = varying_settings(rows) if len(rows) <= MAX_CURVES else ["mode"]
    groups: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        by_epoch = groups.setdefault(_label(row.settings, keys), {})
        for run in row.runs:
            for epoch, error in read_val_curve(run):
                by_epoch.setdefault(epoch, []).append(error)
    if not any(len(by_epoch) >= 2 for by_epoch in groups.values()):
        return False
    figure, axes = _new_axes()
    for label, by_epoch in groups.items():
        epochs = sorted(by_epoch)
        errors = [statistics.fmean(by_epoch[epoch]) for epoch in epochs]
        axes.plot(epochs, errors, marker="." if len(epochs) <= 20 else None, label=label)
    which = "seeds" if keys != ["mode"] else "all runs of each mode"
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation top-1 error (%)")
    axes.set_title(f"Learning curves, mean over {which}" + _context(rows))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    _legend(axes)
    atomic_save_figure(figure, path, format="png", dpi=120)
    return True


def draw_plots(rows: Sequence[Row], out_dir: Path, best: bool = False) -> list[str]:
    """Every plot the data supports, written into ``out_dir``; returns their file names."""
    drawn = []
    if plot_error_vs(rows, "k", out_dir / PLOT_ERROR_VS_K, best):
        drawn.append(PLOT_ERROR_VS_K)
    if plot_error_vs(rows, "alpha", out_dir / PLOT_ERROR_VS_ALPHA, best):
        drawn.append(PLOT_ERROR_VS_ALPHA)
    if plot_learning_curves(rows, out_dir / PLOT_LEARNING_CURVES):
        drawn.append(PLOT_LEARNING_CURVES)
    return drawn


def _analysis_plots(rows: Sequence[Row], out_dir: Path) -> list[str]:
    """Loss landscape, FGSM and reliability plots from dcutmix-analyze, one curve per mode."""
    from dcutmix.analyze import plot_analyses

    by_mode: dict[str, list[Path]] = {}
    for row in rows:
        by_mode.setdefault(str(row.settings.get("mode", "?")), []).extend(
            run.path for run in row.runs
        )
    return [Path(p).name for p in plot_analyses(by_mode, out_dir)]
