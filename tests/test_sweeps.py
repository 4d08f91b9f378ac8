"""Multirun sweeps through the real command line: job folders, failures, concurrency, the report."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from dcutmix.config import CONF_DIR, register, validate
from dcutmix.mixing import MIXING_MODES
from dcutmix.report import collect_runs, summarise
from dcutmix.report import main as report_main
from tests.helpers.runs import cli, read_metrics, read_results

register()

# One thread per process: on two busy cores torch's default of a thread per core oversubscribes
# them and each short job takes seconds instead of a fraction of one.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
QUICK = ["logger=none", "trainer.device=cpu", "trainer.epochs=1"]
METRIC_NAMES = ("top1_err_last", "top1_err_best", "top5_err_last", "wall_seconds")


def _job_folders(sweep: Path) -> dict[str, Path]:
    # A launcher's own folders (.submitit) are hidden; every other folder is a job's.
    return {p.name: p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def test_two_modes_by_two_seeds_name_their_jobs_and_report_their_statistics(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(
        [
            "-m",
            "mixing=none,dcutmix",
            "trainer.seed=1,2",
            *QUICK,
            "trainer.limit_train_batches=5",
            f"hydra.sweep.dir={sweep}",
        ],
        env=ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr
    assert "sweep adhoc: 4 jobs: 4 completed" in result.stderr

    jobs = _job_folders(sweep)
    assert set(jobs) == {
        f"{mode}-devicecpu-epochs1-limit_train_batches5-s{seed}"
        for mode in ("none", "dcutmix-k5-a0.2")
        for seed in (1, 2)
    }
    own = {name: read_results(folder) for name, folder in jobs.items()}
    for name, results in own.items():
        config = results["config"]
        assert results["status"] == "completed"
        assert name.startswith(f"{config['mixing']['mode']}-") and name.endswith(
            f"-s{config['seed']}"
        )
        assert len(read_metrics(jobs[name])) == 1
    started = json.loads((sweep / "sweep.json").read_text())
    assert started["name"] == "adhoc" and "mixing=none,dcutmix" in started["command"]

    assert report_main([str(sweep)]) == 0
    rows, problems = summarise(collect_runs([sweep]))
    assert problems == []
    assert [row.settings["mode"] for row in rows] == ["none", "dcutmix"]
    with (sweep / "results.csv").open() as file:
        csv_rows = {line["mode"]: line for line in csv.DictReader(file)}
    for row in rows:
        mode = row.settings["mode"]
        members = [r for r in own.values() if r["config"]["mixing"]["mode"] == mode]
        assert row.n == 2 and csv_rows[mode]["n"] == "2"
        for metric in METRIC_NAMES:
            values = [r[metric] for r in members]
            mean, std = sum(values) / 2, _sample_std(values)
            assert row.stats[metric].mean == pytest.approx(mean)
            assert row.stats[metric].std == pytest.approx(std)
            assert float(csv_rows[mode][f"{metric}_mean"]) == pytest.approx(mean, rel=1e-5)
            assert float(csv_rows[mode][f"{metric}_std"]) == pytest.approx(std, rel=1e-5, abs=1e-9)
    report = (sweep / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table] == ["mode", "none", "dcutmix"]


def test_a_job_failing_at_run_time_does_not_stop_the_others(tmp_path):
    # cifar10's root defaults to ./data, which tmp_path lacks: the pre-launch check passes (it
    # reads no data) and that one job fails when it loads its data; the jobs around it must not.
    sweep = tmp_path / "sweep"
    result = cli(
        [
            "-m",
            "dataset=digits,cifar10,fake",
            *QUICK,
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=ONE_THREAD,
    )
    assert result.returncode != 0

    def name(dataset: str) -> str:
        return f"dcutmix-k5-a0.2-dataset{dataset}-devicecpu-epochs1-limit_train_batches2-limit_val_batches1-s0"

    statuses = {job: read_results(folder)["status"] for job, folder in _job_folders(sweep).items()}
    assert statuses == {
        name("digits"): "completed",
        name("cifar10"): "failed",
        name("fake"): "completed",
    }
    assert "sweep adhoc: 3 jobs: 2 completed, 1 failed" in result.stderr
    assert f"  failed: {name('cifar10')} (dataset.root: " in result.stderr

    rows, problems = summarise(collect_runs([sweep]))
    assert sorted((row.settings["dataset"], row.n) for row in rows) == [("digits", 1), ("fake", 1)]
    assert [(run.name, run.status) for run in problems] == [(name("cifar10"), "failed")]
    assert problems[0].detail.startswith(
        f"dataset.root: {tmp_path / 'data'} does not hold cifar-10-batches-py/"
    )
    assert report_main([str(sweep), "--no-plots"]) == 0
    report = (sweep / "report.md").read_text()
    assert "1 run excluded: 1 failed" in report
    assert f"- **failed** `{name('cifar10')}`, 0/1 epochs: dataset.root: " in report


@pytest.mark.slow
def test_two_sweeps_started_at_once_never_share_a_folder(tmp_path):
    command = [
        sys.executable,
        "-m",
        "dcutmix.train",
        "-m",
        *QUICK,
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
    ]
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr

    sweeps = sorted((tmp_path / "multirun" / "adhoc").iterdir())
    assert len(sweeps) == 2
    # The time stamp may be the same; the per-process token after it keeps the names apart.
    stamps = [
        re.fullmatch(r"(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)-([0-9a-f]{6})", s.name) for s in sweeps
    ]
    assert all(stamps), [s.name for s in sweeps]
    assert stamps[0].group(2) != stamps[1].group(2)
    pids = set()
    for sweep in sweeps:
        assert json.loads((sweep / "sweep.json").read_text())["name"] == "adhoc"
        (job,) = _job_folders(sweep).values()
        results = read_results(job)
        assert results["status"] == "completed"
        pids.add(results["pid"])
    assert pids == {proc.pid for proc in procs}


def test_the_fmnist_sweeps_compose_on_their_budgets():
    """demo_fmnist: the seven demo modes and random_erasing; compare_fmnist: four presets whose
    300-epoch recipe the sweep shortens (the sweep's settings win over the preset's)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            primary = compose("train", overrides=["+sweep=demo_fmnist"], return_hydra_config=True)
            modes = str(primary.hydra.sweeper.params.mixing).split(",")
            assert modes == [*MIXING_MODES[: MIXING_MODES.index("dcutmix") + 1], "random_erasing"]
            for mode in modes:
                job = compose("train", overrides=["+sweep=demo_fmnist", f"mixing={mode}"])
                assert (job.dataset.name, job.model.name, job.mixing.mode) == (
                    "fashion_mnist",
                    "tiny",
                    mode,
                )
                assert (job.dataset.train_subset, job.dataset.val_subset) == (4000, 2000)
                assert job.dataset.download and job.logger.name == "none"
                validate(job)
            primary = compose(
                "train", overrides=["+sweep=compare_fmnist"], return_hydra_config=True
            )
            params = primary.hydra.sweeper.params
            presets = str(params.experiment).split(",")
            assert [p.rsplit("_", 1)[1] for p in presets] == ["none", "mixup", "cutmix", "dcutmix"]
            assert str(params["trainer.seed"]) == "1,2,3"
            for preset in presets:
                job = compose("train", overrides=["+sweep=compare_fmnist", f"experiment={preset}"])
                assert (job.model.name, job.trainer.epochs, job.trainer.batch_size) == (
                    "resnet20",
                    4,
                    128,
                )
                assert (job.dataset.train_subset, job.dataset.val_subset) == (3000, 5000)
                assert job.experiment_name == preset
    finally:
        GlobalHydra.instance().clear()


def test_the_demo_sweep_composes_all_seven_modes_on_digits():
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            primary = compose("train", overrides=["+sweep=demo"], return_hydra_config=True)
            modes = str(primary.hydra.sweeper.params.mixing).split(",")
            # the paper's seven modes; the field's baselines (cutout, fmix, resizemix) and
            # manifold_mixup follow them (the zoo sweep has every mode)
            paper_modes = MIXING_MODES[: MIXING_MODES.index("dcutmix") + 1]
            assert modes == list(paper_modes)
            names = set()
            for mode in modes:
                # What the basic sweeper composes for each job of the grid.
                job = compose(
                    "train", overrides=["+sweep=demo", f"mixing={mode}"], return_hydra_config=True
                )
                HydraConfig.instance().set_config(job)
                assert (job.mixing.mode, job.dataset.name, job.model.name) == (
                    mode,
                    "digits",
                    "tiny",
                )
                assert (job.logger.name, job.sweep_name) == ("none", "demo")
                validate(job)
                names.add(job.run_name)
            assert len(names) == len(paper_modes), names
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
