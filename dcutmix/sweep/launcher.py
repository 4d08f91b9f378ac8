"""Hydra launchers that run every job of a sweep from a frozen copy of the code and configs.

When a sweep is launched, ``dcutmix/``, ``hydra_plugins/``, ``conf/`` and ``sweeps/`` are copied
into the sweep folder (``<sweep dir>/.code``), the Hydra config search path handed to the jobs is
moved onto that copy, and the jobs import ``dcutmix`` from it. A job that waits in the Slurm
queue, or is requeued after a timeout, therefore runs what was there at submission, whatever
happens to the working tree since.

``FrozenSlurmLauncher`` backs the ``hydra/launcher=slurm`` and ``slurm_ddp`` presets,
``FrozenLocalLauncher`` ``hydra/launcher=local``; Hydra reaches them through
``hydra_plugins.dcutmix_launcher``, as it instantiates launchers only from that namespace.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.utils import JobReturn
from hydra.types import HydraContext
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

import dcutmix
from dcutmix.errors import InputError
from dcutmix.store.files import atomic_write_json
from dcutmix.store.tracking import git_revision
from dcutmix.sweep.hydra_private import config_loader
from dcutmix.sweep.slurm_pending import PendingCheck, UnsatisfiableJobs, refused_submission

log = logging.getLogger(__name__)

SOURCE_ROOT = Path(dcutmix.__file__).resolve().parent.parent
SNAPSHOT_NAME = ".code"
# In a job, REPO_ROOT is the snapshot, which is no git checkout (or lies inside the live one):
# the revision the code came from is recorded here at submission instead.
SNAPSHOT_RECORD = "snapshot.json"
# hydra_plugins/ holds the classes Hydra instantiates (and unpickles on the node).
_REQUIRED = ("dcutmix", "hydra_plugins", "conf")
_OPTIONAL = ("sweeps",)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def snapshot_code(sweep_dir: Path, source_root: Path = SOURCE_ROOT) -> Path:
    """Copy the package, configs and sweeps of ``source_root`` into a new folder of ``sweep_dir``.

    The folder is ``.code``, or ``.code-2``, ``.code-3``... when an earlier launch into the same
    sweep folder took that name (its queued jobs keep their own copy). Symlinks are copied as the
    files they point to, so ``conf/sweep -> ../sweeps`` becomes a real folder. ``snapshot.json``
    records where the copy came from, when, and its git revision. Returns the folder.
    """
    for name in _REQUIRED:
        if not (source_root / name).is_dir():
            raise InputError(
                "hydra.launcher",
                f"cannot freeze the code, {source_root / name} is not a folder; "
                "launch sweeps from a source checkout installed with `pip install -e .`",
            )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".code-staging-", dir=sweep_dir))
    try:
        for name in _REQUIRED + _OPTIONAL:
            if (source_root / name).is_dir():
                shutil.copytree(source_root / name, staging / name, ignore=_IGNORE)
        atomic_write_json(
            staging / SNAPSHOT_RECORD,
            {
                "source": str(source_root),
                "git_revision": git_revision(source_root),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        staging.chmod(0o755)
        attempt = 1
        while True:
            target = sweep_dir / (SNAPSHOT_NAME if attempt == 1 else f"{SNAPSHOT_NAME}-{attempt}")
            # rename is atomic and fails on an existing folder, so a copy is never seen half-written
            # and two launches into one sweep folder cannot share or overwrite one.
            try:
                staging.rename(target)
                return target
            except OSError:
                if not target.exists():
                    raise
                attempt += 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _local_path(search_path: str) -> str | None:
    """The file system path of a search path entry, or None for ``pkg://`` and other schemes."""
    if search_path.startswith("file://"):
        return search_path[len("file://") :]
    return None if "://" in search_path else search_path


def rebase_config_loader(
    loader: ConfigLoader, old_root: Path, new_root: Path
) -> tuple[ConfigLoader, int]:
    """A config loader whose search path entries under ``old_root`` point under ``new_root``.

    Returns the loader and how many entries moved; entries elsewhere are kept as they are.
    """
    search_path = []
    moved = 0
    for element in loader.get_search_path().get_path():
        path = element.path
        local = _local_path(path)
        if local is not None:
            resolved = Path(local).resolve()
            if resolved.is_relative_to(old_root.resolve()):
                rebased = str(new_root / resolved.relative_to(old_root.resolve()))
                path = f"file://{rebased}" if path.startswith("file://") else rebased
                moved += 1
        search_path.append((element.provider, path))
    return config_loader(search_path), moved


