"""``dcutmix-report``: comparison tables and plots from the run folders ``dcutmix-train`` writes.

It reads each run's ``results.json`` (and ``metrics.jsonl`` only for learning curves), groups the
completed runs over seeds, and lists every run that did not complete with its status. It never
imports torch or Hydra, so it stays fast on hundreds of runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import socket
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from dcutmix.errors import ConfigError
from dcutmix.reference import find_paper_result
from dcutmix.tracking import atomic_write_text, flatten_config

# The order of dcutmix.mixing.MIXING_MODES, repeated here because that module imports torch.
MODE_ORDER = (
    "none",
    "mixup",
    "cutmix",
    "naive_mixup",
    "naive_cutmix",
    "dmixup",
    "dcutmix",
    "manifold_mixup",
)
# A "running" run on another host is only known to be dead when it stops updating; the trainer
# rewrites results.json after every epoch, and no epoch of the project's recipes takes this long.
STALE_AFTER_SECONDS = 2 * 3600
# Settings listed first, in this order; any other setting follows by name.
SETTING_ORDER = ("dataset", "model", "mode", "k", "alpha", "prob", "per_sample")
# Names and seeds label a run; they are not part of the configuration it computes.
LABEL_KEYS = ("seed", "sweep", "experiment")
PROBLEM_ORDER = ("failed", "diverged", "interrupted", "unfinished", "not started", "running")
PLOT_ERROR_VS_K = "plot_error_vs_k.png"
PLOT_ERROR_VS_ALPHA = "plot_error_vs_alpha.png"
PLOT_LEARNING_CURVES = "plot_learning_curves.png"
# More lines than this in one plot cannot be told apart by colour.
MAX_CURVES = 10

_HEADINGS = {"k": "K", "per_sample": "per-sample"}


class Run:
    """One run folder as the report sees it: its effective status and what its results.json says."""

    def __init__(
        self, path: Path, status: str, results: dict[str, Any], detail: str | None = None
    ) -> None:
        self.path = path
        self.status = status
        self.results = results
        self.detail = detail

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    @property
    def name(self) -> str:
        """The trainer's run name, or the folder's name when results.json does not give one."""
        return str(self.results.get("run_name") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        """The settings block of results.json (empty when there is none)."""
        config = self.results.get("config")
        return config if isinstance(config, dict) else {}

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The flat settings that define this run's configuration (everything but labels)."""
        flat: dict[str, Any] = {}
        for name, value in flatten_config(self.config).items():
            if name in LABEL_KEYS:
                continue
            # The mixing block's keys are the ones people name (mode, k, alpha), so keep them bare;
            # lists become text so that settings can be compared and grouped.
            unhashable = isinstance(value, (list, dict))
            flat[name.removeprefix("mixing.")] = json.dumps(value) if unhashable else value
        if flat.get("mode") == "none":
            # The trainer may store k as 1 or null for no mixing; both mean the same configuration.
            flat["k"] = flat["alpha"] = None
        return flat


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of one metric over a configuration's runs."""

    mean: float | None
    std: float | None
    count: int


@dataclass(frozen=True)
class Metric:
    """A per-run number averaged over seeds; new ones (e.g. from analysis.json) join METRICS."""

    name: str
    heading: str
    read: Callable[[Run], float | None]
    show: Callable[[float], str]


@dataclass
class Row:
    """One configuration: its completed runs and their statistics."""

    settings: dict[str, Any]
    runs: list[Run]
    stats: dict[str, Stat]
    paper_top1_err: float | None

    @property
    def n(self) -> int:
        """How many completed runs (seeds) the row averages."""
        return len(self.runs)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _from_results(key: str) -> Callable[[Run], float | None]:
    return lambda run: _number(run.results.get(key))


def _percent(value: float) -> str:
    return f"{value:.2f}"


