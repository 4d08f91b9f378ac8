"""Helpers for tests that submit to a real Slurm cluster (``make slurm-up``).

Tests that need the cluster call ``require_slurm()``, which skips them with the reason when Slurm
is not installed or not answering, and fails them with it under ``CI=true``. The other helpers
submit, watch and release jobs, and copy the code into a throwaway tree for frozen-code tests. Test modules import this file by name (pytest
puts tests/ on sys.path), so nothing needs wiring into conftest.py.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import time
from pathlib import Path

from dcutmix.sweep.launcher import SOURCE_ROOT
from tests.helpers.provided import require
from tests.helpers.waiting import wait_until as wait_until  # the Slurm tests import it here

START_HINT = "start a local cluster with `make slurm-up` (as root)"
RUNNING_NODE_STATES = ("idle", "mix", "alloc", "comp")
PROBE_TIMEOUT_S = 20
PROBE_TRIES = 3
PROBE_PAUSE_S = 5


def _probe_once() -> str | None:
    """Why the cluster is not usable by this one ``sinfo``, or None when it has a node up."""
    try:
        probe = subprocess.run(
            ["sinfo", "--noheader", "--format=%P %t"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"sinfo got no answer in {PROBE_TIMEOUT_S} s: the Slurm controller is not responding"
    said = (probe.stderr or probe.stdout).strip().splitlines()
    if probe.returncode != 0:
        why = said[0] if said else f"exit status {probe.returncode}"
        return f"the Slurm cluster is down (sinfo: {why})"
    states = [
        line.split()[-1].rstrip("*~#!%$@^-") for line in probe.stdout.splitlines() if line.strip()
    ]
    if not any(state in RUNNING_NODE_STATES for state in states):
        return f"no Slurm node is up (node states: {', '.join(states) or 'none'})"
    return None


@functools.cache
def slurm_unavailable() -> str | None:
    """Why Slurm tests cannot run here, or None when a cluster answers with a usable node.

    One slow or failed answer decides nothing: the probe is tried ``PROBE_TRIES`` times, a few
    seconds apart, and only the last answer's reason is kept (once, for the whole session).
    """
    if shutil.which("sinfo") is None:
        return f"Slurm is not installed (no sinfo on PATH); {START_HINT}"
    reasons = []
    for attempt in range(PROBE_TRIES):
        if attempt:
            time.sleep(PROBE_PAUSE_S)
        reason = _probe_once()
        if reason is None:
            return None
        reasons.append(reason)
    return f"{reasons[-1]} ({PROBE_TRIES} tries, {PROBE_PAUSE_S} s apart); {START_HINT}"


def default_partition() -> str:
    """The cluster's default partition (the one sinfo marks with ``*``), else its first one."""
    names = subprocess.run(
        ["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, check=True
    ).stdout.split()
    marked = [name[:-1] for name in names if name.endswith("*")]
    return (marked or names)[0]


def require_slurm() -> str:
    """The partition to submit test jobs to.

    Without a usable cluster the calling test is skipped with the reason, or fails under
    ``CI=true`` (CI starts one with ``make slurm-up``): see tests/helpers/provided.py.
    """
    require("a Slurm cluster", slurm_unavailable())
    return default_partition()


def slurm_launcher_overrides(partition: str, launcher: str = "slurm") -> list[str]:
    """Hydra overrides that fit a launcher preset to a small CPU-only test cluster."""
    return [
        f"hydra/launcher={launcher}",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]


def job_state(job_id: str) -> str | None:
    """The job's state as squeue shows it (``RUNNING``, ``PENDING``...), or None once it is gone."""
    listed = subprocess.run(
        [
            "squeue",
            "--noheader",
            "--array",
            "--states=all",
            "--format=%i %T",
            f"--jobs={job_id.split('_')[0]}",
        ],
        capture_output=True,
        text=True,
    ).stdout
    for line in listed.splitlines():
        listed_id, state = line.split()
        if listed_id == job_id:
            return state
    return None


# slurmd refuses to start a job whose credential was created no later than the second in which
# the job's earlier run was revoked ("Job credential revoked"), and the job then FAILS; so a
# requeued job may be started early only once that second has passed.
REVOKED_CREDENTIAL_WAIT_S = 2.0


def release_requeue_hold(job_id: str) -> None:
    """Start a requeued job soon: Slurm holds a requeued job about two minutes (BeginTime).

    Call it once the job is PENDING again. It waits until a new credential cannot fall in the
    second the old one was revoked, then moves the job's start time to now.
    """
    time.sleep(REVOKED_CREDENTIAL_WAIT_S)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def submitit_job_ids(sweep_dir: Path) -> list[str]:
    """The Slurm ids of a sweep's jobs, from its submitit folder, in order ([] before submission).

    One job is submitted alone (id ``N``); several as an array (ids ``N_0``, ``N_1``... next to a
    folder ``N`` holding the array's submission script, which is left out).
    """
    folder = sweep_dir / ".submitit"
    if not folder.is_dir():
        return []
    names = {p.name for p in folder.iterdir() if p.is_dir()}
    names = {n for n in names if re.fullmatch(r"\d+(_\d+)?", n)}
    arrays = {n.split("_")[0] for n in names if "_" in n}
    return sorted(names - arrays, key=lambda n: [int(x) for x in n.split("_")])


def cancel_jobs(job_ids: list[str]) -> None:
    """Cancel jobs a failed test left behind, so they do not hold the small test cluster."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False)


def copy_code_tree(destination: Path) -> Path:
    """Copy the project's code and configs to ``destination``: a working tree a test may edit."""
    for name in ("dcutmix", "hydra_plugins", "conf", "sweeps"):
        # symlinks=True keeps conf/sweep -> ../sweeps a link, as in the real checkout.
        shutil.copytree(
            SOURCE_ROOT / name,
            destination / name,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    # A developer's own cluster settings (partition, module loads) do not fit the test cluster.
    shutil.rmtree(destination / "conf" / "local", ignore_errors=True)
    return destination
