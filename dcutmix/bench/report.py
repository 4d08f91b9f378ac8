"""Report benchmark: ``dcutmix-report`` on a sweep of finished runs, table and plots.

The runs are written here in the format ``dcutmix-train`` leaves (``.hydra/``, ``metrics.jsonl``
with one line per epoch, ``results.json``), four modes x ten values of K x three seeds, so the
figure is the report's own cost for a sweep of realistic size.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

MODES = ("dcutmix", "dmixup", "naive_cutmix", "naive_mixup")
KS = (2, 3, 4, 5, 6, 8, 10, 12, 14, 16)
SEEDS = (1, 2, 3)


def write_finished_run(root: Path, mode: str, k: int, seed: int, epochs: int) -> None:
    """One completed run folder of ``epochs`` epochs whose validation error falls steadily."""
    folder = root / f"{mode}-k{k}-s{seed}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"mixing:\n  mode: {mode}\n")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- mixing={mode}\n- mixing.k={k}\n")
    curve = [50.0 - epoch / 10 - k / 100 - seed / 1000 for epoch in range(epochs)]
    with open(folder / "metrics.jsonl", "w") as metrics:
        for epoch, err in enumerate(curve, start=1):
            line = {"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "val_loss": 0.5,
                    "val_top1_err": err, "val_top5_err": err / 5, "epoch_seconds": 1.0,
                    "images_per_second": 100.0}  # fmt: skip
            metrics.write(json.dumps(line) + "\n")
    results = {
        "status": "completed", "epochs_completed": epochs, "epochs": epochs,
        "top1_err_last": curve[-1], "top1_err_best": min(curve), "top5_err_last": curve[-1] / 5,
        "top5_err_best": min(curve) / 5, "val_loss_last": 0.5, "wall_seconds": float(epochs),
        "num_params": 1000, "error": None, "run_name": folder.name,
        "config": {
            "dataset": "cifar100", "model": "pyramidnet110",
            "mixing": {"mode": mode, "k": k, "alpha": 0.2, "prob": 1.0, "per_sample": True},
            "seed": seed, "optimizer": "sgd", "lr": 0.25, "batch_size": 64, "epochs": epochs,
            "scheduler": "multistep", "experiment": None, "sweep": "k_ablation",
        },
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))


def run_report_benchmark(epochs: int = 300, seeds: tuple[int, ...] = SEEDS) -> dict[str, float]:
    """Seconds for ``dcutmix-report`` (table, CSV and every plot) on len(MODES) x len(KS) x seeds
    runs of ``epochs`` epochs, written to a temporary folder and removed afterwards."""
    from dcutmix.report import main as report_main

    with tempfile.TemporaryDirectory() as scratch:
        sweep = Path(scratch) / "sweep"
        for mode in MODES:
            for k in KS:
                for seed in seeds:
                    write_finished_run(sweep, mode, k, seed, epochs)
        runs = len(MODES) * len(KS) * len(seeds)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the report's own table, not a figure
            code = report_main([str(sweep), "--out", str(Path(scratch) / "report")])
        seconds = time.perf_counter() - started
        figures = len(list((Path(scratch) / "report").glob("*.png")))
    if code != 0:
        raise RuntimeError(f"dcutmix-report exited {code} on the benchmark's runs")
    return {"runs": runs, "epochs": epochs, "figures": figures, "report_seconds": seconds}
