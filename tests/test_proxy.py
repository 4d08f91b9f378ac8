"""Sample-wise uncertainty, training on a chosen subset, and the proxy search's report section.

The real-data test needs Debian's dataset-fashion-mnist: under CI=true it fails without it,
elsewhere it skips with one reason line. The rest train the tiny network on digits.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcutmix.analyze import main as analyze_main
from dcutmix.analyze.uncertainty import score_run
from dcutmix.config import REPO_ROOT
from dcutmix.data import (
    SCORES_FILE,
    SUBSET_FILE,
    build_data,
    choose_subset,
    histogram_weights,
    parse_subset,
    per_class_counts,
    select,
    subset_count,
)
from dcutmix.data.subsets import SubsetSettings
from dcutmix.errors import InputError
from dcutmix.report.proxy import kendall_tau, proxy_results, proxy_section, spearman_rho
from dcutmix.report.runs import Run
from tests.helpers.provided import require

TINY = ["model=tiny", "model.width=4", "trainer.batch_size=64", "trainer.epochs=1"]
DIGITS = {"name": "digits"}


# --- choosing a subset ---------------------------------------------------------------------------


def test_histogram_weights_match_a_hand_computed_case():
    # log-scores 0, 0, 0, 1, 2, 2 in 4 bins of width 0.5: counts 3, 0, 1, 2; max 3
    # bin weights max - count + 1 = 1, 4, 3, 2; each image takes its bin's
    scores = np.exp([0.0, 0.0, 0.0, 1.0, 2.0, 2.0])
    assert histogram_weights(scores, bins=4).tolist() == [1, 1, 1, 3, 2, 2]


def test_per_class_counts_add_up_by_largest_remainder():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # exact shares 2.5, 1.5, 1.0: floors 2, 1, 1; the one left goes to the lower tied class
    assert per_class_counts(labels, 5) == {0: 3, 1: 1, 2: 1}
    assert subset_count(1 / 7, 6000) == 857 and subset_count(1.0, 10) == 10


def test_top_and_per_class_take_the_highest_scores():
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.3])
    labels = np.array([0, 0, 0, 1, 1, 1])
    rng = np.random.default_rng(0)
    assert select(scores, labels, 2, "top", rng).tolist() == [0, 2]
    assert select(scores, labels, 2, "per_class", rng).tolist() == [0, 3]


def test_the_same_seed_gives_the_same_subset():
    labels = np.arange(1000) % 10
    for rule in ("top", "histogram", "per_class"):
        settings = SubsetSettings(0.2, "random", rule)
        one = choose_subset(settings, labels, seed=1, dataset=DIGITS, batch_size=8)
        again = choose_subset(settings, labels, seed=1, dataset=DIGITS, batch_size=8)
        other = choose_subset(settings, labels, seed=2, dataset=DIGITS, batch_size=8)
        assert one.positions.tolist() == again.positions.tolist()
        assert one.positions.tolist() != other.positions.tolist()
        assert len(one.positions) == 200 == len(set(one.positions.tolist()))
    per_class = choose_subset(SubsetSettings(0.2, "random", "per_class"), labels, seed=1,
                              dataset=DIGITS, batch_size=8)  # fmt: skip
    assert np.bincount(labels[per_class.positions]).tolist() == [20] * 10


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"fraction": 0}, "dataset.subset.fraction"),
        ({"fraction": 1.5}, "dataset.subset.fraction"),
        ({"fraction": "half"}, "dataset.subset.fraction"),
        ({"by": "loss"}, "dataset.subset.by"),
        ({"rule": "bottom"}, "dataset.subset.rule"),
        ({"fraction": 0.5, "by": "uncertainty"}, "dataset.subset.scores"),
        ({"fraction": 0.5, "by": "entropy", "scores": "/nonexistent"}, "dataset.subset.scores"),
        ({"size": 3}, "dataset.subset.size"),
    ],
)
def test_bad_subset_settings_name_the_key(value, key):
    with pytest.raises(InputError) as caught:
        parse_subset(value)
    assert caught.value.key == key and "\n" not in str(caught.value)


def test_a_subset_smaller_than_one_batch_is_refused():
    with pytest.raises(InputError) as caught:
        choose_subset(SubsetSettings(0.01), np.arange(1000) % 10, seed=0, dataset=DIGITS,
                      batch_size=64)  # fmt: skip
    assert caught.value.key == "dataset.subset.fraction" and "fewer than one batch" in str(
        caught.value
    )


# --- a subset run, and scores from a trained run --------------------------------------------------


def test_a_subset_run_saves_its_images_and_records_them(train_in_process, tmp_path):
    subset = ["dataset.subset.fraction=0.5", "dataset.subset.rule=per_class", "mixing=none"]
    code, run = train_in_process([*TINY, *subset, "trainer.limit_train_batches=2"], tmp_path / "a")
    assert code == 0
    results = json.loads((run / "results.json").read_text())
    saved = json.loads((run / SUBSET_FILE).read_text())
    assert results["config"]["subset"] == {
        "fraction": 0.5, "by": "random", "rule": "per_class", "count": 719, "pool": 1437,
        "scores": None,
    }  # fmt: skip
    assert results["images_per_epoch"] == 2 * 64
    assert len(saved["indices"]) == 719 == len(set(saved["indices"]))
    _, again = train_in_process([*TINY, *subset, "trainer.limit_train_batches=2"], tmp_path / "b")
    assert json.loads((again / SUBSET_FILE).read_text())["indices"] == saved["indices"]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A digits DCutMix run (one short epoch), scored with M = 2."""
    from omegaconf import OmegaConf

    from dcutmix.train import train_run
    from tests.helpers.runs import compose_config

    run = tmp_path_factory.mktemp("scored") / "run"
    cfg = compose_config([*TINY, "mixing=dcutmix", "trainer.limit_train_batches=3"])
    assert train_run(cfg, run) == 0
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as Hydra leaves it
    score_run(run, views=2, seed=0, dataset="digits")
    return run


