"""SIGKILL a short run at 20 moments from start-up to its end: every rerun resumes, no checkpoint is
ever left partial, and the finished metrics are those of a run that was never interrupted.

Moments are events, never delays: a file in the run folder created, renamed into place or closed
after writing, or a line of the run's log (its progress lines), seen through Linux inotify. The
run shares one CPU with the watching test, which waits at real-time priority: when an event wakes
it, the run cannot take another step before the kill, so it lands at the event itself, for
instance while ``checkpoints/.last.pt.<random>.tmp`` is still empty.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcutmix.config import REPO_ROOT
from dcutmix.errors import ConfigError
from dcutmix.run.checkpoint import load_file
from tests.helpers.provided import require
from tests.helpers.runs import read_metrics, read_results

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _inotify():
    require(
        "Linux's inotify, to watch the run folder",
        None if sys.platform.startswith("linux") else f"this is {sys.platform}",
    )


EPOCHS = 3
RUN = [
    f"trainer.epochs={EPOCHS}",
    "trainer.batch_size=32",
    "trainer.limit_train_batches=8",
    "trainer.log_every=2",  # progress lines "epoch E step 2/8", 4/8 and 6/8: events inside epochs
    "logger=none",
    "trainer.device=cpu",
]
# One thread per process: on two busy cores torch's default of a thread per core oversubscribes
# them and an epoch of this run takes seconds instead of a fraction of one.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)
PROCESS_TIMEOUT = 180.0

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x8, 0x80, 0x100
_EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def _temporary_of(name: str, target: str) -> bool:
    """Whether ``name`` is dcutmix.store.files' temporary for ``target`` (``.<target>.<random>.tmp``)."""
    return name.startswith(f".{target}.") and name.endswith(".tmp")


# What the trainer does to its folder, as (folder, file name test, inotify event). "line" events
# are lines of the run's log (see Moment.text).
EVENTS = {
    "hydra": (".hydra", lambda name: name == "overrides.yaml", _IN_CLOSE_WRITE),
    "results": ("run", lambda name: name == "results.json", _IN_MOVED_TO),
    "row": ("run", lambda name: name == "metrics.jsonl", _IN_CLOSE_WRITE),
    "metrics_rewrite": ("run", lambda name: name.startswith(".metrics.jsonl."), _IN_CREATE),
    "checkpoint_write": ("checkpoints", lambda name: _temporary_of(name, "last.pt"), _IN_CREATE),
    "checkpoint_saved": ("checkpoints", lambda name: name == "last.pt", _IN_MOVED_TO),
    "best_write": ("checkpoints", lambda name: _temporary_of(name, "best.pt"), _IN_CREATE),
}


