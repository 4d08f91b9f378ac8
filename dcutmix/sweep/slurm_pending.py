"""Slurm jobs that can never start: found from their pending reason, explained, and cancelled.

A job asking more than its partition can give (8 CPUs of a 2-CPU partition, a GPU of a CPU
partition, a time limit above the partition's) stays PENDING for ever, with a reason such as
``PartitionConfig``. While a sweep waits, ``PendingCheck`` reads the reason of each of its pending
jobs; one that waiting cannot clear gets a line naming the job, the reason, what it asked for and
what the partition offers (from ``scontrol show partition`` and ``scontrol show node``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Reasons that state a mismatch between the request and what the cluster allows.
UNSATISFIABLE_REASONS = frozenset(
    {
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "QOSMinCpuNotSatisfied",
        "QOSMinGRES",
        "QOSMinMemory",
    }
)
# Limits of a QOS or association on one job (not on a user's or group's running total, which
# clear as other jobs end): the job itself is too big for them.
_PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)Max\w*Per(Job|Node)\w*$")
# ReqNodeNotAvail clears when a node comes back; it cannot when no node of the partition is usable.
NODE_NOT_AVAILABLE = "ReqNodeNotAvail"
_USABLE_NODE_STATES = ("IDLE", "MIXED", "ALLOCATED", "COMPLETING", "PLANNED")
CHECK_EVERY_S = 5.0
# Once a sweep waits on reported jobs, the controller need not be asked as often.
WAITING_CHECK_EVERY_S = 60.0
REMIND_EVERY_S = 600.0
SQUEUE_FORMAT = "%i|%r|%P|%C|%m|%b|%l|%D"


@dataclass(frozen=True)
class PendingJob:
    """A pending job as squeue lists it: why it waits and what it asked for."""

    job_id: str
    reason: str
    partition: str
    cpus: str
    mem: str
    gres: str
    time: str
    nodes: str

    def request(self) -> str:
        """What the job asked for, in one phrase."""
        gpus = _gpus(self.gres)
        return (
            f"asks {self.cpus} cpus, {self.mem} mem, {gpus} gpus, time {self.time} "
            f"on {self.nodes} node{'s' if self.nodes != '1' else ''}"
        )


def parse_squeue(text: str) -> list[PendingJob]:
    """PendingJobs from ``squeue --format=SQUEUE_FORMAT`` lines (others are ignored)."""
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 8:
            jobs.append(PendingJob(*parts))
    return jobs


def parse_scontrol(text: str) -> list[dict[str, str]]:
    """Records of ``scontrol -o show ...``: one line each, ``Key=Value`` pairs."""
    records = []
    for line in text.splitlines():
        pairs = re.findall(r"(\w+)=(\S*)", line)
        if pairs:
            records.append(dict(pairs))
    return records


def _gpus(gres: str) -> str:
    """The number of GPUs in a gres or TRES text (``gres:gpu:2``, ``gpu:a100:1(S:0)``...), or 0."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if "gpu" in fields:
            last = fields[-1]
            total += int(last) if last.isdigit() else 1
    return str(total)


def is_unsatisfiable(reason: str, partition_has_usable_node: Callable[[], bool]) -> bool:
    """Whether waiting cannot end a job's wait for this reason."""
    if reason in UNSATISFIABLE_REASONS or _PER_JOB_LIMIT.match(reason):
        return True
    if reason.startswith(NODE_NOT_AVAILABLE):
        return not partition_has_usable_node()
    return False


def describe_partition(partition: dict[str, str], nodes: Iterable[dict[str, str]]) -> str:
    """What a partition offers, from its scontrol record and those of its nodes."""
    name = partition.get("PartitionName", "?")
    listed = []
    for node in nodes:
        listed.append(
            f"node {node.get('NodeName', '?')}: {node.get('CPUTot', '?')} cpus, "
            f"{node.get('RealMemory', '?')}M mem, {_gpus(node.get('Gres', ''))} gpus, "
            f"{node.get('State', '?').lower()}"
        )
    limits = [f"time limit {partition.get('MaxTime', '?')}"]
    for key, label in (("MaxCPUsPerNode", "cpus per node"), ("MaxMemPerNode", "mem per node")):
        if partition.get(key, "UNLIMITED") != "UNLIMITED":
            limits.append(f"at most {partition[key]} {label}")
    return f"partition {name} offers {'; '.join(listed) or 'no nodes'} ({', '.join(limits)})"


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def partition_offer(partition: str) -> tuple[str, bool]:
    """What ``partition`` offers, in words, and whether any of its nodes can run jobs now."""
    records = parse_scontrol(_run(["scontrol", "-o", "show", "partition", partition]))
    if not records:
        return f"partition {partition} is not known to scontrol", False
    node_names = _run(["sinfo", "--noheader", "--partition", partition, "--format=%N"]).split()
    nodes = []
    for names in node_names:
        nodes += parse_scontrol(_run(["scontrol", "-o", "show", "node", names]))
    usable = any(
        node.get("State", "").split("+")[0].rstrip("*") in _USABLE_NODE_STATES for node in nodes
    )
    return describe_partition(records[0], nodes), usable