def test_scores_cover_every_training_image_and_repeat_for_a_seed(scored_run, tmp_path):
    rows = list(csv.DictReader((scored_run / SCORES_FILE).open()))
    assert len(rows) == 1437 and [int(r["index"]) for r in rows] == list(range(1437))
    for row in rows:
        assert 0 <= float(row["uncertainty"]) <= 1 and 0 <= float(row["entropy"]) <= math.log(10)
        assert -1 <= float(row["margin"]) <= 1
    first = (scored_run / SCORES_FILE).read_text()
    score_run(scored_run, views=2, seed=0)
    assert (scored_run / SCORES_FILE).read_text() == first
    assert (scored_run / "plot_uncertainty.png").stat().st_size > 0
    meta = json.loads((scored_run / "uncertainty.json").read_text())
    assert (meta["dataset"], meta["views"], meta["k"], meta["alpha"]) == ("digits", 2, 5, 0.2)


def test_a_subset_by_uncertainty_reads_the_scores(scored_run):
    chosen = {"fraction": 0.2, "by": "uncertainty", "rule": "top", "scores": str(scored_run)}
    data = build_data({**DIGITS, "subset": chosen}, batch_size=32, device="cpu", seed=0)
    rows = list(csv.DictReader((scored_run / SCORES_FILE).open()))
    top = sorted(range(len(rows)), key=lambda i: -float(rows[i]["uncertainty"]))[:287]
    assert sorted(data.train_index.tolist()) == sorted(top)
    assert data.subset.record["count"] == 287


def test_scores_of_another_dataset_are_refused(scored_run):
    chosen = {"fraction": 0.5, "by": "entropy", "scores": str(scored_run)}
    fake = {"name": "fake", "num_train": 1437, "subset": chosen}
    with pytest.raises(InputError) as caught:
        build_data(fake, batch_size=32, device="cpu", seed=0)
    assert caught.value.key == "dataset.subset.scores" and "digits" in str(caught.value)
    short = {"name": "fake", "num_train": 100, "subset": chosen}
    with pytest.raises(InputError, match=r"dataset\.subset\.scores"):
        build_data({**short, "name": "fake"}, batch_size=32, device="cpu", seed=0)