def sacct_unavailable() -> str | None:
    """Why sacct cannot report job states on this cluster, or None when it can."""
    try:
        probe = subprocess.run(
            ["sacct", "--noheader", "--jobs=1", "--format=JobID"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except FileNotFoundError:
        return "sacct is not installed"
    except subprocess.TimeoutExpired:
        return None
    said = (probe.stderr or probe.stdout).strip().splitlines()
    if probe.returncode != 0 and said and "disabled" in said[0].lower():
        return f"sacct says: {said[0]}"
    return None


# States squeue shows for a job that has not ended and that submitit's own list of unfinished
# states leaves out: a job seen in one of them between two polls would otherwise be taken as ended
# without a result. Held states (REQUEUE_HOLD, SPECIAL_EXIT) stay endings: they need a person, and a
# sweep that waited on them would wait silently.
PASSING_STATES = frozenset(
    {"CONFIGURING", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
)


class PendingAwareWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher, which also reads why pending jobs wait (see PendingCheck)."""

    pending_check: PendingCheck | None = None

    def update(self) -> None:
        """Update job states; then, every few seconds, look for jobs that can never start."""
        super().update()
        check = self.pending_check
        if check is not None and check.due():
            check.check(self._registered - self._finished)


class QueueWatcher(PendingAwareWatcher):
    """Follows Slurm job states with squeue, for clusters where sacct has no accounting to read.

    A job that has left squeue's list is reported as ``LEFT_QUEUE``, which submitit takes as
    finished: it then reads the job's result file, or reports that the job wrote none, instead
    of waiting forever for a state sacct will never give.
    """

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        """Job states from squeue's output; registered jobs it does not list have left the queue."""
        text = string.decode() if isinstance(string, bytes) else string
        states: dict[str, dict[str, str]] = {}
        for line in text.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                job_id, state, nodes = parts
                states[job_id] = {"JobID": job_id, "State": state, "NodeList": nodes}
        for job_id in self._registered - self._finished - states.keys():
            states[job_id] = {"JobID": job_id, "State": "LEFT_QUEUE", "NodeList": ""}
        return states

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        """Whether the job has ended; squeue's passing states are not taken for an end."""
        if self.get_state(job_id, mode=mode).upper() in PASSING_STATES:
            return False
        return super().is_done(job_id, mode=mode)


class FrozenCodeMixin:
    """Snapshot the code at launch and make the jobs compose and import from the snapshot."""

    _snapshot: Path | None = None
    params: dict[str, Any]
    config: Any
    hydra_context: HydraContext | None

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Freeze the code (once per launcher), then submit the jobs."""
        if self._snapshot is None:
            self._freeze()
        return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]

    def _default_setup(self) -> list[str]:
        """Shell lines each job runs before the user's setup lines."""
        return []

    def _freeze(self) -> None:
        assert self.hydra_context is not None and self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        # `dcutmix-sweep resume` runs from the sweep's own frozen copy: keep using it, not a copy.
        own_copy = SOURCE_ROOT.parent == sweep_dir.resolve() and SOURCE_ROOT.name.startswith(
            SNAPSHOT_NAME
        )
        snapshot = SOURCE_ROOT if own_copy else snapshot_code(sweep_dir)
        loader, moved = rebase_config_loader(
            self.hydra_context.config_loader, SOURCE_ROOT, snapshot
        )
        if not moved:
            log.warning(
                "no config search path entry lies under %s, so jobs compose from the live configs; "
                "only the code is frozen",
                SOURCE_ROOT,
            )
        self.hydra_context = HydraContext(
            config_loader=loader, callbacks=self.hydra_context.callbacks
        )
        # Defaults first, so the user's setup lines may change them; the snapshot's lines last,
        # so nothing undoes them. PYTHONSAFEPATH keeps `python -m` from putting the submission
        # directory (often the working tree itself) ahead of PYTHONPATH on sys.path.
        self.params["setup"] = [
            *self._default_setup(),
            *(self.params.get("setup") or []),
            f"export PYTHONPATH={shlex.quote(str(snapshot))}${{PYTHONPATH:+:$PYTHONPATH}}",
            "export PYTHONSAFEPATH=1",
        ]
        self._snapshot = snapshot
        log.info("jobs run the code and configs frozen in %s", snapshot)

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Any],
    ) -> JobReturn:
        """Run one job (on the node), after checking that it imported the frozen code."""
        imported_from = Path(dcutmix.__file__).resolve().parent.parent
        if self._snapshot is not None and imported_from != self._snapshot.resolve():
            raise RuntimeError(
                f"this job imported dcutmix from {imported_from}, not from the sweep's frozen copy "
                f"{self._snapshot}; PYTHONPATH is {os.environ.get('PYTHONPATH')!r} (Python 3.11+ "
                "is needed for PYTHONSAFEPATH to keep the submission directory off sys.path)"
            )
        return super().__call__(  # type: ignore[misc]
            sweep_overrides, job_dir_key, job_num, job_id, singleton_state
        )


class FrozenSlurmLauncher(FrozenCodeMixin, SlurmLauncher):
    """hydra-submitit-launcher's Slurm launcher, running each job from the sweep's frozen code."""

    def __init__(self, **params: Any) -> None:
        # dcutmix's own key: not an sbatch parameter, so submitit must not see it.
        self.wait_on_unsatisfiable = bool(params.pop("wait_on_unsatisfiable", False))
        super().__init__(**params)

    def _default_setup(self) -> list[str]:
        # Logs reach the .submitit/ files as they are written, and torch uses the cores Slurm gave
        # the task rather than every core of the node (2-task CPU DDP on 2 cores ran 30x slower).
        return [
            "export PYTHONUNBUFFERED=1",
            "export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK > 0 ? SLURM_CPUS_PER_TASK : 1 ))",
        ]

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Follow job states with squeue where sacct cannot, then freeze and submit."""
        reason = sacct_unavailable()
        if reason and not isinstance(SlurmJob.watcher, QueueWatcher):
            # submitit polls through one watcher shared by all its Slurm jobs; without accounting
            # its sacct calls fail on every poll and a job that dies without a result is waited
            # for forever, so squeue takes over for this process.
            SlurmJob.watcher = QueueWatcher(delay_s=60)
            log.info("no Slurm job accounting here (%s): following job states with squeue", reason)
        elif not reason and not isinstance(SlurmJob.watcher, PendingAwareWatcher):
            SlurmJob.watcher = PendingAwareWatcher(delay_s=60)
        SlurmJob.watcher.pending_check = PendingCheck(wait=self.wait_on_unsatisfiable)
        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as error:
            # submitit raises this type for jobs that crashed too; only sbatch's own refusal (a GPU
            # of a partition without any, say) is a request to explain.
            if "sbatch: error" not in str(error):
                raise
            _end_sweep([refused_submission(str(error), self.params, self.params.get("partition"))])
        except UnsatisfiableJobs as error:
            _end_sweep(
                [
                    *error.lines,
                    f"cancelled {len(error.lines)} job{'s' if len(error.lines) > 1 else ''} that "
                    "could never start; fit hydra.launcher.cpus_per_task, mem_gb, gpus_per_node, "
                    "timeout_min or partition to the cluster (or set "
                    "hydra.launcher.wait_on_unsatisfiable=true to wait for a change)",
                ]
            )


def _end_sweep(lines: list[str]) -> None:
    """Print why the sweep cannot go on, one line each, and end it with exit status 2."""
    for line in lines:
        print(f"error: {line}", file=sys.stderr, flush=True)
    # SystemExit passes through Hydra's error report, which would add a traceback.
    raise SystemExit(2)


class FrozenLocalLauncher(FrozenCodeMixin, LocalLauncher):
    """hydra-submitit-launcher's local launcher, frozen code, at most as many jobs as cores allow.

    submitit starts every local job at once; this launcher submits them in waves of
    ``cores // cpus_per_task`` (one at a time when jobs ask for GPUs, since submitit gives every
    local job the same first GPUs) and caps each job's threads at ``cpus_per_task``.
    """

    def _default_setup(self) -> list[str]:
        return [f"export OMP_NUM_THREADS={self._cpus_per_task()}"]

    def _cpus_per_task(self) -> int:
        value = self.params.get("cpus_per_task")
        if value is None:
            return 1
        if not isinstance(value, int) or value < 1:
            raise InputError(
                "hydra.launcher.cpus_per_task", f"{value!r} is not a positive whole number of cores"
            )
        return value

    def parallel_jobs(self) -> int:
        """How many jobs run at once on this machine."""
        if self.params.get("gpus_per_node"):
            return 1
        return max(1, len(os.sched_getaffinity(0)) // self._cpus_per_task())

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run the jobs wave by wave, each wave as many jobs as run at once."""
        wave = self.parallel_jobs()
        results: list[JobReturn] = []
        for start in range(0, len(job_overrides), wave):
            results.extend(
                super().launch(job_overrides[start : start + wave], initial_job_idx + start)
            )
        return results
