"""``dcutmix-train`` sweeps on a real Slurm cluster (``make slurm-up``): results, requeue, DDP.

Each test runs the console script from a throwaway copy of the code, so it may edit that copy
after submission and check that the jobs kept running the frozen code and configs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_slurm import (
    cancel_jobs,
    copy_code_tree,
    job_state,
    release_requeue_hold,
    require_slurm,
    slurm_launcher_overrides,
    submitit_job_ids,
    wait_until,
)

from tests.helpers.provided import require
from tests.helpers.runs import read_metrics

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["dataset=digits", "model=tiny", "logger=none", "trainer.device=cpu"]
TRAIN_SCRIPT = Path(sys.executable).with_name("dcutmix-train")


def start_train_sweep(tmp_path: Path, overrides: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    """Start ``dcutmix-train -m`` from a copy of the code; returns process, copy and sweep dir."""
    require(
        "the dcutmix-train command",
        None if TRAIN_SCRIPT.exists() else f"{TRAIN_SCRIPT} is not installed; run `make install`",
    )
    live = copy_code_tree(tmp_path / "live")
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [str(TRAIN_SCRIPT), "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"],
        cwd=live,
        env={**os.environ, "PYTHONPATH": str(live), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, live, sweep_dir


def finish(process: subprocess.Popen, sweep_dir: Path, timeout: float) -> str:
    """Wait for the sweep command; on a timeout, kill it and cancel its jobs before failing."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        cancel_jobs(submitit_job_ids(sweep_dir))
        output, _ = process.communicate()
        pytest.fail(f"the sweep did not finish in {timeout:.0f} s:\n{output}")
    return output


def run_folders(sweep_dir: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep_dir.glob("*/results.json")}


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def job_log(sweep_dir: Path, job_id: str, task: int = 0) -> str:
    return (sweep_dir / ".submitit" / job_id / f"{job_id}_{task}_log.err").read_text()


def test_two_job_sweep_resumes_after_a_requeue_and_ignores_later_edits(tmp_path):
    partition = require_slurm()
    epochs = 12
    process, live, sweep_dir = start_train_sweep(
        tmp_path,
        [
            "mixing=dcutmix,mixup",
            f"trainer.epochs={epochs}",
            "sweep_name=slurm_test",
            *slurm_launcher_overrides(partition),
            "hydra.launcher.mem_gb=2",
        ],
    )
    try:
        job_ids = wait_until(
            lambda: len(submitit_job_ids(sweep_dir)) == 2 and submitit_job_ids(sweep_dir),
            120,
            "the sweep's two jobs to be submitted",
        )
        # Edits after submission: a config value the jobs do not override, and code that breaks
        # on import. Jobs that ran the working tree would show the value or fail.
        train_yaml = live / "conf" / "train.yaml"
        train_yaml.write_text(
            train_yaml.read_text().replace("label_smoothing: 0.0", "label_smoothing: 0.3")
        )
        with open(live / "dcutmix" / "train.py", "a") as f:
            f.write('\nraise RuntimeError("the working tree was imported")\n')

        # Hydra numbers the jobs in the order of the sweep's values: job 0 trains dcutmix.
        requeued = job_ids[0]

        def dcutmix_epochs() -> int:
            return sum(
                len(epochs_logged(p.parent)) for p in sweep_dir.glob("dcutmix-*/metrics.jsonl")
            )

        wait_until(lambda: dcutmix_epochs() >= 2, 180, "two epochs of the dcutmix job")
        subprocess.run(["scancel", "--signal=USR2", requeued], check=True)
        wait_until(lambda: job_state(requeued) == "PENDING", 60, f"job {requeued} to be requeued")
        release_requeue_hold(requeued)
        output = finish(process, sweep_dir, 300)
    finally:
        if process.poll() is None:
            process.kill()
            cancel_jobs(submitit_job_ids(sweep_dir))

    assert process.returncode == 0, output
    assert "2 jobs: 2 completed" in output, output
    runs = run_folders(sweep_dir)
    assert sorted(name.split("-")[0] for name in runs) == ["dcutmix", "mixup"]
    for name, run in runs.items():
        results = json.loads((run / "results.json").read_text())
        assert (results["status"], results["epochs_completed"]) == ("completed", epochs), name
        assert epochs_logged(run) == list(range(1, epochs + 1)), name
        assert "label_smoothing: 0.0" in (run / ".hydra" / "config.yaml").read_text(), name
    assert "resuming from" in job_log(sweep_dir, requeued)

    # The requeued job ends with the metrics of the same run left alone. Slurm jobs run torch on
    # one thread (cpus_per_task=1), so the reference does too: thread counts change float sums.
    reference = tmp_path / "reference"
    uninterrupted = subprocess.run(
        [
            str(TRAIN_SCRIPT),
            *TINY,
            "mixing=dcutmix",
            f"trainer.epochs={epochs}",
            f"hydra.run.dir={reference}",
        ],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    (requeued_run,) = (run for name, run in runs.items() if name.startswith("dcutmix"))
    assert read_metrics(requeued_run) == read_metrics(reference)


def test_ddp_preset_trains_one_run_with_one_process_per_task(tmp_path):
    partition = require_slurm()
    process, _, sweep_dir = start_train_sweep(
        tmp_path,
        [
            "mixing=dcutmix",
            "trainer.epochs=2",
            *slurm_launcher_overrides(partition, launcher="slurm_ddp"),
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.mem_gb=2",
        ],
    )
    output = finish(process, sweep_dir, 300)
    assert process.returncode == 0, output
    (run,) = run_folders(sweep_dir).values()
    results = json.loads((run / "results.json").read_text())
    assert (results["status"], results["epochs_completed"]) == ("completed", 2)
    assert epochs_logged(run) == [1, 2]
    (job_id,) = submitit_job_ids(sweep_dir)
    # Both processes ran the whole run together; only rank 0 wrote the run folder.
    for task in (0, 1):
        assert "done: top-1 error" in job_log(sweep_dir, job_id, task)
