"""Rendering the statistics as text: the Markdown report and the CSV table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from dcutmix.reference import not_reproduced
from dcutmix.report.proxy import PROXY_COLUMNS, ProxyResult, proxy_csv_columns, proxy_section
from dcutmix.report.runs import Run
from dcutmix.report.significance import Difference
from dcutmix.report.stats import (
    METRICS,
    Metric,
    Row,
    Stat,
    _percent,
    fixed_settings,
    headline_metric,
    varying_settings,
)
from dcutmix.store.results import Status

_HEADINGS = {"k": "K", "per_sample": "per-sample"}


# Rendering.


def show_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def show_stat(stat: Stat, metric: Metric, spread: bool) -> str:
    if stat.mean is None:
        return "—"
    if spread and stat.std is not None:
        return f"{metric.show(stat.mean)} ± {metric.show(stat.std)}"
    return metric.show(stat.mean)


def show_difference(difference: Difference | None) -> str:
    """A Δ cell: the difference and its 95% interval, ``*`` when the interval excludes 0."""
    if difference is None:
        return "—"
    mark = " *" if difference.excludes_zero else ""
    return f"{difference.delta:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}]{mark}"


def markdown_table(
    rows: Sequence[Row],
    best: bool = False,
    metrics: Sequence[Metric] = METRICS,
    baseline: str | None = None,
) -> str:
    """The comparison table: varying settings, n, metric means (headline ± std), paper figure.

    With ``baseline``, and a difference on some row, a column gives each row's difference from
    its baseline row with the 95% interval, marked ``*`` where the interval excludes 0.
    """
    varying = varying_settings(rows)
    with_paper = any(row.paper_top1_err is not None for row in rows)
    with_published = any(row.published for row in rows)
    with_delta = baseline is not None and any(row.difference is not None for row in rows)
    header = [_HEADINGS.get(key, key) for key in varying] + ["n"] + [m.heading for m in metrics]
    numeric = [False] * len(varying) + [True] * (1 + len(metrics))
    for shown, heading in (
        (with_delta, f"Δ vs {baseline} (95% CI)"),
        (with_paper, "paper top-1 err (%)"),
        (with_published, "published top-1 err (%)"),
    ):
        if shown:
            header.append(heading)
            numeric.append(True)
    lines = []
    for row in rows:
        cells = [show_value(row.settings.get(key)) for key in varying] + [str(row.n)]
        cells += [
            show_stat(row.stats[m.name], m, spread=m.name == headline_metric(best)) for m in metrics
        ]
        if with_delta:
            cells.append(show_difference(row.difference))
        if with_paper:
            paper = row.paper_top1_err
            cells.append("—" if paper is None else _percent(paper))
        if with_published:
            cells.append("; ".join(r.label() for r in row.published) or "—")
        lines.append(cells)
    return format_markdown_table(header, numeric, lines)


def format_markdown_table(header: list[str], numeric: list[bool], lines: list[list[str]]) -> str:
    """A Markdown table with padded columns, numeric ones right-aligned."""
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
    baseline: str | None = None,
    proxy: Sequence[ProxyResult] = (),
) -> str:
    """The whole Markdown report: table, fixed settings, the proxy search (when subset and full
    runs are both present), problem runs and links to plots."""
    sweeps = _sweep_names(rows)
    title = "# dcutmix report" + (f": {', '.join(sweeps)}" if sweeps else "")
    parts = [title]
    if sources:
        parts.append("Runs from " + ", ".join(f"`{source}`" for source in sources) + ".")
    if rows:
        which = "best epoch" if best else "last epoch"
        fixed = ", ".join(
            f"{key}={show_value(value)}" for key, value in fixed_settings(rows).items()
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
        if baseline is not None and any(row.difference is not None for row in rows):
            parts.append(significance_note(baseline, best))
        if any(row.published for row in rows):
            parts.append(PUBLISHED_NOTE)
        parts.append(markdown_table(rows, best, metrics, baseline))
        if any(row.paper_top1_err is not None for row in rows):
            parts.append(not_reproduced_section())
        if any(row.published for row in rows):
            parts.append(published_section(rows))
        if proxy:
            parts.append(proxy_section(proxy, best))
    else:
        parts.append("No run has completed yet.")
    pruned = [run for run in problems if run.status == Status.PRUNED]
    problems = [run for run in problems if run.status != Status.PRUNED]
    if pruned:
        parts.append(pruned_section(pruned))
    note = excluded_note(problems)
    if note:
        parts.append(note + ".")
        parts.append(
            "## Runs not in the table\n\n" + "\n".join(problem_line(run) for run in problems)
        )
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"- [{name}]({name})" for name in plots))
    return "\n\n".join(parts) + "\n"


def pruned_section(pruned: Sequence[Run]) -> str:
    """The trials a search's pruner stopped: listed apart, never averaged into a row."""
    lines = []
    for run in pruned:
        r = run.results
        value = r.get("pruned_value")
        shown = f"{value:.4g}" if isinstance(value, int | float) else "?"
        lines.append(
            f"- `{run.name}`: stopped after epoch {r.get('pruned_epoch', '?')} of "
            f"{r.get('epochs', '?')}, objective {shown} ({run.path})"
        )
    return f"## Pruned by the search ({len(pruned)}; not in the table's means)\n\n" + "\n".join(
        lines
    )


