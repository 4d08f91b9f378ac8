"""One writer per run folder: a lock file naming its holder, kept fresh by a heartbeat thread.

The lock is ``<run folder>/run.lock``, a small JSON record (host, pid, the process's start time,
when it was taken, its last heartbeat). It is created by writing a private file and hard-linking
it to the lock's name: ``link`` fails when the name exists, atomically, on local disks and on NFS
alike, so no ``flock`` is needed. While the run trains, a daemon thread rewrites the heartbeat
every ``HEARTBEAT_S`` seconds.

A lock left behind is taken over when its holder is known to be dead: on the same host when its
pid is gone (or now belongs to a process started at another time), so a requeued Slurm job on
the same node takes over at once; when it was the same Slurm job (which Slurm runs once at a
time, so it is a requeued job's earlier run, wherever it ran); from another host when its
heartbeat is older than ``STALE_AFTER_S``, as a lost node cannot be asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dcutmix.errors import ConfigError
from dcutmix.store.files import atomic_write_text

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
# Ten missed heartbeats: a holder on another host that has been silent this long is taken for dead.
STALE_AFTER_S = 300.0
# How long a process keeps trying while others take over the same dead lock.
TAKEOVER_WAIT_S = 10.0
GUARD_STALE_S = 30.0


class RunFolderLocked(ConfigError):
    """Another live process holds the run folder."""


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None where /proc cannot say)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """What a lock file says about the process that holds it."""

    host: str
    pid: int
    start_ticks: int | None
    token: str
    since: float
    heartbeat: float
    slurm_job: str | None = None

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        """The holder recorded in ``path``, or None when there is no lock (or it is unreadable)."""
        try:
            data = json.loads(path.read_text())
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                start_ticks=data.get("start_ticks"),
                token=str(data["token"]),
                since=float(data["since"]),
                heartbeat=float(data["heartbeat"]),
                slurm_job=data.get("slurm_job"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "token": self.token,
            "since": self.since,
            "heartbeat": self.heartbeat,
            "slurm_job": self.slurm_job,
            "since_utc": _utc(self.since),
            "heartbeat_utc": _utc(self.heartbeat),
        }

    def dead_because(self, stale_after_s: float, now: float) -> str | None:
        """Why this holder is known to be dead, or None while it may still be running."""
        if self.slurm_job is not None and self.slurm_job == slurm_job_id():
            # Slurm runs one instance of a job at a time: the holder was this job before a requeue.
            return f"it was Slurm job {self.slurm_job} before its requeue"
        if self.host == socket.gethostname():
            if not pid_alive(self.pid):
                return f"pid {self.pid} is gone"
            ticks = process_start_ticks(self.pid)
            if ticks is not None and self.start_ticks is not None and ticks != self.start_ticks:
                return f"pid {self.pid} now belongs to another process"
            return None
        silent = now - self.heartbeat
        if silent > stale_after_s:
            return f"no heartbeat for {silent:.0f} s (more than {stale_after_s:.0f} s)"
        return None


def slurm_job_id() -> str | None:
    """This process's Slurm job (``array_task`` for an array task), or None outside Slurm."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