def default_partition() -> str | None:
    """The partition sbatch uses when none is named (the one sinfo marks with ``*``)."""
    names = _run(["sinfo", "--noheader", "--format=%P"]).split()
    marked = [name.rstrip("*") for name in names if name.endswith("*")]
    return (marked or names or [None])[0]


def refused_submission(error: str, params: dict, partition: str | None) -> str:
    """One line for jobs sbatch refused outright: its reason, the request, the partition's offer."""
    said = [line.strip() for line in error.strip().splitlines() if line.strip()]
    reason = said[-1].removeprefix("sbatch: error: ") if said else "no reason given"
    partition = partition or default_partition()
    offer = partition_offer(partition)[0] if partition else "no partition is known to sinfo"
    asked = (
        f"asks {params.get('cpus_per_task')} cpus, {params.get('mem_gb')} GB mem, "
        f"{params.get('gpus_per_node') or 0} gpus per node, {params.get('timeout_min')} min"
    )
    return (
        f"hydra.launcher: sbatch refused the sweep's jobs ({reason}): {asked}; {offer}; lower "
        "hydra.launcher.cpus_per_task, mem_gb, gpus_per_node or timeout_min, or pick another "
        "hydra.launcher.partition"
    )


class UnsatisfiableJobs(Exception):
    """Jobs of the sweep that can never start; ``lines`` says why, one line per job."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class PendingCheck:
    """Reads the pending reasons of a sweep's jobs and acts on the ones that cannot clear.

    With ``wait`` false it cancels them and raises UnsatisfiableJobs; with ``wait`` true it logs
    the lines once and then a reminder every ``REMIND_EVERY_S`` seconds.
    """

    def __init__(self, wait: bool = False, cancel: Callable[[list[str]], None] | None = None):
        self.wait = wait
        self.cancel = cancel or _scancel
        self._last_check = float("-inf")
        self._last_reminder = float("-inf")
        self._reported: set[str] = set()

    def due(self) -> bool:
        """Whether it is time to look again: often until jobs were reported, then once a minute."""
        every = CHECK_EVERY_S if not self._reported else WAITING_CHECK_EVERY_S
        return time.monotonic() - self._last_check >= every

    def check(self, job_ids: Iterable[str]) -> None:
        """Look at the pending ones among ``job_ids``; cancel and raise, or remind, as set."""
        self._last_check = time.monotonic()
        ids = sorted(job_ids)
        if not ids:
            return
        listed = _run(
            ["squeue", "--noheader", "--array", "--states=PENDING", f"--format={SQUEUE_FORMAT}",
             f"--jobs={','.join(sorted({i.split('_')[0] for i in ids}))}"]
        )  # fmt: skip
        lines = self.explain([job for job in parse_squeue(listed) if job.job_id in ids])
        if lines:
            self.act(lines)

    def explain(self, pending: list[PendingJob]) -> dict[str, str]:
        """One line per job that cannot start, keyed by job id."""
        offers: dict[str, tuple[str, bool]] = {}
        lines = {}
        for job in pending:
            if job.partition not in offers and (
                job.reason in UNSATISFIABLE_REASONS
                or _PER_JOB_LIMIT.match(job.reason)
                or job.reason.startswith(NODE_NOT_AVAILABLE)
            ):
                offers[job.partition] = partition_offer(job.partition)
            offer = offers.get(job.partition)
            if offer is None or not is_unsatisfiable(job.reason, lambda o=offer: o[1]):
                continue
            lines[job.job_id] = (
                f"job {job.job_id} cannot start ({job.reason}): {job.request()}; {offer[0]}"
            )
        return lines

    def act(self, lines: dict[str, str]) -> None:
        if not self.wait:
            self.cancel(sorted(lines))
            raise UnsatisfiableJobs([lines[job_id] for job_id in sorted(lines)])
        new = set(lines) - self._reported
        now = time.monotonic()
        if new or now - self._last_reminder >= REMIND_EVERY_S:
            for job_id in sorted(lines):
                log.warning("still waiting: %s", lines[job_id])
            log.warning(
                "hydra.launcher.wait_on_unsatisfiable=true: waiting on %d jobs that cannot start "
                "as asked; cancel them with `scancel %s`, or change the cluster",
                len(lines),
                " ".join(sorted(lines)),
            )
            self._reported |= new
            self._last_reminder = now


def _scancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, check=False, timeout=60)
