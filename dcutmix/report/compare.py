"""``dcutmix-report A B --compare``: two sweeps' tables side by side, one line per configuration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dcutmix.errors import InputError
from dcutmix.report.render import (
    format_markdown_table,
    show_difference,
    show_stat,
    show_value,
    significance_note,
)
from dcutmix.report.runs import collect_runs
from dcutmix.report.stats import (
    METRICS,
    Row,
    compare_with_baseline,
    default_baseline,
    headline_metric,
    metrics_for,
    setting_rank,
    summarise,
    value_rank,
    varying_settings,
)
from dcutmix.store.files import atomic_write_text

COMPARE_FILE = "compare.md"

SettingsKey = tuple[tuple[str, Any], ...]


def _rows_of(path: str, baseline: str | None, best: bool) -> tuple[list[Row], str]:
    runs = collect_runs([path])
    rows, _ = summarise(runs, metrics_for(runs))
    chosen = baseline or default_baseline(rows)
    compare_with_baseline(rows, chosen, best)
    return rows, chosen


def compare_table(
    sides: Sequence[tuple[str, Sequence[Row]]], best: bool = False, with_delta: bool = True
) -> str:
    """A Markdown table: the settings, then n, headline top-1 (± std) and Δ of each side."""
    by_side: list[dict[SettingsKey, Row]] = [
        {tuple(sorted(row.settings.items())): row for row in rows} for _, rows in sides
    ]
    all_rows = [row for _, rows in sides for row in rows]
    varying = varying_settings(all_rows)
    names = sorted({key for row in all_rows for key in row.settings}, key=setting_rank)
    keys = sorted(
        {key for side in by_side for key in side},
        key=lambda key: [value_rank(name, dict(key).get(name)) for name in names],
    )
    headline = headline_metric(best)
    metric = next(m for m in METRICS if m.name == headline)
    header = [str(key) for key in varying]
    numeric = [False] * len(varying)
    for label, _ in sides:
        header += [f"{label}: n", f"{label}: {metric.heading}"]
        numeric += [True, True]
        if with_delta:
            header.append(f"{label}: Δ (95% CI)")
            numeric.append(True)
    lines = []
    for key in keys:
        settings = dict(key)
        cells = [show_value(settings.get(name)) for name in varying]
        for side in by_side:
            row = side.get(key)
            cells += (
                [str(row.n), show_stat(row.stats[headline], metric, True)] if row else ["0", "—"]
            )
            if with_delta:
                cells.append(show_difference(row.difference if row else None))
        lines.append(cells)
    return format_markdown_table(header, numeric, lines)


def compare_main(paths: Sequence[str], baseline: str | None, best: bool, out: str | None) -> int:
    """Print two sweeps' tables side by side (and write compare.md to ``out`` when given)."""
    sides = []
    try:
        for path in paths:
            rows, chosen = _rows_of(path, baseline, best)
            if not rows:
                print(f"dcutmix-report: --compare: no completed run under {path}", file=sys.stderr)
                return 1
            sides.append((path, rows, chosen))
    except InputError as error:
        print(f"dcutmix-report: {error}", file=sys.stderr)
        return 2
    labels = [Path(path).resolve().name for path, _, _ in sides]
    if len(set(labels)) < len(labels):
        labels = ["A", "B"]
    chosen = {side[2] for side in sides}
    parts = [f"# dcutmix comparison: {labels[0]} vs {labels[1]}"]
    parts.append(
        " and ".join(f"{label} is `{side[0]}`" for label, side in zip(labels, sides, strict=True))
        + "."
    )
    if len(chosen) == 1:
        parts.append(significance_note(chosen.pop(), best))
    parts.append(
        compare_table([(label, side[1]) for label, side in zip(labels, sides, strict=True)], best)
    )
    text = "\n\n".join(parts) + "\n"
    print(text, end="")
    if out:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out) / COMPARE_FILE, text)
        except OSError as error:
            print(
                f"dcutmix-report: --out: cannot write to {out} ({error.strerror or error})",
                file=sys.stderr,
            )
            return 2
    return 0
