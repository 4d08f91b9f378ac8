"""``dcutmix-report``: comparison tables and plots from the run folders ``dcutmix-train`` writes.

It reads each run's ``results.json`` (and ``metrics.jsonl`` only for learning curves), groups the
completed runs over seeds, and lists every run that did not complete with its status. It never
imports torch or Hydra, so it stays fast on hundreds of runs.
"""

from dcutmix.report.cli import main
from dcutmix.report.plots import draw_plots, plot_error_vs, plot_learning_curves
from dcutmix.report.render import markdown_table, render_report, results_csv
from dcutmix.report.runs import Run, collect_runs, human_duration, read_run, read_val_curve
from dcutmix.report.stats import (
    METRICS,
    MODE_ORDER,
    Metric,
    Row,
    Stat,
    fixed_settings,
    metrics_for,
    summarise,
    varying_settings,
)

__all__ = [
    "METRICS",
    "MODE_ORDER",
    "Metric",
    "Row",
    "Run",
    "Stat",
    "collect_runs",
    "draw_plots",
    "fixed_settings",
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
    "summarise",
    "varying_settings",
]
