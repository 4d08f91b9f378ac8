"""The proxy-search section: does a subset rank the candidates as the full training set does?

Present whenever the report holds both full-data runs and subset runs (``dataset.subset``) of
the same candidates. A candidate is a configuration without its ``subset.*`` settings; its
full-data error is the mean over its full runs' seeds. For each subset kind (by, rule,
fraction) and each seed that every candidate has:

- Kendall's tau-b and Spearman's rho between the candidates' subset errors and their full-data
  errors, averaged over seeds, with a 95% percentile bootstrap interval (``BOOTSTRAP`` resamples
  of the candidates, with replacement, from a fixed seed);
- whether the subset's pick (its lowest error) is the full-data best, and its regret: the pick's
  full-data error minus the best full-data error (percentage points), mean over seeds;
- the cost ratio, full / subset, per search (one seed of every candidate): in wall time and in
  training images seen (``images_per_epoch`` x epochs), and in wall time with the one-time
  scoring run (its training and ``dcutmix-analyze uncertainty``) added to the subset's side.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcutmix.report.runs import Run
from dcutmix.store.files import read_json

BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
PROXY_COLUMNS = (
    "proxy_candidates", "proxy_seeds", "kendall_tau", "kendall_tau_low", "kendall_tau_high",
    "spearman_rho", "spearman_rho_low", "spearman_rho_high", "best_found", "regret",
    "cost_ratio_wall", "cost_ratio_images", "cost_ratio_wall_with_scoring",
)  # fmt: skip


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either ranking allowed); NaN when a ranking is all ties."""
    concordant = discordant = ties_x = ties_y = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            pairs += 1
            ties_x += dx == 0
            ties_y += dy == 0
            product = dx * dy
            concordant += product > 0
            discordant += product < 0
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the mean ranks; NaN when a ranking is all ties."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


@dataclass
class ProxyResult:
    """One subset kind against the full-data ranking."""

    kind: dict[str, Any]  # subset.by, subset.rule, subset.fraction
    figures: dict[str, Any]  # PROXY_COLUMNS

    @property
    def label(self) -> str:
        k = self.kind
        return f"{k['by']} / {k['rule']} / {k['fraction']:.4g}"


def _kind(settings: dict[str, Any]) -> tuple:
    return tuple(settings.get(f"subset.{key}") for key in ("by", "rule", "fraction"))


def _candidate(settings: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in settings.items() if not k.startswith("subset.")))


def _error(run: Run, best: bool) -> float | None:
    value = run.results.get("top1_err_best" if best else "top1_err_last")
    return float(value) if isinstance(value, (int, float)) else None


def _seed(run: Run) -> Any:
    return run.config.get("seed")


def _images(run: Run) -> float:
    r = run.results
    return float(r.get("images_per_epoch") or 0) * float(r.get("epochs_completed") or 0)


def _wall(run: Run) -> float:
    return float(run.results.get("wall_seconds") or 0.0)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _scoring_seconds(runs: list[Run]) -> float | None:
    """The one-time cost of the scores a subset read: the scoring run's training and scoring."""
    folder = (runs[0].config.get("subset") or {}).get("scores")
    if not folder:
        return None
    results = read_json(Path(folder) / "results.json") or {}
    meta = read_json(Path(folder) / "uncertainty.json") or {}
    if "wall_seconds" not in results or "seconds" not in meta:
        return None
    return float(results["wall_seconds"]) + float(meta["seconds"])


def _correlations(subset: dict, full: list[float], seeds: list) -> tuple[float, float]:
    taus = [kendall_tau(subset[s], full) for s in seeds]
    rhos = [spearman_rho(subset[s], full) for s in seeds]
    finite = [(t, r) for t, r in zip(taus, rhos, strict=True) if not math.isnan(t + r)]
    if not finite:
        return math.nan, math.nan
    return _mean([t for t, _ in finite]), _mean([r for _, r in finite])


def _bootstrap(subset: dict, full: list[float], seeds: list) -> tuple[list[float], list[float]]:
    """The 2.5% and 97.5% points of (tau, rho) over resamples of the candidates."""
    rng = random.Random(BOOTSTRAP_SEED)
    n, taus, rhos = len(full), [], []
    for _ in range(BOOTSTRAP):
        pick = [rng.randrange(n) for _ in range(n)]
        resampled = {s: [subset[s][i] for i in pick] for s in seeds}
        tau, rho = _correlations(resampled, [full[i] for i in pick], seeds)
        taus += [] if math.isnan(tau) else [tau]
        rhos += [] if math.isnan(rho) else [rho]

    def interval(values: list[float]) -> list[float]:
        if len(values) < 2:
            return [math.nan, math.nan]
        cuts = statistics.quantiles(values, n=40, method="inclusive")
        return [cuts[0], cuts[-1]]

    return interval(taus), interval(rhos)


