"""Searching sweeps with the real Optuna sweeper, and ``dcutmix-sweep resume`` after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dcutmix.config import REPO_ROOT
from tests.helpers.runs import cli, read_results

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
QUICK = ["logger=none", "trainer.device=cpu"]


def _job_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_a_three_trial_search_minimises_the_runs_last_top1_error(tmp_path):
    sweep = tmp_path / "search"
    result = cli(
        [
            "-m",
            "+sweep=alpha_search",
            "hydra.sweeper.n_trials=3",
            *QUICK,
            "trainer.epochs=2",
            "trainer.limit_train_batches=6",
            f"hydra.sweep.dir={sweep}",
        ],
        env=ONE_THREAD,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    runs = [read_results(folder) for folder in _job_folders(sweep)]
    assert len(runs) == 3 and all(run["status"] == "completed" for run in runs)
    for run in runs:
        mixing = run["config"]["mixing"]
        assert mixing["mode"] == "dcutmix"
        assert 2 <= mixing["k"] <= 8 and 0.05 <= mixing["alpha"] <= 5.0
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(run["top1_err_last"] for run in runs)
    assert "sweep alpha_search: 3 jobs: 3 completed" in result.stderr


def test_diverged_trials_score_worst_and_the_search_still_ends(tmp_path):
    sweep = tmp_path / "search"
    result = cli(
        [
            "-m",
            "+sweep=alpha_search",
            "hydra.sweeper.n_trials=2",
            *QUICK,
            "trainer.epochs=1",
            "trainer.limit_train_batches=6",
            "optimizer.lr=1e8",
            f"hydra.sweep.dir={sweep}",
        ],
        env=ONE_THREAD,
        timeout=600,
    )
    # The search ran both trials and wrote its result; the runs' own exit code (3: diverged) stays.
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert [read_results(f)["status"] for f in _job_folders(sweep)] == ["diverged", "diverged"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == math.inf
    assert "2 diverged" in result.stderr


def _epochs(run: Path) -> int:
    return len((run / "metrics.jsonl").read_text().splitlines())


def test_resume_skips_completed_jobs_and_continues_an_interrupted_one(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "mixing=none,cutmix",
        *QUICK,
        "trainer.epochs=6",
        "trainer.limit_train_batches=8",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "dcutmix.train", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = sweep / "none-devicecpu-epochs6-limit_train_batches8-s0"
    second = sweep / "cutmix-a1-devicecpu-epochs6-limit_train_batches8-s0"
    deadline = time.monotonic() + 300
    while not ((second / "metrics.jsonl").exists() and _epochs(second) >= 1):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert read_results(first)["status"] == "completed"
    assert read_results(second)["status"] == "interrupted"
    first_metrics = (first / "metrics.jsonl").read_bytes()
    first_checkpoint = (first / "checkpoints" / "last.pt").stat().st_mtime_ns

    resumed = subprocess.run(
        [sys.executable, "-m", "dcutmix.sweep.cli", "resume", str(sweep)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {sweep} with the installed code" in resumed.stdout
    assert "run already completed" in resumed.stderr
    assert "resuming from" in resumed.stderr
    assert (first / "metrics.jsonl").read_bytes() == first_metrics
    assert (first / "checkpoints" / "last.pt").stat().st_mtime_ns == first_checkpoint
    assert read_results(second)["status"] == "completed"
    assert [json.loads(line)["epoch"] for line in (second / "metrics.jsonl").open()] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
