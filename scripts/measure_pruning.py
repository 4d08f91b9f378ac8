"""The same TPE search with and without each pruner: epochs trained, wall time, best trial.

    PYTHONPATH=. python scripts/measure_pruning.py OUT_DIR [extra overrides...]

Runs ``+sweep=alpha_search`` once per pruner (basic launcher, one job at a time) into
OUT_DIR/<pruner> and prints one Markdown row per search.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

PRUNERS = {
    "none": ["hydra.sweeper.pruner.name=none"],
    "median": ["hydra.sweeper.pruner.name=median"],
    "successive_halving": [
        "hydra.sweeper.pruner.name=successive_halving",
        "hydra.sweeper.pruner.min_resource=1",
        "hydra.sweeper.pruner.reduction_factor=3",
    ],
    "hyperband": [
        "hydra.sweeper.pruner.name=hyperband",
        "hydra.sweeper.pruner.min_resource=1",
        "hydra.sweeper.pruner.reduction_factor=3",
    ],
}


def main() -> None:
    out = Path(sys.argv[1])
    extra = sys.argv[2:]
    print(
        "| pruner | trials (completed / pruned) | epochs trained | wall s | best top-1 err % | best K, alpha |"
    )
    print("|---|---|---:|---:|---:|---|")
    for name, settings in PRUNERS.items():
        folder = out / name
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dcutmix.train", "-m", "+sweep=alpha_search", *settings,
             *extra, f"hydra.sweep.dir={folder}"],
            check=False, capture_output=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        runs = [json.loads(p.read_text()) for p in folder.glob("*/results.json")]
        epochs = sum(r.get("epochs_completed", 0) for r in runs)
        done = sum(r["status"] == "completed" for r in runs)
        pruned = sum(r["status"] == "pruned" for r in runs)
        best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
        params = best.get("best_params") or {}
        print(
            f"| {name} | {len(runs)} ({done} / {pruned}) | {epochs} | {wall:.0f} | "
            f"{best.get('best_value')} | K={params.get('mixing.k')}, "
            f"alpha={params.get('mixing.alpha', 0):.3g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
