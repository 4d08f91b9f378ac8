"""The engine on its own: schedules, non-finite losses, and the diverged status end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dcutmix.config import REPO_ROOT, resolve_milestones
from dcutmix.mixing import build_mixer
from dcutmix.run.engine import Diverged, Engine, EpochState, LRSchedule
from dcutmix.run.seeding import derived_seed
from tests.helpers.runs import read_metrics, read_results


def test_multistep_schedule_uses_fractions_of_the_run():
    milestones = resolve_milestones([0.75, 0.9], 300)
    assert milestones == [225, 270]
    schedule = LRSchedule(
        0.25, steps_per_epoch=10, epochs=300, name="multistep", milestones=milestones
    )
    assert schedule.lr_at(0) == 0.25
    assert schedule.lr_at(224 * 10 + 9) == 0.25  # last step of epoch 225
    assert schedule.lr_at(225 * 10) == pytest.approx(0.025)  # first step of epoch 226
    assert schedule.lr_at(270 * 10) == pytest.approx(0.0025)
    assert resolve_milestones([150, 225], 300) == [150, 225]


def test_cosine_schedule_with_warmup():
    schedule = LRSchedule(
        1.0, steps_per_epoch=10, epochs=10, name="cosine", warmup_epochs=1, min_lr=0.1
    )
    assert schedule.lr_at(0) == pytest.approx(0.1)
    assert schedule.lr_at(9) == pytest.approx(1.0)
    assert schedule.lr_at(10) == pytest.approx(1.0)
    assert schedule.lr_at(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule.lr_at(99) > 0.1 and schedule.lr_at(100) == pytest.approx(0.1)


def test_derived_seeds_differ_when_any_part_differs():
    base = (7, 3, 11, 0, 1)  # seed, epoch, step, rank, purpose
    seed = derived_seed(*base)
    assert 0 <= seed < 2**63
    for i in range(len(base)):
        changed = list(base)
        changed[i] += 1
        assert derived_seed(*changed) != seed, f"part {i} is ignored"
    assert derived_seed(3, 7, 11, 0, 1) != seed  # the parts' order counts
    assert derived_seed(*base, 0) != seed  # and their number
    assert len({derived_seed(0, e, s) for e in range(5) for s in range(50)}) == 250


def test_derived_seeds_are_the_same_in_another_process():
    # A seed resumed in a new process (or computed on another rank) must be the same number:
    # nothing like Python's per-process hash() may enter it.
    here = [derived_seed(0, e, s, 1) for e in range(3) for s in range(3)]
    there = subprocess.run(
        [sys.executable, "-c",
         "from dcutmix.run.seeding import derived_seed; "
         "print([derived_seed(0, e, s, 1) for e in range(3) for s in range(3)])"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "random"},
    ).stdout  # fmt: skip
    assert there.strip() == str(here)


def _engine(policy: str) -> Engine:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Engine(
        model=model,
        optimizer=optimizer,
        schedule=LRSchedule(0.1, 4, 1, "constant"),
        mixer=build_mixer("mixup", num_classes=3),
        device=torch.device("cpu"),
        seed=0,
        on_nonfinite=policy,
        progress=False,
    )


def _batches(bad_step: int):
    for step in range(4):
        images = torch.rand(8, 3, 4, 4)
        if step == bad_step:
            images[0, 0, 0, 0] = float("nan")
        yield images, torch.randint(0, 3, (8,))


def test_nonfinite_loss_stops_with_epoch_and_step():
    engine = _engine("stop")
    with pytest.raises(Diverged) as info:
        engine.train_epoch(_batches(bad_step=2), epoch=3, steps=4, state=EpochState())
    assert (info.value.epoch, info.value.step) == (3, 2)


def test_nonfinite_loss_can_skip_the_batch():
    engine = _engine("skip")
    state = engine.train_epoch(_batches(bad_step=1), epoch=1, steps=4, state=EpochState())
    assert state.skipped == 1 and state.step == 4 and state.samples == 24
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    assert math.isfinite(state.loss_sum)


def test_a_diverging_run_ends_with_status_diverged(train_in_process, tmp_path):
    code, run = train_in_process(
        ["optimizer.lr=1e12", "trainer.epochs=3", "trainer.log_every=1"], tmp_path / "run"
    )
    assert code != 0
    results = read_results(run)
    assert results["status"] == "diverged"
    assert results["diverged_epoch"] == 1 and results["diverged_step"] >= 0
    assert "non-finite training loss at epoch 1" in results["error"]
    metrics = run / "metrics.jsonl"
    assert not metrics.exists() or all(
        math.isfinite(v) for row in read_metrics(run) for v in row.values() if isinstance(v, float)
    )
