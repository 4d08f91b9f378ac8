"""The Fashion-MNIST figures published outside the paper: entered as their sources give them,
matched to the runs they apply to, and printed in the report with source, recipe and caveat."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from dcutmix.reference import find_published, published_results
from dcutmix.report import main

# The figures as the issue quotes its sources: Random Erasing's README table (baseline, with
# erasing), the rerun in its issue 10, and the dataset's benchmark list (accuracy).
RE_TABLE = {
    "resnet20": (4.39, 4.02),
    "resnet32": (4.16, 3.80),
    "resnet44": (4.41, 4.01),
    "resnet56": (4.39, 4.13),
    "resnet110": (4.40, 4.01),
    "wrn28_10": (4.01, 3.65),
}
BENCHMARK_ACCURACY = {("wrn28_10", "none"): 0.959, ("wrn28_10", "random_erasing"): 0.963}


def _rows(source: str) -> dict[tuple[str, str], float]:
    return {
        (r.model, r.method): r.top1_err for r in published_results() if r.source.startswith(source)
    }


def test_random_erasings_table_is_entered_as_published_with_its_release_caveat():
    rows = _rows("Random Erasing repository README")
    assert rows == {
        (model, method): figure
        for model, pair in RE_TABLE.items()
        for method, figure in zip(("none", "random_erasing"), pair, strict=True)
    }
    for result in published_results():
        if result.source.startswith("Random Erasing repository README"):
            assert result.release == "2017" and "0.4 points optimistic" in result.caveat


def test_the_rerun_on_the_current_release_keeps_its_spread():
    rerun = [r for r in published_results() if "issue 10" in r.source]
    assert [(r.method, r.top1_err, r.plus_minus, r.release) for r in rerun] == [
        ("none", 4.82, 0.04, "current"),
        ("random_erasing", 4.45, 0.04, "current"),
    ]


def test_benchmark_list_errors_are_its_accuracies_and_say_so():
    listed = [r for r in published_results() if "benchmark list" in r.source]
    for result in listed:
        accuracy = float(re.search(r"accuracy (0\.\d+)", result.caveat).group(1))
        assert result.top1_err == pytest.approx(100 * (1 - accuracy), abs=1e-9)
        assert "not tested" in result.caveat
    for key, accuracy in BENCHMARK_ACCURACY.items():
        assert any(
            (r.model, r.method) == key and f"accuracy {accuracy}" in r.caveat for r in listed
        )
    resnet18 = [r for r in listed if r.model == "resnet18"]
    assert [r.top1_err for r in resnet18] == [5.1]


def test_every_figure_has_a_source_a_recipe_and_a_caveat():
    for result in published_results():
        assert result.source and result.recipe and result.caveat, result


def test_a_figure_applies_only_to_the_network_it_was_measured_with():
    figures = {r.label() for r in find_published("fashion_mnist", "resnet20", "none", _shape())}
    assert figures == {"4.39 (2017)", "4.82 ± 0.04 (current)"}
    assert find_published("fashion_mnist", "resnet20", "none", _shape(width=2)) == ()
    assert find_published("fashion_mnist", "resnet20", "none", _shape(shortcut="A")) == ()
    assert find_published("fashion_mnist", "resnet20", "dcutmix", _shape()) == ()
    erasing = {**_shape(), "fill": 0.4914, "attempts": 1}
    assert len(find_published("fashion_mnist", "resnet20", "random_erasing", erasing)) == 2
    paper = {**_shape(), "fill": "random", "attempts": 10}
    assert find_published("fashion_mnist", "resnet20", "random_erasing", paper) == ()
    assert find_published("cifar10", "resnet20", "none", _shape()) == ()


def _shape(width: int = 1, shortcut: str = "B") -> dict:
    return {"width": width, "shortcut": shortcut}


def _write_run(
    root: Path, name: str, mode: str, seed: int, top1: float, code: bool = False, **config
) -> None:
    """A completed run's results.json; ``code``: random erasing as the authors' code does it."""
    folder = root / name
    mixing = {"mode": mode, "k": None, "alpha": None, "prob": 0.5, "per_sample": True}
    if mode == "random_erasing":
        erasing = (0.4914, 1) if code else ("random", 10)
        mixing.update(area=[0.02, 0.4], aspect=0.3, fill=erasing[0], attempts=erasing[1])
    folder.mkdir(parents=True)
    results = {
        "status": "completed",
        "epochs_completed": 3,
        "epochs": 3,
        "top1_err_last": top1,
        "top1_err_best": top1,
        "top5_err_last": 0.5,
        "wall_seconds": 10.0,
        "config": {
            "dataset": "fashion_mnist",
            "mixing": mixing,
            "seed": seed,
            "epochs": 3,
            **config,
        },
        "run_name": name,
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_the_report_prints_the_figures_beside_matching_rows(tmp_path):
    sweep = tmp_path / "sweep"
    resnet = {"model": "resnet20", "width": 1, "shortcut": "B"}
    for seed, top1 in ((1, 9.0), (2, 10.0)):
        _write_run(sweep, f"re-s{seed}", "random_erasing", seed, top1, **resnet, code=True)
        _write_run(sweep, f"re-paper-s{seed}", "random_erasing", seed, top1, **resnet)
        _write_run(sweep, f"none-s{seed}", "none", seed, top1 + 1, **resnet)
        _write_run(sweep, f"tiny-s{seed}", "none", seed, top1 + 2, model="tiny")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--no-plots"]) == 0
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert "published top-1 err (%)" in table[0]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    cells = {}
    for line in table[1:]:
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        key = (row["model"], row["mode"], row["fill"])
        cells[key] = row["published top-1 err (%)"]
    assert cells[("resnet20", "none", "—")] == "4.39 (2017); 4.82 ± 0.04 (current)"
    assert cells[("resnet20", "random_erasing", "0.4914")] == "4.02 (2017); 4.45 ± 0.04 (current)"
    # the paper's reading of random erasing is not what the published figures measured
    assert cells[("resnet20", "random_erasing", "random")] == "—"
    assert cells[("tiny", "none", "—")] == "—"
    section = report.split("## Published figures beside the table", 1)[1]
    assert section.count("\n- ") == 4
    assert "0.4 points optimistic" in section and "issue 10" in section
    assert "Random Erasing's: 300 epochs, batch 128" in section
    with (out / "results.csv").open(newline="") as handle:
        lines = {(r["model"], r["mode"]): r["published_top1_err"] for r in csv.DictReader(handle)}
    assert lines[("resnet20", "none")] == "4.39;4.82" and lines[("tiny", "none")] == ""
