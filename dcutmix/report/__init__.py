"""``dcutmix-report``: comparison tables and plots from the run folders ``dcutmix-train`` writes.

It reads each run's ``results.json`` (and ``metrics.jsonl`` only for learning curves), groups the
completed runs over seeds, and lists every run that did not complete with its status. It never
imports torch or Hydra, so it stays fast on hundreds of runs.
"""

from dcutmix.report.cli import main
from dcutmix.report.plots import draw_plots, plot_error_vs, plot_learning_curves
from dcutmix.report.render import (
    SIGNIFICANCE_COLUMNS,
    format_markdown_table,
    markdown_table,
    render_report,
    results_csv,
    significance_note,
)
from dcutmix.report.runs import Run, collect_runs, human_duration, read_run, read_val_curve
from dcutmix.report.stats import (
    METRICS,
    MODE_ORDER,
    Metric,
    Row,
    Stat,
    compare_with_baseline,
    default_baseline,
    fixed_settings,
    headline_metric,
    metrics_for,
    summarise,
    varying_settings,
)

__all__ = [
    "METRICS",
    "MODE_ORDER",
    "SIGNIFICANCE_COLUMNS",
    "Metric",
    "Row",
    "Run",
    "Stat",
    "collect_runs",
    "compare_with_baseline",
    "default_baseline",
    "draw_plots",
    "fixed_settings",
    "format_markdown_table",
    "headline_metric",
    "human_duration",
    "main",
    "markdown_table",
    "metrics_for",
    "plot_error_vs",
    "plot_learning_curves",
    "read_run",
    "read_val_curve",
    "render_report",
    "results_csv",
    "significance_note",
    "summarise",
    "varying_settings",
]