def not_reproduced_section() -> str:
    """The paper's rows this framework cannot rerun, with why, so a reader sees the whole table."""
    lines = [
        f"- {paper.dataset}, {paper.model}, {paper.method}: published top-1 error "
        f"{_percent(paper.top1_err)}%; not reproduced: {reason}"
        for paper, reason in not_reproduced()
    ]
    return "## Paper rows not reproduced here\n\n" + "\n".join(lines)


PUBLISHED_NOTE = (
    "published: top-1 errors published outside the paper for the same dataset, model and method, "
    "each with the release of the dataset it was measured on (2017: the first release, whose "
    "train and test sets shared images); their sources, recipes and caveats are listed below "
    "the table. A run with a shorter schedule or on a subset is not comparable to them."
)


def published_section(rows: Sequence[Row]) -> str:
    """Each published figure the table shows: its source, recipe and caveat."""
    shown = dict.fromkeys(result for row in rows for result in row.published)
    lines = [
        f"- {r.dataset}, {r.model}, {r.method}: {r.label()}. Source: {r.source}. "
        f"Recipe: {r.recipe_text()}. Caveat: {r.caveat}."
        for r in shown
    ]
    return "## Published figures beside the table\n\n" + "\n".join(lines)


def significance_note(baseline: str, best: bool) -> str:
    """The sentence under the report's title that says what the Δ column holds."""
    which = "best" if best else "last"
    return (
        f"Δ: top-1 error ({which} epoch) minus that of the `{baseline}` row with the same other "
        "settings, in points, with its 95% confidence interval (Welch, over seeds); * marks an "
        "interval that excludes 0. — where a side has fewer than 2 runs."
    )


SIGNIFICANCE_COLUMNS = ("delta_vs_baseline", "delta_ci95_low", "delta_ci95_high", "p_value")


def results_csv(
    rows: Sequence[Row], metrics: Sequence[Metric] = METRICS, proxy: Sequence[ProxyResult] = ()
) -> str:
    """One line per configuration: settings, n, metric means and stds, paper, baseline delta, and
    with subset runs the proxy search's columns of the row's subset kind."""
    varying = varying_settings(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    stat_columns = [f"{m.name}_{part}" for m in metrics for part in ("mean", "std")]
    with_published = any(row.published for row in rows)
    published_column = ["published_top1_err"] if with_published else []
    published_column += list(PROXY_COLUMNS) if proxy else []
    writer.writerow(
        [*varying, "n", *stat_columns, "paper_top1_err", *SIGNIFICANCE_COLUMNS, *published_column]
    )
    for row in rows:
        stats = []
        for m in metrics:
            stat = row.stats[m.name]
            stats += [_csv_value(stat.mean), _csv_value(stat.std)]
        settings = [_csv_value(row.settings.get(key)) for key in varying]
        d = row.difference
        significance = [d.delta, d.low, d.high, d.p_value] if d else [None] * 4
        published = [";".join(f"{r.top1_err:g}" for r in row.published)] if with_published else []
        writer.writerow(
            [*settings, row.n, *stats, _csv_value(row.paper_top1_err)]
            + [_csv_value(value) for value in significance]
            + published
            + ([_csv_value(v) for v in proxy_csv_columns(row.settings, proxy)] if proxy else [])
        )
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
