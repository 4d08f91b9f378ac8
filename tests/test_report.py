"""dcutmix-report on run folders written by hand in the format dcutmix-train writes."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dcutmix.reference import (
    find_paper_result,
    not_reproduced,
    paper_results,
    reproducible_results,
    run_method,
)
from dcutmix.report import (
    MODE_ORDER,
    collect_runs,
    human_duration,
    main,
    markdown_table,
    summarise,
    varying_settings,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_run(
    root: Path,
    name: str,
    *,
    mode: str = "dcutmix",
    k: int | None = 5,
    alpha: float | None = 0.2,
    prob: float = 1.0,
    seed: int = 1,
    dataset: str = "digits",
    model: str = "tiny",
    status: str = "completed",
    top1: tuple[float, float] = (10.0, 9.0),
    top5: float = 1.0,
    wall: float = 60.0,
    curve: list[float] | None = None,
    with_results: bool = True,
    **extra: object,
) -> Path:
    """A run folder as dcutmix-train leaves it; ``curve`` is val top-1 error per epoch."""
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"mixing:\n  mode: {mode}\n")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- mixing={mode}\n")
    curve = curve if curve is not None else [top1[0]]
    lines = [
        {"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "val_loss": 0.5, "val_top1_err": err,
         "val_top5_err": top5, "epoch_seconds": 1.0, "images_per_second": 100.0}
        for i, err in enumerate(curve)
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if not with_results:
        return folder
    results = {
        "status": status, "epochs_completed": len(curve), "epochs": len(curve),
        "top1_err_last": top1[0], "top1_err_best": top1[1], "top5_err_last": top5,
        "top5_err_best": top5, "val_loss_last": 0.5, "wall_seconds": wall, "num_params": 1000,
        "error": None, "hostname": "node-elsewhere", "pid": 1, "updated_at": _now(),
        "config": {
            "dataset": dataset, "model": model,
            "mixing": {"mode": mode, "k": k, "alpha": alpha, "prob": prob, "per_sample": True},
            "seed": seed, "optimizer": "sgd", "lr": 0.1, "batch_size": 64, "epochs": len(curve),
            "scheduler": "multistep", "experiment": None, "sweep": "k_ablation",
        },
        "run_name": name,
    }  # fmt: skip
    results.update(extra)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture
def two_modes(tmp_path: Path) -> Path:
    """CutMix and DCutMix, two seeds each, with numbers whose means and stds are easy by hand."""
    sweep = tmp_path / "sweep"
    write_run(sweep, "dcutmix-k5-a0.2-s1", seed=1, top1=(8.0, 7.0), top5=1.0, wall=30.0)
    write_run(sweep, "dcutmix-k5-a0.2-s2", seed=2, top1=(9.0, 8.0), top5=2.0, wall=90.0)
    write_run(sweep, "cutmix-a1-s1", mode="cutmix", k=2, alpha=1.0, seed=1, top1=(10.0, 9.5))
    write_run(sweep, "cutmix-a1-s2", mode="cutmix", k=2, alpha=1.0, seed=2, top1=(12.0, 10.5))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_rows_are_grouped_over_seeds_with_sample_std(two_modes: Path) -> None:
    rows, problems = summarise(collect_runs([two_modes]))
    assert problems == []
    assert [row.settings["mode"] for row in rows] == ["cutmix", "dcutmix"]
    cutmix, dcutmix = rows
    assert cutmix.n == dcutmix.n == 2
    assert cutmix.stats["top1_err_last"].mean == pytest.approx(11.0)
    assert cutmix.stats["top1_err_last"].std == pytest.approx(math.sqrt(2.0))
    assert dcutmix.stats["top1_err_last"].mean == pytest.approx(8.5)
    assert dcutmix.stats["top1_err_last"].std == pytest.approx(math.sqrt(0.5))
    assert dcutmix.stats["top1_err_best"].mean == pytest.approx(7.5)
    assert dcutmix.stats["top5_err_last"].mean == pytest.approx(1.5)
    assert dcutmix.stats["wall_seconds"].mean == pytest.approx(60.0)
    assert varying_settings(rows) == ["mode", "k", "alpha"]


def test_single_seed_has_no_spread(tmp_path: Path) -> None:
    write_run(tmp_path, "dcutmix-s1", top1=(8.0, 7.0))
    (row,), _ = summarise(collect_runs([tmp_path]))
    assert row.n == 1 and row.stats["top1_err_last"].std is None
    table = markdown_table([row])
    assert "8.00" in table and "±" not in table


def test_rows_follow_the_canonical_mode_order_then_k_then_alpha(tmp_path: Path) -> None:
    write_run(tmp_path, "dcutmix-k10", k=10)
    write_run(tmp_path, "dcutmix-k3-a1", k=3, alpha=1.0)
    write_run(tmp_path, "dcutmix-k3-a0.2", k=3, alpha=0.2)
    write_run(tmp_path, "dmixup", mode="dmixup", k=3, alpha=1 / 3)
    write_run(tmp_path, "mixup", mode="mixup", k=2, alpha=1.0)
    # The trainer may store k as 1 or null for no mixing: one configuration either way.
    write_run(tmp_path, "none-s1", mode="none", k=1, alpha=None, seed=1)
    write_run(tmp_path, "none-s2", mode="none", k=None, alpha=None, seed=2)
    rows, _ = summarise(collect_runs([tmp_path]))
    order = [(row.settings["mode"], row.settings["k"], row.settings["alpha"]) for row in rows]
    assert order == [
        ("none", None, None),
        ("mixup", 2, 1.0),
        ("dmixup", 3, 1 / 3),
        ("dcutmix", 3, 0.2),
        ("dcutmix", 3, 1.0),
        ("dcutmix", 10, 0.2),
    ]
    assert rows[0].n == 2


def test_mode_order_is_the_mixing_library_order() -> None:
    from dcutmix.mixing import MIXING_MODES

    assert tuple(MIXING_MODES) == MODE_ORDER


def test_problem_runs_are_listed_with_their_status(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    write_run(sweep, "dcutmix-s1", top1=(8.0, 7.0))
    write_run(sweep, "dcutmix-s2", status="failed", error="RuntimeError: out of memory\ntrace")
    write_run(sweep, "dcutmix-s3", with_results=False)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    here = socket.gethostname()
    write_run(sweep, "dcutmix-s4", status="running", hostname=here, pid=finished.pid)
    write_run(sweep, "dcutmix-s5", status="running", hostname=here, pid=os.getpid())
    old = (datetime.now(timezone.utc) - timedelta(hours=5)).isoformat()
    write_run(sweep, "dcutmix-s6", status="running", hostname="node9", pid=7, updated_at=old)

    rows, problems = summarise(collect_runs([sweep]))
    assert [row.n for row in rows] == [1]
    status = {run.name: run.status for run in problems}
    assert status == {
        "dcutmix-s2": "failed",
        "dcutmix-s3": "not started",
        "dcutmix-s4": "unfinished",
        "dcutmix-s5": "running",
        "dcutmix-s6": "unfinished",
    }
    failed = next(run for run in problems if run.name == "dcutmix-s2")
    assert failed.detail == "RuntimeError: out of memory"

    assert main([str(sweep), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "5 runs excluded: 1 failed, 2 unfinished, 1 not started, 1 running; see below" in printed
    report = (sweep / "report.md").read_text()
    for name, state in status.items():
        assert f"**{state}** `{name}`" in report
    assert "RuntimeError: out of memory" in report and "trace" not in report
    assert f"process {finished.pid} on this host is gone" in report
    assert "no update for 5.0 h" in report


def test_paper_figure_sits_beside_a_matching_row(tmp_path: Path) -> None:
    common = {"dataset": "cifar100", "model": "pyramidnet110"}
    write_run(tmp_path, "dcutmix-k5-a0.2-s1", **common, top1=(17.5, 17.0))
    write_run(tmp_path, "dcutmix-k3-a0.2-s1", **common, k=3)
    write_run(tmp_path, "dmixup-k3-s1", **common, mode="dmixup", k=3, alpha=1 / 3)
    rows, _ = summarise(collect_runs([tmp_path]))
    paper = {(row.settings["mode"], row.settings["k"]): row.paper_top1_err for row in rows}
    assert paper == {("dmixup", 3): 18.60, ("dcutmix", 3): None, ("dcutmix", 5): 16.95}
    table = markdown_table(rows).splitlines()
    assert "paper top-1 err (%)" in table[0]
    assert table[-1].rstrip(" |").endswith("16.95")


def test_report_with_paper_figures_lists_the_rows_it_cannot_reproduce(tmp_path: Path) -> None:
    paper_sweep, toy_sweep = tmp_path / "paper", tmp_path / "toy"
    write_run(paper_sweep, "dcutmix-k5-a0.2-s1", dataset="cifar100", model="pyramidnet110")
    write_run(toy_sweep, "dcutmix-k5-a0.2-s1")
    for sweep in (paper_sweep, toy_sweep):
        assert main([str(sweep)]) == 0
    report = (paper_sweep / "report.md").read_text()
    section = report.split("## Paper rows not reproduced here", 1)[1]
    listed = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(listed) == len(not_reproduced()) == 2
    assert "stylemix: published top-1 error 16.37%" in section
    assert "stylecutmix: published top-1 error 14.17%" in section
    assert "style-transfer network" in section
    assert "not reproduced here" not in (toy_sweep / "report.md").read_text()


def test_paper_figures_match_prob_when_published() -> None:
    assert len(paper_results()) == 24
    assert find_paper_result("cifar100", "pyramidnet200", "cutmix", 2, 1.0, 0.5).top1_err == 14.47
    assert find_paper_result("cifar100", "pyramidnet200", "cutmix", 2, 1.0, 1.0) is None
    assert find_paper_result("cifar10", "pyramidnet200", "none", None, None, 1.0).top1_err == 3.85
    assert find_paper_result("digits", "tiny", "dcutmix", 5, 0.2, 1.0) is None


def test_regulariser_runs_match_their_own_paper_rows() -> None:
    base = ("cifar100", "pyramidnet200", "none", None, None, 1.0)
    assert find_paper_result(*base).top1_err == 16.45
    assert find_paper_result(*base, stochastic_depth=0.5).top1_err == 15.86
    assert find_paper_result(*base, dropblock=0.9).top1_err == 15.73
    assert find_paper_result(*base, label_smoothing=0.1).top1_err == 16.73
    assert find_paper_result(*base, label_smoothing=0.0).top1_err == 16.45
    # two regularisers at once, or one on top of mixing: no such paper row
    assert find_paper_result(*base, stochastic_depth=0.5, label_smoothing=0.1) is None
    assert find_paper_result("cifar100", "pyramidnet200", "mixup", 2, 1.0, 1.0) is not None
    assert (
        find_paper_result("cifar100", "pyramidnet200", "mixup", 2, 1.0, 1.0, dropblock=0.9) is None
    )
    # a regulariser's row is PyramidNet-200's only
    assert (
        find_paper_result(
            "cifar100", "pyramidnet110", "none", None, None, 1.0, stochastic_depth=0.5
        )
        is None
    )
    assert run_method("none", stochastic_depth=0.5) == "stochdepth"
    assert run_method("cutmix", label_smoothing=0.1) == "cutmix+label_smoothing"
    manifold = find_paper_result("cifar10", "pyramidnet200", "manifold_mixup", 2, 2.0, 1.0)
    assert (manifold.top1_err, manifold.kind) == (3.15, "mixing")
    assert (
        find_paper_result("cifar100", "pyramidnet200", "stochdepth", None, None, None).kind
        == "regulariser"
    )


def test_rows_not_reproduced_say_why() -> None:
    listed = not_reproduced()
    assert [(r.method, r.top1_err) for r, _ in listed] == [
        ("stylemix", 16.37),
        ("stylecutmix", 14.17),
    ]
    for _, reason in listed:
        assert "pretrained" in reason and "style-transfer network" in reason
    assert len(reproducible_results()) == len(paper_results()) - 2


def test_table_without_published_figures_has_no_paper_column(two_modes: Path) -> None:
    rows, _ = summarise(collect_runs([two_modes]))
    table = markdown_table(rows)
    assert "paper" not in table
    header, _, cutmix, dcutmix = table.splitlines()
    assert [cell.strip() for cell in header.strip("|").split("|")][:4] == [
        "mode",
        "K",
        "alpha",
        "n",
    ]
    assert "11.00 ± 1.41" in cutmix and "8.50 ± 0.71" in dcutmix
    assert "1.0 min" in dcutmix
    # --best puts the spread on the best epoch's error instead.
    best = markdown_table(rows, best=True).splitlines()[3]
    assert "7.50 ± 0.71" in best and "8.50 ±" not in best


def test_results_csv_has_one_line_per_configuration(two_modes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(two_modes), "--out", str(out), "--no-plots"]) == 0
    with (out / "results.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert reader.fieldnames == [
        "mode", "k", "alpha", "n",
        "top1_err_last_mean", "top1_err_last_std", "top1_err_best_mean", "top1_err_best_std",
        "top5_err_last_mean", "top5_err_last_std", "wall_seconds_mean", "wall_seconds_std",
        "paper_top1_err", "delta_vs_baseline", "delta_ci95_low", "delta_ci95_high", "p_value",
    ]  # fmt: skip
    assert [(line["mode"], line["k"], line["n"]) for line in lines] == [
        ("cutmix", "2", "2"),
        ("dcutmix", "5", "2"),
    ]
    assert float(lines[0]["top1_err_last_std"]) == pytest.approx(math.sqrt(2.0), rel=1e-5)
    assert float(lines[1]["top1_err_best_mean"]) == pytest.approx(7.5)
    assert lines[1]["paper_top1_err"] == ""
    assert not (two_modes / "report.md").exists()
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.csv"]


def test_plots_are_drawn_only_when_the_data_supports_them(tmp_path: Path) -> None:
    flat = tmp_path / "flat"  # one K, one alpha, one epoch per run: nothing to plot
    write_run(flat, "dcutmix-s1", curve=[9.0])
    write_run(flat, "mixup-s1", mode="mixup", k=2, alpha=1.0, curve=[10.0])
    assert main([str(flat)]) == 0
    assert not list(flat.glob("*.png"))
    assert "## Plots" not in (flat / "report.md").read_text()

    grid = tmp_path / "grid"
    for k in (3, 5):
        for alpha in (0.2, 1.0):
            for seed in (1, 2):
                write_run(grid, f"dcutmix-k{k}-a{alpha}-s{seed}", k=k, alpha=alpha, seed=seed,
                          curve=[30.0, 20.0, 10.0 + k + seed])  # fmt: skip
    assert main([str(grid)]) == 0
    names = ["plot_error_vs_k.png", "plot_error_vs_alpha.png", "plot_learning_curves.png"]
    for name in names:
        assert (grid / name).read_bytes().startswith(PNG_SIGNATURE)
    report = (grid / "report.md").read_text()
    assert all(f"[{name}]({name})" in report for name in names)
    assert not list(grid.glob(".*tmp*"))

    quiet = tmp_path / "quiet"
    assert main([str(grid), "--out", str(quiet), "--no-plots"]) == 0
    assert not list(quiet.glob("*.png"))


def test_exit_codes_and_messages(tmp_path: Path, two_modes: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    assert capsys.readouterr().err.strip() == f"dcutmix-report: no run folders under {empty}"

    missing = tmp_path / "nope"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dcutmix-report: PATH: {missing} does not exist") and "\n" not in err

    crashed = tmp_path / "crashed"
    write_run(crashed, "dcutmix-s1", status="failed", error="ValueError: bad")
    assert main([str(crashed)]) == 1
    captured = capsys.readouterr()
    assert "**failed** `dcutmix-s1`" in captured.out and "none of the 1 runs" in captured.err

    assert main([str(two_modes)]) == 0
    assert "| cutmix" in capsys.readouterr().out


def test_report_imports_no_heavy_library_without_plots(
    two_modes: Path,
) -> None:
    probe = (
        "import sys; from dcutmix.report import main; code = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'hydra', 'matplotlib', 'wandb') if m in sys.modules]; "
        "print(heavy); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(two_modes), "--no-plots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


def test_human_duration_picks_readable_units() -> None:
    assert [human_duration(s) for s in (4.25, 42, 150, 7200, 3 * 86400)] == [
        "4.2 s",
        "42 s",
        "2.5 min",
        "2.0 h",
        "3.0 d",
    ]


@pytest.mark.slow
def test_hundreds_of_runs_report_with_every_row_and_plot(tmp_path: Path) -> None:
    """120 runs of 300 epochs each, the table and the plots; its time is a benchmark's figure
    (`python -m dcutmix.bench report`), not a test's."""
    sweep = tmp_path / "big"
    modes = ("dcutmix", "dmixup", "naive_cutmix", "naive_mixup")
    curve = [50.0 - i / 10 for i in range(300)]
    for mode in modes:
        for k in (2, 3, 4, 5, 6, 8, 10, 12, 14, 16):
            for seed in (1, 2, 3):
                write_run(sweep, f"{mode}-k{k}-s{seed}", mode=mode, k=k, seed=seed, curve=curve)
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and all(row["n"] == "3" for row in rows)  # 4 modes x 10 K, 3 seeds
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {
        "plot_error_vs_k.png",
        "plot_learning_curves.png",
    }


def test_report_benchmark_times_a_written_sweep():
    from dcutmix.bench.report import KS, MODES, run_report_benchmark

    result = run_report_benchmark(epochs=5, seeds=(1, 2))
    assert result["runs"] == len(MODES) * len(KS) * 2 and result["epochs"] == 5
    assert result["figures"] == 2 and result["report_seconds"] > 0


def test_list_settings_group_and_show_as_text(tmp_path: Path) -> None:
    for seed, milestones in ((1, [150, 225]), (2, [150, 225]), (1, [75, 90])):
        folder = write_run(tmp_path, f"m{milestones[0]}-s{seed}", seed=seed)
        results = json.loads((folder / "results.json").read_text())
        results["config"]["scheduler_milestones"] = milestones
        (folder / "results.json").write_text(json.dumps(results))
    rows, _ = summarise(collect_runs([tmp_path]))
    assert varying_settings(rows) == ["mode", "scheduler_milestones"]
    assert sorted((row.settings["scheduler_milestones"], row.n) for row in rows) == [
        ("[150, 225]", 2),
        ("[75, 90]", 1),
    ]