class FolderEvents:
    """Files created, renamed into or closed after writing in a few folders (Linux inotify)."""

    def __init__(self, folders: dict[str, Path]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.keys: dict[int, str] = {}
        for key, folder in folders.items():
            mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
            wd = libc.inotify_add_watch(self.fd, os.fsencode(folder), mask)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"cannot watch {folder}")
            self.keys[wd] = key

    def __enter__(self) -> FolderEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def read(self, timeout: float) -> list[tuple[str, str, int]]:
        """The (folder key, file name, event mask) seen so far, waiting up to ``timeout`` s."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        data = os.read(self.fd, 1 << 16)
        events, offset = [], 0
        while offset < len(data):
            wd, mask, _, length = _EVENT_HEADER.unpack_from(data, offset)
            start = offset + _EVENT_HEADER.size
            name = data[start : start + length].rstrip(b"\0").decode()
            events.append((self.keys.get(wd, ""), name, mask))
            offset = start + length
        return events


@dataclass(frozen=True)
class State:
    """How far a run folder is: epochs in its newest checkpoint, and whether it is marked done."""

    saved: int
    completed: bool


@dataclass(frozen=True)
class Moment:
    """Kill at the ``nth`` ``event`` of the process (``spawn``: as soon as it has started).

    A ``line`` event is the first log line of the process that starts with ``text`` (nth 1).
    """

    event: str
    nth: int = 1
    text: str = ""
    why: str = ""

    def reachable(self, state: State) -> bool:
        """Whether a process started in ``state`` gets to this moment before it ends."""
        remaining = EPOCHS - state.saved
        if state.completed:
            return False
        if self.event in ("spawn", "hydra"):
            return True
        if self.event == "line" and self.text.startswith("epoch "):
            return int(self.text.split()[1]) > state.saved
        if self.event == "line" and self.text.startswith("[dcutmix] resuming from"):
            return state.saved > 0
        if self.event == "results":
            # one write as training starts, one per epoch, one to mark the run completed
            return self.nth <= remaining + 2
        if self.event == "metrics_rewrite":
            return state.saved > 0
        if self.event == "best_write":
            return state.saved == 0  # the first evaluation always improves on none
        return self.nth <= remaining

    def __str__(self) -> str:
        what = f"line {self.text!r}" if self.event == "line" else f"{self.event}#{self.nth}"
        return f"{what} ({self.why})"


# Two run folders' worth of moments, in order; each folder is finished by a rerun. A moment
# that a folder can no longer reach starts a new one.
CHAINS = [
    [
        Moment("spawn", why="interpreter start-up"),
        Moment("hydra", why="imports done, Hydra's config saved, the run not begun"),
        Moment("results", why="data and model built, training about to start"),
        Moment("line", text="epoch 1 step 2/", why="inside epoch 1"),
        Moment("checkpoint_write", why="the first checkpoint being written"),
        Moment("best_write", why="epoch 1 saved, best.pt being written, no metrics row yet"),
        Moment("metrics_rewrite", why="a resume putting metrics.jsonl back to the checkpoint"),
        Moment("line", text="epoch 2 step 2/", why="inside epoch 2"),
        Moment("checkpoint_write", why="epoch 2's checkpoint being written over epoch 1's"),
        Moment("row", why="epoch 2's row appended, results.json not updated"),
        Moment("checkpoint_write", why="the final checkpoint being written"),
        Moment("checkpoint_saved", why="the final checkpoint saved, its row not written"),
        Moment("results", why="a resume with nothing left to train, not yet marked completed"),
    ],
    [
        Moment("line", text="epoch 1 step 4/", why="halfway through epoch 1"),
        Moment("checkpoint_write", nth=2, why="epoch 1 saved, epoch 2's checkpoint being written"),
        Moment("line", text="[dcutmix] resuming from", why="late in a resume's start-up"),
        Moment("line", text="epoch 2 step 6/", why="late in epoch 2, before evaluating"),
        Moment("checkpoint_saved", why="epoch 2 saved, best.pt and its row not written"),
        Moment("hydra", why="a resume's start-up, its config saved again"),
        Moment("results", nth=3, why="just marked completed, the process exiting"),
    ],
]


@dataclass
class Kill:
    """One killed process: where it started, where it left the folder, and what it left behind."""

    moment: Moment
    run: Path
    before: State
    after: State
    temp_left: bool

    def __str__(self) -> str:
        return f"{self.run.name}: {self.moment} {self.before} -> {self.after}" + (
            " [checkpoint write cut]" if self.temp_left else ""
        )


def _spawn(run: Path, log: Path, cpu: int | None = None) -> subprocess.Popen:
    """Start the run, its output appended to ``log``; pinned to ``cpu`` when one is given."""
    with log.open("a") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "dcutmix.train", *RUN, f"hydra.run.dir={run}"],
            cwd=REPO_ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=None if cpu is None else lambda: _pinned_and_ordinary(cpu),
        )


def _pinned_and_ordinary(cpu: int) -> None:
    """In the run's process before it starts: only ``cpu``, at ordinary priority."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _real_time_refused() -> str | None:
    """Why this process cannot wait at real-time priority, or None when it can."""
    if not hasattr(os, "SCHED_FIFO"):
        return "this platform has no SCHED_FIFO"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError as error:
        return f"SCHED_FIFO refused ({error.strerror}); run as root"
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return None


@contextlib.contextmanager
def _first_to_run_on(cpu: int):
    """Run this process on ``cpu`` at real-time priority: once an event wakes it, a run pinned to
    that CPU cannot go on until this process sleeps again (after its kill)."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    # Processes it starts do not inherit the priority.
    os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, affinity)


def _state(run: Path) -> State:
    """The folder's state; fails when a checkpoint or results.json is partial."""
    epochs = [
        load_file(path)["epoch"]
        for path in (run / "checkpoints" / "last.pt", run / "checkpoints" / "last.prev.pt")
        if path.exists()
    ]
    results = run / "results.json"
    completed = results.exists() and json.loads(results.read_text())["status"] == "completed"
    return State(max(epochs, default=0), completed)


def _new_folder(parent: Path, number: int) -> Path:
    run = parent / f"run{number}"
    # Made beforehand so both can be watched from the first process on; the trainer accepts them.
    (run / "checkpoints").mkdir(parents=True)
    return run


