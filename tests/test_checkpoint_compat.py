"""A checkpoint written by an earlier version of the trainer still resumes, to the same figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dcutmix.run.checkpoint import CHECKPOINT_FORMAT
from tests.helpers.runs import read_metrics, read_results

DATA = Path(__file__).parent / "data" / "checkpoint_v1"
OVERRIDES = ["mixing=mixup", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2"]


def test_the_committed_checkpoint_is_a_training_checkpoint_of_epoch_1():
    state = torch.load(DATA / "last.pt", weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT
    assert state["epoch"] == 1
    assert [row["epoch"] for row in state["history"]] == [1]


def test_a_checkpoint_from_the_earlier_trainer_resumes_to_its_figures(train_in_process, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(DATA / "last.pt", run / "checkpoints" / "last.pt")

    code, _ = train_in_process([*OVERRIDES, "trainer.epochs=2"], run)

    assert code == 0
    results = read_results(run)
    assert (results["status"], results["epochs_completed"]) == ("completed", 2)
    expected = json.loads((DATA / "metrics_after_resume.json").read_text())
    got = read_metrics(run)
    assert got[0] == expected[0]  # epoch 1 is the checkpoint's own history, as it was written
    assert got[1]["epoch"] == 2
    for key in ("lr", "train_loss", "val_loss"):
        assert got[1][key] == pytest.approx(expected[1][key], rel=1e-3), key
    # Two of the 128 validation images may flip on another CPU's arithmetic.
    for key in ("val_top1_err", "val_top5_err"):
        assert got[1][key] == pytest.approx(expected[1][key], abs=1.6), key
