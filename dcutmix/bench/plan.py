"""Time ``dcutmix-sweep plan`` on a 432-job grid: ``python -m dcutmix.bench plan``.

The grid is the K ablation (72 jobs) x 3 learning rates x 2 run lengths. It prints the wall time
of the whole command (process start, imports, composition, checks) and, measured in this process
after the imports, of the planning alone, each with the CPU time it used (on a shared, busy machine the CPU time
says more than the wall time).
"""

from __future__ import annotations

import contextlib
import io
import resource
import subprocess
import sys
import time

GRID = ["+sweep=k_ablation", "optimizer.lr=0.05,0.1,0.2", "trainer.epochs=10,20"]


def run_plan_benchmark() -> dict[str, object]:
    """The two timings, each with its CPU time, and the plan's last line."""
    started = time.perf_counter()
    command = subprocess.run(
        [sys.executable, "-m", "dcutmix.sweep.cli", "plan", *GRID],
        capture_output=True,
        text=True,
        check=True,
    )
    whole = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    whole_cpu = children.ru_utime + children.ru_stime
    last = command.stdout.splitlines()[-1]

    from dcutmix.sweep.cli import run_plan

    started, started_cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        run_plan(GRID, None)
    planning = time.perf_counter() - started
    planning_cpu = time.process_time() - started_cpu
    return {
        "command": f"dcutmix-sweep plan {' '.join(GRID)}",
        "plan": last,
        "whole_command_wall_s": whole,
        "whole_command_cpu_s": whole_cpu,
        "planning_wall_s": planning,
        "planning_cpu_s": planning_cpu,
    }
