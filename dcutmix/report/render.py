"""Rendering the statistics as text: the Markdown report and the CSV table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from dcutmix.report.runs import Run
from dcutmix.report.stats import (
    METRICS,
    Metric,
    Row,
    Stat,
    _percent,
    fixed_settings,
    varying_settings,
)

_HEADINGS = {"k": "K", "per_sample": "per-sample"}


# Rendering.


def _show_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _show_stat(stat: Stat, metric: Metric, spread: bool) -> str:
    if stat.mean is None:
        return "—"
    if spread and stat.std is not None:
        return f"{metric.show(stat.mean)} ± {metric.show(stat.std)}"
    return metric.show(stat.mean)


def headline_metric(best: bool) -> str:
    """The metric shown with its spread and plotted: the best epoch's error or the last one's."""
    return "top1_err_best" if best else "top1_err_last"


def markdown_table(
    rows: Sequence[Row], best: bool = False, metrics: Sequence[Metric] = METRICS
) -> str:
    """The comparison table: varying settings, n, metric means (headline ± std), paper figure."""
    varying = varying_settings(rows)
    with_paper = any(row.paper_top1_err is not None for row in rows)
    header = [_HEADINGS.get(key, key) for key in varying] + ["n"] + [m.heading for m in metrics]
    numeric = [False] * len(varying) + [True] * (1 + len(metrics))
    if with_paper:
        header.append("paper top-1 err (%)")
        numeric.append(True)
    lines = []
    for row in rows:
        cells = [_show_value(row.settings.get(key)) for key in varying] + [str(row.n)]
        cells += [
            _show_stat(row.stats[m.name], m, spread=m.name == headline_metric(best))
            for m in metrics
        ]
        if with_paper:
            paper = row.paper_top1_err
            cells.append("—" if paper is None else _percent(paper))
        lines.append(cells)
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + ":" if right else "-" * (width + 2)
            for width, right in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(cells) for cells in lines)])


def excluded_note(problems: Sequence[Run]) -> str | None:
    """E.g. ``2 runs excluded: 1 failed, 1 unfinished; see below``, or None when none were."""
    if not problems:
        return None
    counts: dict[str, int] = {}
    for run in problems:
        counts[run.status] = counts.get(run.status, 0) + 1
    parts = ", ".join(f"{count} {status}" for status, count in counts.items())
    runs = "run" if len(problems) == 1 else "runs"
    return f"{len(problems)} {runs} excluded: {parts}; see below"


def problem_line(run: Run) -> str:
    """One Markdown list item naming a run that is not in the table, its status and why."""
    done, total = run.results.get("epochs_completed"), run.results.get("epochs")
    epochs = f", {done}/{total} epochs" if done is not None and total else ""
    detail = f": {run.detail}" if run.detail else ""
    return f"- **{run.status}** `{run.name}`{epochs}{detail} ({run.path})"


def _sweep_names(rows: Sequence[Row]) -> list[str]:
    names = {run.config.get("sweep") for row in rows for run in row.runs}
    return sorted(str(name) for name in names if name not in (None, "adhoc"))


def render_report(
    rows: Sequence[Row],
    problems: Sequence[Run],
    plots: Sequence[str] = (),
    best: bool = False,
    sources: Sequence[str] = (),
    metrics: Sequence[Metric] = METRICS,
) -> str:
    """The whole Markdown report: table, fixed settings, problem runs and links to plots."""
    sweeps = _sweep_names(rows)
    title = "# dcutmix report" + (f": {', '.join(sweeps)}" if sweeps else "")
    parts = [title]
    if sources:
        parts.append("Runs from " + ", ".join(f"`{source}`" for source in sources) + ".")
    if rows:
        which = "best epoch" if best else "last epoch"
        fixed = ", ".join(
            f"{key}={_show_value(value)}" for key, value in fixed_settings(rows).items()
        )
        parts.append(
            f"Errors in %, mean over seeds; top-1 of the {which} ± sample std over seeds."
            + (f" Fixed settings: {fixed}." if fixed else "")
        )
        if any(row.paper_top1_err is not None for row in rows):
            parts.append(
                "paper: the published top-1 error for the same dataset, model, mode, K and alpha, "
                "trained with the authors' recipe (300 epochs)."
            )
        parts.append(markdown_table(rows, best, metrics))
    else:
        parts.append("No run has completed yet.")
    note = excluded_note(problems)
    if note:
        parts.append(note + ".")
        parts.append(
            "## Runs not in the table\n\n" + "\n".join(problem_line(run) for run in problems)
        )
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"- [{name}]({name})" for name in plots))
    return "\n\n".join(parts) + "\n"


def results_csv(rows: Sequence[Row], metrics: Sequence[Metric] = METRICS) -> str:
    """One line per configuration: varying settings, n, each metric's mean and std, paper figure."""
    varying = varying_settings(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    stat_columns = [f"{m.name}_{part}" for m in metrics for part in ("mean", "std")]
    writer.writerow([*varying, "n", *stat_columns, "paper_top1_err"])
    for row in rows:
        stats = []
        for m in metrics:
            stat = row.stats[m.name]
            stats += [_csv_value(stat.mean), _csv_value(stat.std)]
        settings = [_csv_value(row.settings.get(key)) for key in varying]
        writer.writerow([*settings, row.n, *stats, _csv_value(row.paper_top1_err)])
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
