"""Slurm jobs that can never start (dcutmix.sweep.slurm_pending): named, cancelled, or waited on.

The first tests read text in the formats squeue and scontrol print; the rest submit the default
``slurm`` preset (8 CPUs, 32 GB, one GPU) to the local test cluster, which cannot run it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest_slurm import (
    cancel_jobs,
    copy_code_tree,
    job_state,
    require_slurm,
    submitit_job_ids,
    wait_until,
)

from dcutmix.sweep import slurm_pending
from dcutmix.sweep.slurm_pending import (
    PendingCheck,
    UnsatisfiableJobs,
    describe_partition,
    is_unsatisfiable,
    parse_scontrol,
    parse_squeue,
)

PARTITION = (
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxTime=1-00:00:00 MaxCPUsPerNode=UNLIMITED "
    "Nodes=g[1-2] State=UP TotalCPUs=64 MaxMemPerNode=256000 TRES=cpu=64,mem=500G,gres/gpu=8"
)
NODES = (
    "NodeName=g1 Arch=x86_64 CPUTot=32 Gres=gpu:a100:4(S:0-1) RealMemory=256000 State=MIXED\n"
    "NodeName=g2 Arch=x86_64 CPUTot=32 Gres=gpu:a100:4(S:0-1) RealMemory=256000 State=DOWN+DRAIN\n"
)


def test_squeue_and_scontrol_text_is_read() -> None:
    (job,) = parse_squeue("41_3|PartitionConfig|debug|8|32G|gres:gpu:2|12:00:00|1\nnoise\n")
    assert (job.job_id, job.reason, job.partition) == ("41_3", "PartitionConfig", "debug")
    assert job.request() == "asks 8 cpus, 32G mem, 2 gpus, time 12:00:00 on 1 node"
    (partition,) = parse_scontrol(PARTITION)
    nodes = parse_scontrol(NODES)
    assert describe_partition(partition, nodes) == (
        "partition gpu offers node g1: 32 cpus, 256000M mem, 4 gpus, mixed; node g2: 32 cpus, "
        "256000M mem, 4 gpus, down+drain (time limit 1-00:00:00, at most 256000 mem per node)"
    )


@pytest.mark.parametrize(
    ("reason", "usable_node", "hopeless"),
    [
        ("PartitionConfig", True, True),
        ("PartitionTimeLimit", True, True),
        ("BadConstraints", True, True),
        ("InvalidAccount", True, True),
        ("InvalidQOS", True, True),
        ("QOSMaxGRESPerJob", True, True),
        ("AssocMaxCpuPerJobLimit", True, True),
        ("ReqNodeNotAvail, UnavailableNodes:g2", False, True),
        ("ReqNodeNotAvail, UnavailableNodes:g2", True, False),
        ("Resources", True, False),
        ("Priority", True, False),
        ("BeginTime", True, False),
        ("QOSMaxJobsPerUserLimit", True, False),
        ("AssocGrpCpuLimit", True, False),
        ("None", True, False),
    ],
)
def test_only_reasons_that_waiting_cannot_clear_are_hopeless(reason, usable_node, hopeless):
    assert is_unsatisfiable(reason, lambda: usable_node) is hopeless


def test_waiting_logs_the_jobs_once_and_then_a_reminder(monkeypatch, caplog):
    cancelled: list[list[str]] = []
    lines = {"7_0": "job 7_0 cannot start (PartitionConfig): ...", "7_1": "job 7_1 ..."}
    refusing = PendingCheck(wait=False, cancel=cancelled.append)
    with pytest.raises(UnsatisfiableJobs) as caught:
        refusing.act(lines)
    assert cancelled == [["7_0", "7_1"]] and caught.value.lines == list(lines.values())

    waiting = PendingCheck(wait=True, cancel=cancelled.append)
    with caplog.at_level(logging.WARNING, logger="dcutmix.sweep.slurm_pending"):
        waiting.act(lines)
        first = len(caplog.records)
        waiting.act(lines)  # seen already, and the reminder is not due
        assert len(caplog.records) == first == 3
        assert "scancel 7_0 7_1" in caplog.records[-1].getMessage()
        monkeypatch.setattr(slurm_pending, "REMIND_EVERY_S", 0.0)
        waiting.act(lines)
        assert len(caplog.records) == 2 * first
    assert cancelled == [["7_0", "7_1"]]


TINY = ["dataset=digits", "model=tiny", "logger=none", "trainer.device=cpu"]
TRAIN_SCRIPT = Path(sys.executable).with_name("dcutmix-train")


def start_default_preset_sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """A two-job sweep with the ``slurm`` preset's resources, from a copy of the code."""
    live = copy_code_tree(tmp_path / "live")
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [str(TRAIN_SCRIPT), "-m", *TINY, "mixing=cutmix,dcutmix", "hydra/launcher=slurm",
         *overrides, f"hydra.sweep.dir={sweep_dir}"],
        cwd=live,
        env={**os.environ, "PYTHONPATH": str(live), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    return process, sweep_dir


@pytest.mark.slurm
@pytest.mark.slow
def test_jobs_the_partition_cannot_run_are_named_and_cancelled_without_waiting_on_them(tmp_path):
    partition = require_slurm()
    # Without a GPU request sbatch accepts the jobs, and they wait with reason PartitionConfig.
    process, sweep_dir = start_default_preset_sweep(
        tmp_path, f"hydra.launcher.partition={partition}", "hydra.launcher.gpus_per_node=null"
    )
    try:
        job_ids = wait_until(
            lambda: len(submitit_job_ids(sweep_dir)) == 2 and submitit_job_ids(sweep_dir),
            120,
            "the sweep's two jobs to be submitted",
        )
        submitted = time.monotonic()
        # The event: the sweep ends by itself once Slurm gives the jobs their reason. The limit
        # only guards against a sweep that waits on them (it checks every CHECK_EVERY_S s).
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("timed out after 300 s waiting for the sweep to give up on its jobs")
        waited = time.monotonic() - submitted
    finally:
        if process.poll() is None:
            process.kill()
        cancel_jobs(submitit_job_ids(sweep_dir))
    assert process.returncode == 2, output
    print(f"unsatisfiable jobs reported {waited:.1f} s after submission")
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "Traceback" not in output, output
    for job_id, line in zip(job_ids, errors, strict=False):
        assert line.startswith(f"error: job {job_id} cannot start (PartitionConfig): asks 8 cpus, ")
        assert "32G mem, 0 gpus, time 12:00:00" in line
        assert f"partition {partition} offers node " in line
    assert errors[2].startswith("error: cancelled 2 jobs that could never start")
    assert [job_state(job_id) in (None, "CANCELLED") for job_id in job_ids] == [True, True]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_request_sbatch_refuses_is_one_line(tmp_path):
    partition = require_slurm()
    process, sweep_dir = start_default_preset_sweep(
        tmp_path, f"hydra.launcher.partition={partition}"
    )
    try:
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
        cancel_jobs(submitit_job_ids(sweep_dir))
    assert process.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert errors[0].startswith("error: hydra.launcher: sbatch refused the sweep's jobs (")
    assert "asks 8 cpus, 32 GB mem, 1 gpus per node, 720 min" in errors[0]
    assert f"partition {partition} offers node " in errors[0]


@pytest.mark.slurm
@pytest.mark.slow
def test_wait_on_unsatisfiable_keeps_waiting_and_says_so(tmp_path):
    partition = require_slurm()
    process, sweep_dir = start_default_preset_sweep(
        tmp_path,
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.wait_on_unsatisfiable=true",
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not any("scancel" in line for line in seen):
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
        job_ids = submitit_job_ids(sweep_dir)
        assert process.poll() is None, "".join(seen)
        assert [job_state(job_id) for job_id in job_ids] == ["PENDING", "PENDING"]
    finally:
        process.kill()
        process.wait()
        cancel_jobs(submitit_job_ids(sweep_dir))
    text = "".join(seen)
    assert "still waiting: job " in text and "(PartitionConfig)" in text
    assert "wait_on_unsatisfiable=true: waiting on 2 jobs that cannot start" in text
