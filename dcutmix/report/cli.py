"""``dcutmix-report PATH...``: the command line over reading, statistics and rendering."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dcutmix.errors import InputError
from dcutmix.report.plots import _analysis_plots, draw_plots
from dcutmix.report.proxy import proxy_results
from dcutmix.report.render import render_report, results_csv
from dcutmix.report.runs import collect_runs
from dcutmix.report.stats import (
    METRICS,
    MODE_ORDER,
    compare_with_baseline,
    default_baseline,
    metrics_for,
    summarise,
)
from dcutmix.store.files import atomic_write_text

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
    parser.add_argument(
        "--baseline",
        metavar="MODE",
        help="the mixing mode each row is compared with (default: none when present, else cutmix)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="put the tables of two sweeps (two PATHs) side by side",
    )
    return parser


def _argument_problem(args: argparse.Namespace) -> str | None:
    if args.baseline is not None and args.baseline not in MODE_ORDER:
        return (
            f"--baseline: no mixing mode {args.baseline!r}; choose one of {', '.join(MODE_ORDER)}"
        )
    if args.compare and len(args.paths) != 2:
        return f"--compare: give exactly two sweep folders to compare; got {len(args.paths)}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and write the report files; 0 on a table, 1 without runs, 2 on bad input."""
    args = _parser().parse_args(argv)
    problem = _argument_problem(args)
    if problem:
        print(f"dcutmix-report: {problem}", file=sys.stderr)
        return 2
    if args.compare:
        from dcutmix.report.compare import compare_main

        return compare_main(args.paths, args.baseline, args.best, args.out)
    try:
        runs = collect_runs(args.paths)
    except InputError as error:
        print(f"dcutmix-report: {error}", file=sys.stderr)
        return 2
    if not runs:
        print(f"dcutmix-report: no run folders under {' '.join(args.paths)}", file=sys.stderr)
        return 1
    metrics = metrics_for(runs)
    rows, problems = summarise(runs, metrics)
    baseline = args.baseline or default_baseline(rows)
    compare_with_baseline(rows, baseline, args.best)
    proxy = proxy_results(runs, args.best)
    out_dir = Path(args.out) if args.out else Path(args.paths[0])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = draw_plots(rows, out_dir, args.best) if rows and not args.no_plots else []
        if rows and not args.no_plots and len(metrics) > len(METRICS):
            plots += _analysis_plots(rows, out_dir)
        report = render_report(
            rows, problems, plots, args.best, args.paths, metrics, baseline, proxy
        )
        atomic_write_text(out_dir / "report.md", report)
        atomic_write_text(out_dir / "results.csv", results_csv(rows, metrics, proxy))
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
