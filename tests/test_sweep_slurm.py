"""``dcutmix-sweep status`` and ``resume`` on a real Slurm sweep (``make slurm-up``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest_slurm import (
    cancel_jobs,
    copy_code_tree,
    require_slurm,
    slurm_launcher_overrides,
    submitit_job_ids,
)

from tests.helpers.runs import read_results

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["logger=none", "trainer.device=cpu", "trainer.epochs=3", "trainer.limit_train_batches=10"]


def _sweep_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dcutmix.sweep.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_status_follows_a_live_slurm_sweep_and_resume_skips_its_completed_jobs(tmp_path):
    partition = require_slurm()
    live = copy_code_tree(tmp_path / "live")
    sweep = tmp_path / "sweep"
    # Two CPUs a job on a two-CPU node: one job runs while the other waits for Resources.
    launcher = [
        o if not o.startswith("hydra.launcher.cpus_per_task") else "hydra.launcher.cpus_per_task=2"
        for o in slurm_launcher_overrides(partition)
    ]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dcutmix.train",
            "-m",
            "mixing=none,cutmix",
            *TINY,
            *launcher,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=live,
        env={**os.environ, "PYTHONPATH": str(live), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 400
        while process.poll() is None and time.monotonic() < deadline:
            if (sweep / "sweep.json").exists():
                status = _sweep_cli("status", str(sweep), cwd=tmp_path)
                assert status.returncode == 0, status.stderr
                seen.extend(status.stdout.splitlines())
            time.sleep(1)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        cancel_jobs(submitit_job_ids(sweep))
    assert process.returncode == 0, output
    pending = [line for line in seen if line.startswith("pending")]
    assert pending and "Slurm reason: " in pending[0], seen
    assert any(line.startswith("running") for line in seen), seen

    finished = _sweep_cli("status", str(sweep), cwd=tmp_path)
    assert finished.returncode == 0
    assert [line.split()[:2] for line in finished.stdout.splitlines()[1:]] == [["completed", "2"]]

    runs = sorted(p.parent for p in sweep.glob("*/results.json"))
    before = {run: (run / "metrics.jsonl").read_bytes() for run in runs}
    # Edits to the checkout after the sweep cannot reach the resumed jobs: they run .code/.
    with open(live / "dcutmix" / "train.py", "a") as f:
        f.write('\nraise RuntimeError("the working tree was imported")\n')
    resumed = _sweep_cli("resume", str(sweep), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"with the frozen code in {sweep / '.code'}" in resumed.stdout
    assert not (sweep / ".code-2").exists()
    logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert logs.count("run already completed") == 2
    for run in runs:
        assert (run / "metrics.jsonl").read_bytes() == before[run]
        assert read_results(run)["status"] == "completed"


def test_a_search_runs_its_trials_as_slurm_jobs(tmp_path):
    partition = require_slurm()
    sweep = tmp_path / "search"
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcutmix.train",
            "-m",
            "+sweep=alpha_search",
            "hydra.sweeper.n_trials=2",
            *TINY,
            *slurm_launcher_overrides(partition),
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    cancel_jobs(submitit_job_ids(sweep))
    assert search.returncode == 0, search.stderr
    runs = [read_results(p.parent) for p in sweep.glob("*/results.json")]
    assert len(runs) == 2 and {run["status"] for run in runs} == {"completed"}
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(run["top1_err_last"] for run in runs)
    assert len(submitit_job_ids(sweep)) == 2


def test_a_pruned_search_on_slurm_prunes_its_trial_at_the_known_epoch(tmp_path):
    from tests.test_pruning import PRUNED_GRID, check_pruned_sweep

    partition = require_slurm()
    sweep = tmp_path / "search"
    search = subprocess.run(
        [
            sys.executable, "-m", "dcutmix.train", "-m", *PRUNED_GRID,
            *slurm_launcher_overrides(partition), f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    cancel_jobs(submitit_job_ids(sweep))
    assert search.returncode == 0, search.stderr
    # Each trial ran as its own Slurm job and reached the journal in the sweep folder.
    assert len(submitit_job_ids(sweep)) == 2
    check_pruned_sweep(sweep)
    status = _sweep_cli("status", str(sweep), cwd=tmp_path)
    assert "pruned          1" in status.stdout and "of 2 planned" in status.stdout
