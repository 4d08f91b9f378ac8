"""One writer per run folder (dcutmix.store.runlock): real processes holding, racing for, and dying with it."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dcutmix.store.runlock import LOCK_NAME, Holder, RunFolderLocked, RunLock, process_start_ticks
from tests.conftest import cli, read_metrics, read_results
from tests.helpers.waiting import wait_until

TINY = ["logger=none", "trainer.device=cpu", "run_name=test", "trainer.limit_train_batches=2"]

HOLD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dcutmix.store.runlock import RunLock
    lock = RunLock(Path(sys.argv[1]), heartbeat_s=0.2)
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def start_holder(run_dir: Path) -> subprocess.Popen:
    """Another real process that takes the run folder's lock and keeps it until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def write_lock(run_dir: Path, **fields) -> None:
    now = time.time()
    record = {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": None,
              "token": "someone-else", "since": now, "heartbeat": now, **fields}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps(record))


@pytest.mark.slow
def test_a_held_folder_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir)
    try:
        refused = cli([*TINY, "trainer.epochs=1", f"hydra.run.dir={run_dir}"])
        assert refused.returncode == 2, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in refused.stderr
        assert f"is held by pid {holder.pid} on {socket.gethostname()} since " in lines[0]
        # Nothing of the run's own was written: no results, metrics or checkpoints.
        for name in ("results.json", "metrics.jsonl", "checkpoints"):
            assert not (run_dir / name).exists()
        assert Holder.read(run_dir / LOCK_NAME).pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without cleaning up; its lock stays behind until the next run takes it.
    assert Holder.read(run_dir / LOCK_NAME).pid == holder.pid
    taken = cli([*TINY, "trainer.epochs=2", f"hydra.run.dir={run_dir}"])
    assert taken.returncode == 0, taken.stderr
    assert f"took over the lock of pid {holder.pid}" in taken.stderr
    assert f"pid {holder.pid} is gone" in taken.stderr
    assert read_results(run_dir)["status"] == "completed"
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    assert not (run_dir / LOCK_NAME).exists()


def test_lock_of_another_host_is_kept_while_its_heartbeat_is_fresh(tmp_path):
    write_lock(tmp_path, host="node-elsewhere", pid=1, heartbeat=time.time() - 20)
    with pytest.raises(
        RunFolderLocked, match=r"held by pid 1 on node-elsewhere since .*heartbeat 2\d s ago"
    ):
        RunLock(tmp_path, stale_after_s=60).acquire()
    write_lock(tmp_path, host="node-elsewhere", pid=1, heartbeat=time.time() - 61)
    lock = RunLock(tmp_path, stale_after_s=60)
    lock.acquire()
    assert "no heartbeat for 61 s (more than 60 s)" in lock.took_over
    assert Holder.read(tmp_path / LOCK_NAME).token == lock.token
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_requeued_slurm_job_takes_over_its_earlier_run_on_another_node(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    write_lock(tmp_path, host="node-elsewhere", pid=1, slurm_job="77_4")
    with pytest.raises(RunFolderLocked):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, host="node-elsewhere", pid=1, slurm_job="77_3")
    lock = RunLock(tmp_path)
    lock.acquire()
    assert "it was Slurm job 77_3 before its requeue" in lock.took_over
    assert Holder.read(lock.path).slurm_job == "77_3"
    lock.release()


def test_a_reused_pid_on_this_host_does_not_keep_a_dead_lock(tmp_path):
    # This very process is alive, but it started at another time than the lock records.
    ticks = process_start_ticks(os.getpid())
    write_lock(tmp_path, pid=os.getpid(), start_ticks=ticks)
    with pytest.raises(RunFolderLocked):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, pid=os.getpid(), start_ticks=ticks - 1)
    lock = RunLock(tmp_path)
    lock.acquire()
    assert "now belongs to another process" in lock.took_over
    lock.release()


def _count_refreshes(lock: RunLock) -> list[None]:
    """Count the heartbeat thread's refreshes of ``lock``: one item per finished refresh."""
    done: list[None] = []
    refresh = lock.refresh

    def counted() -> None:
        refresh()
        done.append(None)

    lock.refresh = counted  # the heartbeat thread looks it up on each beat
    return done


def test_heartbeat_is_refreshed_and_release_leaves_a_lock_it_lost(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.05)
    refreshes = _count_refreshes(lock)
    lock.acquire()
    first = Holder.read(lock.path)
    wait_until(lambda: len(refreshes) >= 1, 60, "the first heartbeat", poll=0.01)
    later = Holder.read(lock.path)
    assert later.heartbeat > first.heartbeat and later.since == first.since
    assert later.token == lock.token
    # Someone took the folder over (e.g. after a network partition): the old holder leaves it.
    write_lock(tmp_path, token="new-holder")
    seen = len(refreshes)
    # Two more beats: at least one began after the takeover, and must not have written.
    wait_until(
        lambda: len(refreshes) >= seen + 2, 60, "two heartbeats after the takeover", poll=0.01
    )
    assert Holder.read(lock.path).token == "new-holder"
    lock.release()
    assert Holder.read(lock.path).token == "new-holder"


def _race(run_dir: str, start, answered, results) -> None:
    start.wait()  # all racers are up: they try at once
    lock = RunLock(Path(run_dir), heartbeat_s=60)
    try:
        lock.acquire()
    except RunFolderLocked:
        results.put("refused")
    else:
        results.put("won")
        # Hold it until every racer has answered: a winner that ended early would leave a dead
        # holder's lock, which a slow racer would rightly take over.
        answered.wait(120)
        lock.release()


def test_processes_racing_for_a_dead_lock_get_exactly_one_winner(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    write_lock(tmp_path, pid=int(dead.stdout))
    context = multiprocessing.get_context("fork")
    racers_count = 6
    results, start, answered = context.Queue(), context.Barrier(racers_count), context.Event()
    racers = [
        context.Process(target=_race, args=(str(tmp_path), start, answered, results))
        for _ in range(racers_count)
    ]
    for racer in racers:
        racer.start()
    try:
        outcomes = sorted(results.get(timeout=120) for _ in racers)
    finally:
        answered.set()
        for racer in racers:
            racer.join(120)
    assert outcomes == ["refused"] * (racers_count - 1) + ["won"]
    assert [racer.exitcode for racer in racers] == [0] * racers_count
