"""DistributedDataParallel on CPU: two gloo processes through torchrun agree with one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.runs import cli, read_metrics, read_results

# Same global batch (64) in both runs; each of two ranks trains on its half. No mixing and a
# fixed data order make the gradients the same up to batch-norm statistics, which each rank
# computes over its own half: hence a tolerance rather than equality.
RUN = [
    "mixing=none",
    "trainer.epochs=4",
    "trainer.batch_size=64",
    "optimizer.lr=0.05",
    "logger=none",
    "trainer.device=cpu",
    "trainer.seed=5",
]
LOSS_TOLERANCE = 0.10  # nats plus 10% of the loss: mean training loss, every epoch
ERROR_TOLERANCE = 5.0  # points of validation top-1 error after the last epoch


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_gloo_processes_agree_with_one(tmp_path):
    single = tmp_path / "single"
    result = cli([*RUN, f"hydra.run.dir={single}"])
    assert result.returncode == 0, result.stderr

    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            *_torchrun(),
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "dcutmix.train",
            *RUN,
            f"hydra.run.dir={ddp}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(ddp)
    assert results["status"] == "completed" and results["world_size"] == 2
    one, two = read_metrics(single), read_metrics(ddp)
    assert [r["epoch"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= LOSS_TOLERANCE * (1 + a["train_loss"]), (
            a,
            b,
        )
    assert abs(one[-1]["val_top1_err"] - two[-1]["val_top1_err"]) <= ERROR_TOLERANCE, (
        one[-1],
        two[-1],
    )
    # evaluation covers the whole validation set once: reduced over ranks, not per rank
    assert read_results(single)["config"] == results["config"]
    # only rank 0 wrote: one metrics line per epoch, one results file
    assert len((ddp / "metrics.jsonl").read_text().splitlines()) == 4
