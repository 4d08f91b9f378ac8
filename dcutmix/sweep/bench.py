"""Time ``dcutmix-sweep plan`` on a 432-job grid: ``python -m dcutmix.sweep.bench``.

The grid is the K ablation (72 jobs) x 3 learning rates x 2 run lengths. It prints the wall time
of the whole command (process start, imports, composition, checks) and, measured in this process
after the imports, of the planning alone.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time

GRID = ["+sweep=k_ablation", "optimizer.lr=0.05,0.1,0.2", "trainer.epochs=10,20"]


def main() -> None:
    """Print the two timings and the plan's last line."""
    started = time.perf_counter()
    command = subprocess.run(
        [sys.executable, "-m", "dcutmix.sweep.cli", "plan", *GRID],
        capture_output=True,
        text=True,
        check=True,
    )
    whole = time.perf_counter() - started
    last = command.stdout.splitlines()[-1]

    from dcutmix.sweep.cli import run_plan

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        run_plan(GRID, None)
    planning = time.perf_counter() - started
    print(f"dcutmix-sweep plan {' '.join(GRID)}")
    print(f"  {last}")
    print(f"  whole command: {whole:.2f} s; planning after imports: {planning:.2f} s")


if __name__ == "__main__":
    main()