def human_duration(seconds: float) -> str:
    """Seconds in the unit a person reads best, e.g. ``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


METRICS: tuple[Metric, ...] = (
    Metric("top1_err_last", "top-1 err last (%)", _from_results("top1_err_last"), _percent),
    Metric("top1_err_best", "top-1 err best (%)", _from_results("top1_err_best"), _percent),
    Metric("top5_err_last", "top-5 err last (%)", _from_results("top5_err_last"), _percent),
    Metric("wall_seconds", "wall time", _from_results("wall_seconds"), human_duration),
)


ANALYSIS_HEADINGS = {
    "clean_top1_err": ("clean top-1 (%)", _percent),
    "nll": ("NLL", lambda v: f"{v:.3f}"),
    "ece": ("ECE (%)", _percent),
    "fgsm_top1_err@1": ("FGSM 1/255 (%)", _percent),
    "fgsm_top1_err@4": ("FGSM 4/255 (%)", _percent),
    "fgsm_top1_err@8": ("FGSM 8/255 (%)", _percent),
    "predictive_entropy_mean": ("entropy", lambda v: f"{v:.3f}"),
}


def _from_analysis(key: str) -> Callable[[Run], float | None]:
    def read(run: Run) -> float | None:
        from dcutmix.analyze import analysis_columns

        return _number(analysis_columns(run.path).get(key))

    return read


def metrics_for(runs: Sequence[Run]) -> tuple[Metric, ...]:
    """METRICS, plus the dcutmix-analyze columns when some run has an analysis.json."""
    if not any((run.path / "analysis.json").is_file() for run in runs):
        return METRICS
    extra = tuple(
        Metric(key, heading, _from_analysis(key), show)
        for key, (heading, show) in ANALYSIS_HEADINGS.items()
    )
    return METRICS + extra


# Reading run folders.


def _run_folders(root: Path) -> Iterator[Path]:
    """Folders under ``root`` (itself included) that hold ``.hydra/`` or ``results.json``."""
    seen: set[Path] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen:  # a symbolic link back up the tree
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
        except OSError:
            continue  # an unreadable folder holds no run the report could read either
        names = {entry.name for entry in entries}
        if ".hydra" in names or "results.json" in names:
            yield folder
            continue  # a run's own subfolders (checkpoints, wandb) hold no further runs
        stack.extend(
            Path(entry.path)
            for entry in entries
            if not entry.name.startswith(".") and entry.is_dir()
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to someone else
    return True


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _running_state(results: dict[str, Any], now: datetime) -> tuple[str, str]:
    """``running`` or ``unfinished`` for a run whose results.json says running, with the reason."""
    pid, host = results.get("pid"), results.get("hostname")
    if host == socket.gethostname() and isinstance(pid, int) and pid > 0 and not _pid_alive(pid):
        return "unfinished", f"its process {pid} on this host is gone"
    updated = _parse_time(results.get("updated_at"))
    if updated is None:
        return "running", f"on {host or 'an unknown host'}"
    age = max(0.0, (now - updated).total_seconds())
    if age > STALE_AFTER_SECONDS:
        return "unfinished", f"no update for {human_duration(age)}"
    return "running", f"on {host or 'an unknown host'}, updated {human_duration(age)} ago"


def read_run(path: Path, now: datetime | None = None) -> Run:
    """The run in one folder, with ``running`` turned into ``unfinished`` when it is stale."""
    try:
        text = (path / "results.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return Run(path, "not started", {}, "no results.json")
    except OSError as error:
        return Run(path, "unreadable", {}, f"results.json: {error.strerror}")
    try:
        results = json.loads(text)
    except ValueError as error:
        return Run(path, "unreadable", {}, f"results.json is not JSON ({error})")
    if not isinstance(results, dict):
        return Run(path, "unreadable", {}, "results.json does not hold an object")
    status = str(results.get("status") or "unknown")
    error_line = results.get("error")
    detail = str(error_line).splitlines()[0] if error_line else None
    if status == "running":
        status, detail = _running_state(results, now or datetime.now(timezone.utc))
    return Run(path, status, results, detail)


def collect_runs(paths: Iterable[str | os.PathLike[str]], now: datetime | None = None) -> list[Run]:
    """Every run folder under ``paths`` (sweep folders, run folders, or folders of either)."""
    now = now or datetime.now(timezone.utc)
    runs: list[Run] = []
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ConfigError(
                f"PATH: {given} does not exist; pass a sweep or run folder written by dcutmix-train"
            )
        if not root.is_dir():
            raise ConfigError(
                f"PATH: {given} is not a folder; pass a sweep or run folder from dcutmix-train"
            )
        for folder in _run_folders(root):
            real = folder.resolve()
            if real not in seen:
                seen.add(real)
                runs.append(read_run(folder, now))
    return runs


def read_val_curve(run: Run) -> list[tuple[int, float]]:
    """(epoch, validation top-1 error in %) for each epoch of the run's metrics.jsonl."""
    try:
        text = (run.path / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return []
    curve = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a process killed mid-append can leave a partial last line
        epoch, error = row.get("epoch"), _number(row.get("val_top1_err"))
        if isinstance(epoch, int) and error is not None:
            curve.append((epoch, error))
    return curve


# Summarising.


def _stat(values: Iterable[float | None]) -> Stat:
    present = [value for value in values if value is not None]
    if not present:
        return Stat(None, None, 0)
    std = statistics.stdev(present) if len(present) > 1 else None
    return Stat(statistics.fmean(present), std, len(present))


def _paper_top1_err(settings: dict[str, Any]) -> float | None:
    dataset, model, mode = settings.get("dataset"), settings.get("model"), settings.get("mode")
    if not all(isinstance(value, str) for value in (dataset, model, mode)):
        return None
    k = _number(settings.get("k"))
    found = find_paper_result(
        dataset,
        model,
        mode,
        int(k) if k is not None and k.is_integer() else None,
        _number(settings.get("alpha")),
        _number(settings.get("prob")),
        stochastic_depth=settings.get("stochastic_depth"),
        dropblock=settings.get("dropblock.keep_prob", settings.get("dropblock")),
        label_smoothing=settings.get("label_smoothing"),
    )
    return found.top1_err if found else None


def _setting_rank(key: str) -> tuple[int, str]:
    return (SETTING_ORDER.index(key), "") if key in SETTING_ORDER else (len(SETTING_ORDER), key)


def _value_rank(key: str, value: Any) -> tuple[int, float, str]:
    if key == "mode" and value in MODE_ORDER:
        return (1, MODE_ORDER.index(value), "")
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _sort_rows(rows: list[Row]) -> None:
    keys = sorted({key for row in rows for key in row.settings}, key=_setting_rank)
    rows.sort(key=lambda row: [_value_rank(key, row.settings.get(key)) for key in keys])


def _problem_order(run: Run) -> tuple[int, str, str]:
    rank = PROBLEM_ORDER.index(run.status) if run.status in PROBLEM_ORDER else len(PROBLEM_ORDER)
    return (rank, run.name, str(run.path))


def summarise(
    runs: Iterable[Run], metrics: Sequence[Metric] = METRICS
) -> tuple[list[Row], list[Run]]:
    """Completed runs grouped over seeds into sorted rows, and every other run as a problem."""
    groups: dict[tuple[tuple[str, Any], ...], list[Run]] = {}
    problems: list[Run] = []
    for run in runs:
        if run.status == "completed":
            groups.setdefault(tuple(sorted(run.settings.items())), []).append(run)
        else:
            problems.append(run)
    rows = [
        Row(
            settings=dict(key),
            runs=members,
            stats={metric.name: _stat(metric.read(run) for run in members) for metric in metrics},
            paper_top1_err=_paper_top1_err(dict(key)),
        )
        for key, members in groups.items()
    ]
    _sort_rows(rows)
    problems.sort(key=_problem_order)
    return rows, problems


def varying_settings(rows: Sequence[Row]) -> list[str]:
    """The settings whose value differs between rows, plus ``mode`` always, in display order."""
    keys = {key for row in rows for key in row.settings}
    varying = {key for key in keys if len({row.settings.get(key) for row in rows}) > 1}
    return sorted(varying | {"mode"}, key=_setting_rank)


def fixed_settings(rows: Sequence[Row]) -> dict[str, Any]:
    """The settings every row shares (``mode`` excepted), in display order."""
    varying = set(varying_settings(rows))
    keys = sorted({key for row in rows for key in row.settings} - varying, key=_setting_rank)
    return {key: rows[0].settings.get(key) for key in keys} if rows else {}


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
        _show_value(settings[key])
        if key == "mode"
        else f"{_HEADINGS.get(key, key)}={_show_value(settings[key])}"
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


def _save_figure(figure: Any, path: Path) -> None:
    # Through a temporary file and a rename, like every file the project writes.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    _save_figure(figure, path)
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
    _save_figure(figure, path)
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


# Command line.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcutmix-report",
        description="Compare the runs of dcutmix-train sweeps: a Markdown table grouped over "
        "seeds, results.csv, report.md and plots.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="sweep folders, run folders, or folders of them"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to write report.md, results.csv and plots (default: the first PATH)",
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="write no PNG plots (and skip importing matplotlib)"
    )
    parser.add_argument(
        "--best",
        action="store_true",
        help="headline the best epoch's top-1 error (as the paper's code does), not the last's",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and write the report files; 0 on a table, 1 without runs, 2 on bad input."""
    args = _parser().parse_args(argv)
    try:
        runs = collect_runs(args.paths)
    except ConfigError as error:
        print(f"dcutmix-report: {error}", file=sys.stderr)
        return 2
    if not runs:
        print(f"dcutmix-report: no run folders under {' '.join(args.paths)}", file=sys.stderr)
        return 1
    metrics = metrics_for(runs)
    rows, problems = summarise(runs, metrics)
    out_dir = Path(args.out) if args.out else Path(args.paths[0])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = draw_plots(rows, out_dir, args.best) if rows and not args.no_plots else []
        if rows and not args.no_plots and len(metrics) > len(METRICS):
            plots += _analysis_plots(rows, out_dir)
        report = render_report(rows, problems, plots, args.best, args.paths, metrics)
        atomic_write_text(out_dir / "report.md", report)
        atomic_write_text(out_dir / "results.csv", results_csv(rows, metrics))
    except OSError as error:
        print(
            f"dcutmix-report: --out: cannot write to {out_dir} ({error.strerror or error}); "
            "pass --out DIR naming a writable folder",
            file=sys.stderr,
        )
        return 2
    print(report, end="")
    written = ", ".join(["report.md", "results.csv", *plots])
    print(f"\nwrote {written} to {out_dir}")
    if not rows:
        print(f"dcutmix-report: none of the {len(runs)} runs has completed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