def _one_kind(
    full_runs: dict[tuple, list[Run]], subset_runs: dict[tuple, list[Run]], best: bool
) -> dict[str, Any] | None:
    """PROXY_COLUMNS for one subset kind, or None with fewer than 3 shared candidates."""
    candidates = sorted(set(full_runs) & set(subset_runs), key=repr)
    full = [
        _mean([e for r in full_runs[c] if (e := _error(r, best)) is not None]) for c in candidates
    ]
    by_seed = [{_seed(r): _error(r, best) for r in subset_runs[c]} for c in candidates]
    seeds = sorted(set.intersection(*(set(s) for s in by_seed)) if by_seed else set(), key=repr)
    seeds = [s for s in seeds if all(m[s] is not None for m in by_seed)]
    if len(candidates) < 3 or not seeds or any(math.isnan(f) for f in full):
        return None
    subset = {s: [m[s] for m in by_seed] for s in seeds}
    tau, rho = _correlations(subset, full, seeds)
    (tau_low, tau_high), (rho_low, rho_high) = _bootstrap(subset, full, seeds)
    picks = [min(range(len(full)), key=lambda i, s=s: subset[s][i]) for s in seeds]
    best_full = min(full)
    full_cost = sum(_mean([_wall(r) for r in full_runs[c]]) for c in candidates)
    subset_cost = sum(_mean([_wall(r) for r in subset_runs[c]]) for c in candidates)
    full_images = sum(_mean([_images(r) for r in full_runs[c]]) for c in candidates)
    subset_images = sum(_mean([_images(r) for r in subset_runs[c]]) for c in candidates)
    scoring = _scoring_seconds(subset_runs[candidates[0]])
    values = [
        len(candidates), len(seeds), tau, tau_low, tau_high, rho, rho_low, rho_high,
        sum(full[p] == best_full for p in picks), _mean([full[p] - best_full for p in picks]),
        full_cost / subset_cost if subset_cost else math.nan,
        full_images / subset_images if subset_images else math.nan,
        full_cost / (subset_cost + scoring) if scoring is not None else None,
    ]  # fmt: skip
    return dict(zip(PROXY_COLUMNS, values, strict=True))


def proxy_results(runs: Sequence[Run], best: bool = False) -> list[ProxyResult]:
    """Every subset kind's figures, from the completed runs; empty without both kinds of run."""
    full: dict[tuple, list[Run]] = {}
    kinds: dict[tuple, dict[tuple, list[Run]]] = {}
    for run in runs:
        if run.status != "completed":
            continue
        if "subset.fraction" in run.settings:
            kind = kinds.setdefault(_kind(run.settings), {})
            kind.setdefault(_candidate(run.settings), []).append(run)
        else:
            full.setdefault(_candidate(run.settings), []).append(run)
    results = []
    for kind in sorted(kinds, key=repr):
        figures = _one_kind(full, kinds[kind], best)
        if figures is not None:
            results.append(
                ProxyResult(dict(zip(("by", "rule", "fraction"), kind, strict=True)), figures)
            )
    return results


def _show(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def proxy_section(results: Sequence[ProxyResult], best: bool = False) -> str:
    """The report's Markdown section; empty without results."""
    if not results:
        return ""
    header = (
        "| subset (by / rule / fraction) | candidates | seeds | Kendall tau [95% CI] | "
        "Spearman rho [95% CI] | best found | regret (pp) | cost ratio: wall | images | "
        "wall with scoring |"
    )
    lines = [header, "|" + "---|" * 10]
    for result in results:
        f = result.figures
        lines.append(
            f"| {result.label} | {f['proxy_candidates']} | {f['proxy_seeds']} | "
            f"{_show(f['kendall_tau'])} [{_show(f['kendall_tau_low'])}, "
            f"{_show(f['kendall_tau_high'])}] | {_show(f['spearman_rho'])} "
            f"[{_show(f['spearman_rho_low'])}, {_show(f['spearman_rho_high'])}] | "
            f"{f['best_found']}/{f['proxy_seeds']} | {_show(f['regret'])} | "
            f"{_show(f['cost_ratio_wall'], 1)}x | {_show(f['cost_ratio_images'], 1)}x | "
            f"{_show(f['cost_ratio_wall_with_scoring'], 1)}{'x' if f['cost_ratio_wall_with_scoring'] else ''} |"
        )
    which = "best-epoch" if best else "last-epoch"
    note = (
        f"Each subset's ranking of the candidates ({which} top-1 error, per seed) against the "
        "full-data ranking (mean over seeds): correlations are the mean over seeds with a 95% "
        f"bootstrap interval over candidates ({BOOTSTRAP} resamples); best found: seeds whose "
        "pick is the full-data best; regret: the pick's full-data error minus the best, mean over "
        "seeds; cost ratio: full / subset per search (one seed of every candidate)."
    )
    return "## Proxy search\n\n" + note + "\n\n" + "\n".join(lines)


def proxy_csv_columns(settings: dict[str, Any], results: Sequence[ProxyResult]) -> list[Any]:
    """A results.csv row's PROXY_COLUMNS: its subset kind's figures (empty for other rows)."""
    for result in results:
        if _kind(settings) == tuple(result.kind.values()):
            return [result.figures[name] for name in PROXY_COLUMNS]
    return [None] * len(PROXY_COLUMNS)