def _cli_error(capsys, argv: list[str]) -> str:
    assert analyze_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_uncertainty_inputs_are_one_line_and_write_nothing(scored_run, tmp_path, capsys):
    before = sorted(p.name for p in scored_run.iterdir())
    assert "--views" in _cli_error(capsys, ["uncertainty", str(scored_run), "--views", "0"])
    err = _cli_error(capsys, ["uncertainty", str(scored_run), "--dataset", "fashion_mnist"])
    assert "--dataset" in err and "digits" in err
    assert sorted(p.name for p in scored_run.iterdir()) == before
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.json").write_text(json.dumps({"status": "completed"}))
    (bare / ".hydra").mkdir()
    (bare / ".hydra" / "config.yaml").write_text("{}")
    assert "checkpoints/last.pt" in _cli_error(capsys, ["uncertainty", str(bare)])
    assert not (bare / SCORES_FILE).exists()


def test_real_fashion_mnist_subsets_keep_every_class():
    from dcutmix.data import mnist

    missing = (
        None if mnist.locate("fashion_mnist", None) else "apt-get install dataset-fashion-mnist"
    )
    require("the Fashion-MNIST files", missing)
    dataset = {"name": "fashion_mnist", "train_subset": 700, "val_subset": 100}
    chosen = {"fraction": 0.2, "by": "random", "rule": "per_class"}
    data = build_data({**dataset, "subset": chosen}, batch_size=10, device="cpu", seed=3)
    labels = data.train.labels
    assert len(labels) == 140 and np.bincount(labels.numpy()).tolist() == [14] * 10


# --- the report's proxy section ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
        ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),
        ([3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]),
        ([10.5, 11.0, 9.8, 12.3, 10.1, 13.0, 9.9, 11.1], [30.2, 33.1, 29.0, 35.5, 31.0, 34.0, 28.8, 31.5]),
    ],
)  # fmt: skip
def test_tau_and_rho_match_scipy(x, y):
    from scipy import stats  # an independent implementation (scikit-learn depends on scipy)

    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def _run(width: int, seed: int, error: float, subset: dict | None, wall: float) -> Run:
    config = {"dataset": "digits", "model": "tiny", "width": width, "seed": seed}
    if subset:
        config["subset"] = subset
    results = {"status": "completed", "config": config, "top1_err_last": error,
               "wall_seconds": wall, "images_per_epoch": 700 if subset else 1400,
               "epochs_completed": 2}  # fmt: skip
    return Run(Path(f"/runs/{width}-{seed}-{bool(subset)}"), "completed", results)


def test_the_proxy_section_ranks_candidates_against_the_full_data():
    kind = {"fraction": 0.5, "by": "random", "rule": "top", "count": 700, "pool": 1400,
            "scores": None}  # fmt: skip
    runs = []
    for seed in (1, 2):
        for width, full_error in ((2, 40.0), (4, 30.0), (8, 20.0), (16, 10.0)):
            runs.append(_run(width, seed, full_error + seed, None, 8.0))
            # the subset swaps the two best candidates
            sub_error = {16: 21.0, 8: 12.0}.get(width, full_error + 5)
            runs.append(_run(width, seed, sub_error, kind, 2.0))
    [result] = proxy_results(runs)
    f = result.figures
    assert f["kendall_tau"] == pytest.approx(4 / 6) and f["spearman_rho"] == pytest.approx(0.8)
    assert f["best_found"] == 0 and f["regret"] == pytest.approx(10.0)
    assert f["cost_ratio_wall"] == pytest.approx(4.0) and f["cost_ratio_images"] == 2.0
    assert f["kendall_tau_low"] <= f["kendall_tau"] <= f["kendall_tau_high"]
    section = proxy_section([result])
    assert "## Proxy search" in section and "random / top / 0.5" in section
    assert proxy_results([r for r in runs if "subset" not in r.config]) == []


@pytest.mark.slow
def test_a_reduced_nas_proxy_sweep_runs_and_reports(scored_run, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    sweep = tmp_path / "sweep"
    args = ["+sweep=nas_proxy", "dataset=digits", "model.depth=8,14,20", "model.width=1",
            "trainer.seed=1", "trainer.epochs=1", "trainer.device=cpu",
            "trainer.limit_train_batches=2", f"dataset.subset.scores={scored_run}",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "dcutmix.train", "-m", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 12
    report = subprocess.run([sys.executable, "-m", "dcutmix.report", str(sweep), "--no-plots"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "## Proxy search" in report.stdout and "uncertainty / histogram" in report.stdout
    header = (sweep / "results.csv").read_text().splitlines()[0]
    assert "kendall_tau" in header and "cost_ratio_wall_with_scoring" in header
