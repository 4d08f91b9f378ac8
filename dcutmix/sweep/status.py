"""``dcutmix-sweep status``: how each job of a sweep stands, from its run folders and Slurm's queue."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from dcutmix.errors import ConfigError
from dcutmix.report import Run, collect_runs
from dcutmix.report.stats import PROBLEM_ORDER
from dcutmix.store.files import read_json
from dcutmix.store.results import Status

# report.stats.PROBLEM_ORDER lists running too; each state gets one line. "pending" is Slurm's
# queue, not a run status.
# "not submitted" counts the jobs sweep.json plans that have no run folder (yet).
_RUN_STATES = (Status.COMPLETED, Status.PRUNED, Status.RUNNING, "pending", *PROBLEM_ORDER)
STATE_ORDER = (*dict.fromkeys(_RUN_STATES), "not submitted")
# Pending reasons that waiting cannot clear: the request itself does not fit the cluster.
STUCK_REASONS = frozenset(
    {
        "PartitionConfig",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "QOSMaxCpuPerJobLimit",
        "QOSMaxGRESPerJob",
        "QOSMaxMemoryPerJob",
        "QOSMaxWallDurationPerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
        "JobHeldUser",
        "JobHeldAdmin",
    }
)
# Run states that end a job without a result and will not change by themselves.
NEEDS_PERSON = frozenset(
    {
        Status.FAILED,
        Status.DIVERGED,
        Status.UNFINISHED,
        Status.INTERRUPTED,
        Status.UNREADABLE,
        Status.UNKNOWN,
    }
)


def read_sweep_record(folder: Path) -> dict:
    """The sweep.json ``dcutmix-train -m`` wrote into ``folder``; ConfigError when it is no sweep."""
    if not folder.is_dir():
        raise ConfigError(
            f"FOLDER: {folder} is not a folder; pass a sweep folder of dcutmix-train -m"
        )
    record = read_json(folder / "sweep.json")
    if not isinstance(record, dict) or not isinstance(record.get("command"), list):
        raise ConfigError(
            f"FOLDER: {folder} is no sweep (no readable sweep.json); pass the folder "
            "dcutmix-train -m wrote, e.g. multirun/<sweep>/<date>_<time>-<tag>"
        )
    return record


def slurm_jobs(folder: Path) -> dict[str, tuple[str, str]]:
    """State and reason of this sweep's Slurm jobs still in the queue, by job id."""
    submitted = folder / ".submitit"
    # Job folders are named by Slurm id (N, or N_i for array tasks); submitit keeps other files there.
    names = [p.name for p in submitted.iterdir()] if submitted.is_dir() else []
    ids = sorted({n.split("_")[0] for n in names if re.fullmatch(r"\d+(_\d+)?", n)})
    if not ids:
        return {}
    try:
        listing = subprocess.run(
            ["squeue", "--noheader", "--array", f"--jobs={','.join(ids)}", "--format=%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    jobs = {}
    for line in listing.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            jobs[parts[0]] = (parts[1], parts[2])
    return jobs


def _pending_line(pending: dict[str, str]) -> tuple[str, list[str]]:
    reasons: dict[str, int] = {}
    for reason in pending.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    text = ", ".join(f"{reason} ({count})" for reason, count in sorted(reasons.items()))
    stuck = [
        f"Slurm job {job}: {reason} will not clear by waiting; cancel it and fix the request"
        for job, reason in sorted(pending.items())
        if reason in STUCK_REASONS
    ]
    return f"Slurm reason: {text}", stuck


def _run_line(run: Run) -> str:
    return f"{run.name}" + (f" ({run.detail})" if run.detail else "")


def report_status(folder: Path, out: Callable[[str], None] = print) -> int:
    """Print one line per state and the jobs that need a person; returns how many need one."""
    record = read_sweep_record(folder)
    runs = collect_runs([folder])
    queue = slurm_jobs(folder)
    pending = {job: reason for job, (state, reason) in queue.items() if state == "PENDING"}
    queued = any(state in ("PENDING", "RUNNING", "REQUEUED") for state, _ in queue.values())
    slurm_running = any(state == "RUNNING" for state, _ in queue.values())
    by_state: dict[str, list[Run]] = {}
    for run in runs:
        # A folder without results while Slurm runs the sweep's jobs belongs to a job starting up.
        state = Status.RUNNING if run.status == Status.NOT_STARTED and slurm_running else run.status
        by_state.setdefault(state, []).append(run)
    planned = record.get("planned_jobs")
    of_planned = f" of {planned} planned" if isinstance(planned, int) else ""
    out(
        f"sweep {record.get('name', folder.name)} in {folder}: {len(runs)} run folders"
        f"{of_planned}, {len(pending)} jobs pending in Slurm"
    )
    needing = 0
    for state in [*STATE_ORDER, *sorted(set(by_state) - set(STATE_ORDER))]:
        if state == "not submitted":
            missing = planned - len(runs) - len(pending) if isinstance(planned, int) else 0
            if missing > 0:
                out(f"{state:<12} {missing:4d}")
            continue
        if state == "pending":
            if pending:
                reason_text, stuck = _pending_line(pending)
                out(f"pending      {len(pending):4d}  {reason_text}")
                for line in stuck:
                    out(f"  needs a person: {line}")
                needing += len(stuck)
            continue
        members = by_state.get(state, [])
        if not members:
            continue
        # An interrupted run whose Slurm job is queued again will resume by itself.
        person = [
            r
            for r in members
            if state in NEEDS_PERSON and not (state == Status.INTERRUPTED and queued)
        ]
        detail = (
            "" if state != Status.RUNNING else "  " + "; ".join(_run_line(r) for r in members[:3])
        )
        out(f"{state:<12} {len(members):4d}{detail}")
        for run in person:
            out(f"  needs a person: {_run_line(run)} [{run.path}]")
        needing += len(person)
    if needing:
        out(
            f"{needing} jobs need a person; `dcutmix-sweep resume {folder}` reruns what did not complete"
        )
    return needing
