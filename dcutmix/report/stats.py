"""Statistics over runs: configurations grouped over seeds, their means and spreads."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dcutmix.reference import PublishedResult, find_paper_result, find_published, run_method
from dcutmix.report.runs import Run, _number, human_duration
from dcutmix.report.significance import Difference, baseline_differences
from dcutmix.store.results import Status

# The order of dcutmix.mixing.MIXING_MODES, repeated here because that module imports torch.
MODE_ORDER = (
    "none",
    "mixup",
    "cutmix",
    "naive_mixup",
    "naive_cutmix",
    "dmixup",
    "dcutmix",
    "cutout",
    "random_erasing",
    "fmix",
    "resizemix",
    "manifold_mixup",
)


# Settings listed first, in this order; any other setting follows by name.
SETTING_ORDER = ("dataset", "model", "mode", "k", "alpha", "prob", "per_sample")


PROBLEM_ORDER = (
    Status.FAILED, Status.DIVERGED, Status.INTERRUPTED, Status.UNFINISHED, Status.NOT_STARTED,
    Status.RUNNING,
)  # fmt: skip


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
    # The headline metric's difference from the baseline row (see compare_with_baseline).
    difference: Difference | None = None
    # Figures published outside the paper for the same dataset, model and method.
    published: tuple[PublishedResult, ...] = ()

    @property
    def n(self) -> int:
        """How many completed runs (seeds) the row averages."""
        return len(self.runs)


def _from_results(key: str) -> Callable[[Run], float | None]:
    return lambda run: _number(run.results.get(key))


def _percent(value: float) -> str:
    return f"{value:.2f}"


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


def _published(settings: dict[str, Any]) -> tuple[PublishedResult, ...]:
    dataset, model, mode = settings.get("dataset"), settings.get("model"), settings.get("mode")
    if not all(isinstance(value, str) for value in (dataset, model, mode)):
        return ()
    method = run_method(
        mode,
        stochastic_depth=settings.get("stochastic_depth"),
        dropblock=settings.get("dropblock.keep_prob", settings.get("dropblock")),
        label_smoothing=settings.get("label_smoothing"),
    )
    return find_published(dataset, model, method, settings)


def setting_rank(key: str) -> tuple[int, str]:
    return (SETTING_ORDER.index(key), "") if key in SETTING_ORDER else (len(SETTING_ORDER), key)


def value_rank(key: str, value: Any) -> tuple[int, float, str]:
    if key == "mode" and value in MODE_ORDER:
        return (1, MODE_ORDER.index(value), "")
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _sort_rows(rows: list[Row]) -> None:
    keys = sorted({key for row in rows for key in row.settings}, key=setting_rank)
    rows.sort(key=lambda row: [value_rank(key, row.settings.get(key)) for key in keys])


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
        if run.status == Status.COMPLETED:
            groups.setdefault(tuple(sorted(run.settings.items())), []).append(run)
        else:
            problems.append(run)
    rows = [
        Row(
            settings=dict(key),
            runs=members,
            stats={metric.name: _stat(metric.read(run) for run in members) for metric in metrics},
            paper_top1_err=_paper_top1_err(dict(key)),
            published=_published(dict(key)),
        )
        for key, members in groups.items()
    ]
    _sort_rows(rows)
    problems.sort(key=_problem_order)
    return rows, problems


def headline_metric(best: bool) -> str:
    """The metric shown with its spread and plotted: the best epoch's error or the last one's."""
    return "top1_err_best" if best else "top1_err_last"


def default_baseline(rows: Sequence[Row]) -> str:
    """The mode rows are compared with: ``none`` when some row has it, else ``cutmix``."""
    return "none" if any(row.settings.get("mode") == "none" for row in rows) else "cutmix"


def compare_with_baseline(rows: Sequence[Row], baseline: str, best: bool = False) -> None:
    """Set each row's headline difference from the ``baseline`` row with the same other settings.

    "Other settings" leaves out the mixing block (mode, K, alpha, prob...), so a DCutMix row with
    K=5 is compared with the CutMix row of the same dataset, model and schedule.
    """
    mixing = {key for row in rows for run in row.runs for key in (run.config.get("mixing") or {})}
    read = _from_results(headline_metric(best))
    groups = []
    for row in rows:
        others = tuple(sorted((k, v) for k, v in row.settings.items() if k not in mixing))
        values = [value for value in map(read, row.runs) if value is not None]
        groups.append((others, str(row.settings.get("mode")), values))
    for row, difference in zip(rows, baseline_differences(groups, baseline), strict=True):
        row.difference = difference


def varying_settings(rows: Sequence[Row]) -> list[str]:
    """The settings whose value differs between rows, plus ``mode`` always, in display order."""
    keys = {key for row in rows for key in row.settings}
    varying = {key for key in keys if len({row.settings.get(key) for row in rows}) > 1}
    return sorted(varying | {"mode"}, key=setting_rank)


def fixed_settings(rows: Sequence[Row]) -> dict[str, Any]:
    """The settings every row shares (``mode`` excepted), in display order."""
    varying = set(varying_settings(rows))
    keys = sorted({key for row in rows for key in row.settings} - varying, key=setting_rank)
    return {key: rows[0].settings.get(key) for key in keys} if rows else {}