class RunLock:
    """The lock of one run folder; ``acquire`` it before writing, ``release`` it when done."""

    def __init__(
        self,
        run_dir: Path,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self.took_over: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0

    def _me(self, since: float) -> Holder:
        pid = os.getpid()
        return Holder(
            socket.gethostname(),
            pid,
            process_start_ticks(pid),
            self.token,
            since,
            time.time(),
            slurm_job_id(),
        )

    def _write_private(self, holder: Holder) -> Path:
        private = self.path.with_name(f".{LOCK_NAME}.{self.token}.{time.monotonic_ns()}")
        private.write_text(json.dumps(holder.record()) + "\n")
        return private

    def _try_link(self) -> bool:
        self._since = time.time()
        private = self._write_private(self._me(self._since))
        try:
            os.link(private, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            private.unlink(missing_ok=True)

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderLocked naming the live holder and since when."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + TAKEOVER_WAIT_S
        while time.monotonic() < deadline:
            if self._try_link():
                self._start_heartbeat()
                return
            holder = Holder.read(self.path)
            if holder is not None and holder.dead_because(self.stale_after_s, time.time()) is None:
                raise RunFolderLocked(self._held_message(holder))
            if holder is None and not self._unreadable_and_old():
                if self.path.exists():
                    raise RunFolderLocked(
                        f"run folder {self.path.parent} has an unreadable lock file {self.path}; "
                        f"it is taken over once {self.stale_after_s:.0f} s old, or delete it"
                    )
                continue
            self._remove_dead_lock()
        raise RunFolderLocked(
            f"run folder {self.path.parent}: gave up taking over {self.path} after "
            f"{TAKEOVER_WAIT_S:.0f} s of contention; try again"
        )

    def _held_message(self, holder: Holder) -> str:
        age = time.time() - holder.heartbeat
        return (
            f"run folder {self.path.parent} is held by pid {holder.pid} on {holder.host} since "
            f"{_utc(holder.since)} (last heartbeat {age:.0f} s ago); wait for it to finish, or "
            f"end that process (a lock from another host is taken over after "
            f"{self.stale_after_s:.0f} s without a heartbeat)"
        )

    def _unreadable_and_old(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime > self.stale_after_s
        except OSError:
            return False

    def _remove_dead_lock(self) -> None:
        """Remove a dead holder's lock, judged again under a second lock so that two processes
        taking over at once cannot remove the lock the quicker one has just taken."""
        guard = self.path.with_name(f"{LOCK_NAME}.takeover")
        private = self._write_private(self._me(time.time()))
        try:
            os.link(private, guard)
        except FileExistsError:
            with contextlib.suppress(OSError):
                # A guard is held for milliseconds; an old one was left by a killed process.
                if time.time() - guard.stat().st_mtime > GUARD_STALE_S:
                    guard.unlink()
            time.sleep(0.05)
            return
        finally:
            private.unlink(missing_ok=True)
        try:
            holder = Holder.read(self.path)
            if holder is None:
                if self._unreadable_and_old():
                    self.path.unlink(missing_ok=True)
                return
            why = holder.dead_because(self.stale_after_s, time.time())
            if why is not None:
                self.path.unlink(missing_ok=True)
                self.took_over = f"took over the lock of pid {holder.pid} on {holder.host}: {why}"
        finally:
            guard.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def refresh(self) -> None:
        """Rewrite the heartbeat, unless the lock is no longer ours."""
        current = Holder.read(self.path)
        if current is None or current.token != self.token:
            return
        try:
            atomic_write_text(self.path, json.dumps(self._me(self._since).record()) + "\n")
        except OSError:
            # A full disk or a passing NFS fault: the next beat tries again, and a holder on this
            # host is never judged by its heartbeat.
            return

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        current = Holder.read(self.path)
        if current is not None and current.token == self.token:
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_run_folder(
    run_dir: Path, is_main: bool = True, share: Callable[[Any], Any] = lambda value: value
) -> Iterator[RunLock | None]:
    """Hold ``run_dir``'s lock while the block runs; only the main process takes it.

    ``share`` hands the main process's verdict to every process of a distributed run, so that
    all of them stop when the folder is held elsewhere. A folder where no lock can be written
    is left to the run's own writability check, which names the problem.
    """
    lock = RunLock(run_dir) if is_main else None
    problem = None
    if lock is not None:
        try:
            lock.acquire()
        except RunFolderLocked as error:
            problem = str(error)
        except OSError:
            lock = None
    problem = share(problem)
    if problem:
        raise RunFolderLocked(problem)
    if lock is not None and lock.took_over:
        print(f"note: {lock.took_over}", file=sys.stderr, flush=True)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