def _kill_at(moment: Moment, run: Path, log: Path) -> subprocess.Popen:
    """Start the run, SIGKILL it at ``moment`` and reap it."""
    (run / ".hydra").mkdir(exist_ok=True)
    watched = {"run": run, "checkpoints": run / "checkpoints", ".hydra": run / ".hydra"}
    watched["logs"] = log.parent
    log.touch()
    read_from = log.stat().st_size  # this process's lines start here
    cpu = max(os.sched_getaffinity(0))
    with FolderEvents(watched) as events, _first_to_run_on(cpu):
        proc = _spawn(run, log, cpu)
        deadline = time.monotonic() + PROCESS_TIMEOUT
        seen = 0
        while moment.event != "spawn" and seen < moment.nth and proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"timed out after {PROCESS_TIMEOUT:.0f}s waiting for {moment}")
            for key, name, event_mask in events.read(timeout=0.05):
                seen += _matches(moment, key, name, event_mask, log, read_from)
                if seen >= moment.nth:
                    break
        proc.kill()  # a no-op when the process has already ended: the caller checks for that
        proc.wait(timeout=60)
    return proc


def _matches(moment: Moment, key: str, name: str, mask: int, log: Path, read_from: int) -> int:
    """How many of ``moment``'s events one inotify event is (a log write may add several lines)."""
    if moment.event == "line":
        if key != "logs" or name != log.name or not mask & _IN_MODIFY:
            return 0
        with log.open("rb") as text:
            text.seek(read_from)
            lines = text.read().decode(errors="replace").splitlines(keepends=True)
        # complete lines only: the first one that starts with the text counts once
        return int(any(line.endswith("\n") and line.startswith(moment.text) for line in lines))
    folder, wanted, wanted_mask = EVENTS[moment.event]
    return int(key == folder and bool(mask & wanted_mask) and wanted(name))


def _finish(run: Path, log: Path) -> None:
    proc = _spawn(run, log)
    assert proc.wait(timeout=PROCESS_TIMEOUT) == 0, log.read_text()[-3000:]


def _kill_everywhere(tmp_path: Path) -> tuple[list[Kill], list[Path]]:
    """Every moment of CHAINS, each folder finished by a rerun; the kills and the finished folders."""
    kills: list[Kill] = []
    finished: list[Path] = []
    for chain in CHAINS:
        run = _new_folder(tmp_path, len(finished))
        for moment in chain:
            before = _state(run)
            if not moment.reachable(before):
                _finish(run, tmp_path / f"{run.name}.log")
                finished.append(run)
                run = _new_folder(tmp_path, len(finished))
                before = _state(run)
            log = tmp_path / f"{run.name}.log"
            proc = _kill_at(moment, run, log)
            history = "\n".join(map(str, kills))
            assert proc.returncode == -signal.SIGKILL, (
                f"the process ended by itself before {moment}:\n{history}\n{log.read_text()[-3000:]}"
            )
            assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
            try:
                after = _state(run)
            except ConfigError as error:
                pytest.fail(f"after a kill at {moment}: {error}\n{history}")
            # A good checkpoint is never replaced by a partial or an older one.
            assert after.saved >= before.saved, f"{moment}: {before} -> {after}\n{history}"
            temp_left = any((run / "checkpoints").glob(".last.pt.*.tmp"))
            kills.append(Kill(moment, run, before, after, temp_left))
        _finish(run, tmp_path / f"{run.name}.log")
        finished.append(run)
    return kills, finished


def test_sigkill_at_twenty_moments_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    require("real-time scheduling, to kill the run at each event itself", _real_time_refused())
    started = time.monotonic()
    reference = tmp_path / "reference"
    # The uninterrupted run, beside the first kills.
    reference_proc = _spawn(reference, tmp_path / "reference.log")
    try:
        kills, finished = _kill_everywhere(tmp_path)
        assert reference_proc.wait(timeout=PROCESS_TIMEOUT) == 0, (
            tmp_path / "reference.log"
        ).read_text()
    finally:
        reference_proc.kill()  # only when a failure above left it running

    summary = "\n".join(map(str, kills))
    assert len(kills) == 20
    # Each kill lands at its event: every one at a checkpoint's creation cuts that write, and
    # no kill lands so late that a chain needs a third folder.
    cut = [kill.temp_left for kill in kills if kill.moment.event == "checkpoint_write"]
    assert cut == [True] * 4, f"a kill at a checkpoint write came after it:\n{summary}"
    assert len(finished) == len(CHAINS), summary
    assert {kill.before.saved for kill in kills} >= {0, 1, 2}, summary
    expected = read_metrics(reference)
    assert [row["epoch"] for row in expected] == list(range(1, EPOCHS + 1))
    for done in finished:
        assert read_metrics(done) == expected, f"{done.name}\n{summary}"
        results = read_results(done)
        assert results["status"] == "completed" and results["epochs_completed"] == EPOCHS
        assert results["top1_err_last"] == read_results(reference)["top1_err_last"]
        assert not list((done / "checkpoints").glob(".*.tmp")), (
            "a rerun left a stale temporary file"
        )
    print(f"\n{summary}\n{len(kills)} kills in {time.monotonic() - started:.0f}s")
