"""What `dcutmix-train` sends to W&B, read back from the real client's offline files."""

from __future__ import annotations

import pytest

from tests.helpers.runs import cli, read_metrics, read_results
from tests.helpers.wandb_files import read_wandb_parts, read_wandb_run

WANDB = [
    "logger=wandb",
    "logger.mode=offline",
    "trainer.limit_train_batches=3",
    "trainer.device=cpu",
]


def test_a_run_arrives_grouped_named_and_complete(train_in_process, tmp_path):
    code, run = train_in_process(
        [
            *WANDB,
            "mixing.k=4",
            "trainer.epochs=2",
            "sweep_name=k_ablation",
            "run_name=dcutmix-k4-a0.2-s0",
        ],
        tmp_path / "run",
    )
    assert code == 0
    record = read_wandb_run(run)
    assert record["run"]["group"] == "k_ablation"
    assert record["run"]["job_type"] == "dcutmix"
    assert record["run"]["display_name"] == "dcutmix-k4-a0.2-s0"
    config = record["run"]["config"]
    assert (
        config["mixing.k"],
        config["mixing.alpha"],
        config["model"],
        config["dataset"],
        config["seed"],
    ) == (
        4,
        0.2,
        "tiny",
        "digits",
        0,
    )
    assert config["num_params"] == read_results(run)["num_params"]
    assert "git_revision" in config
    metrics = read_metrics(run, drop_timing=False)
    history = [row for row in record["history"] if "val_top1_err" in row]
    assert [row["epoch"] for row in history] == [1, 2]
    for sent, truth in zip(history, metrics, strict=True):
        assert sent["val_top1_err"] == pytest.approx(truth["val_top1_err"])
        assert sent["train_loss"] == pytest.approx(truth["train_loss"])
    summary = record["summary"]
    results = read_results(run)
    assert summary["top1_err_best"] == pytest.approx(results["top1_err_best"])
    assert summary["top1_err_last"] == pytest.approx(results["top1_err_last"])
    assert summary["status"] == "completed"
    assert record["exit_code"] == 0


def test_a_resumed_run_continues_the_same_wandb_run(train_in_process, tmp_path):
    run = tmp_path / "run"
    train_in_process([*WANDB, "trainer.epochs=1"], run)
    first_id = (run / "wandb_run_id.txt").read_text().strip()
    # the same folder, more epochs: resumes from the checkpoint and from the same W&B run
    train_in_process([*WANDB, "trainer.epochs=3", "scheduler.milestones=[0.75]"], run)
    parts = read_wandb_parts(run)
    assert {part["run"]["run_id"] for part in parts} == {first_id}
    epochs = [row["epoch"] for part in parts for row in part["history"] if "val_top1_err" in row]
    assert epochs == [1, 2, 3]


def test_a_diverged_run_ends_with_a_nonzero_wandb_exit_code(train_in_process, tmp_path):
    code, run = train_in_process(
        [*WANDB, "optimizer.lr=1e12", "trainer.epochs=2", "trainer.log_every=1"], tmp_path / "run"
    )
    assert code != 0 and read_results(run)["status"] == "diverged"
    record = read_wandb_run(run)
    assert record["exit_code"] != 0
    assert record["summary"]["status"] == "diverged"


@pytest.mark.slow
def test_each_job_of_a_multirun_is_its_own_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(
        ["-m", "mixing=none,mixup", *WANDB, "trainer.epochs=1", f"hydra.sweep.dir={sweep}"]
    )
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").exists())
    assert len(jobs) == 2
    records = [read_wandb_run(job) for job in jobs]
    assert len({r["run"]["run_id"] for r in records}) == 2
    assert {r["run"]["job_type"] for r in records} == {"none", "mixup"}
    assert all(r["exit_code"] == 0 for r in records)
    assert {r["run"]["group"] for r in records} == {"adhoc"}
