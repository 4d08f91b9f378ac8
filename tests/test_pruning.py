"""Pruned searches: the pruner settings, the journal a job reaches, and real sweeps that prune.

The sweeps use a pruner with known thresholds (Optuna's ThresholdPruner, upper=75 from epoch 2)
and a grid of two learning rates on digits: lr=0.2 is below 60% top-1 error after two epochs,
lr=1e-5 is still at about 90%, so the second trial is pruned at epoch 2, every time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from dcutmix.config import REPO_ROOT
from dcutmix.errors import InputError
from dcutmix.run.trial import SearchTrial, prune_now
from dcutmix.store.journal import OWNER_ATTR, PRUNER_ATTR, check_journal, open_journal
from dcutmix.sweep.precheck import precheck
from dcutmix.sweep.pruners import epoch_budget, pruner_spec
from dcutmix.sweep.status import report_status
from tests.helpers.runs import cli, read_results
from tests.helpers.wandb_files import read_wandb_run

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
QUICK = ["logger=none", "trainer.device=cpu"]
# Two trials, one pruned at epoch 2 by known thresholds (see the module's docstring).
PRUNED_GRID = [
    "hydra/sweeper=dcutmix_optuna",
    "hydra/sweeper/sampler=grid",
    "hydra.sweeper.n_jobs=1",
    "optimizer.lr=0.00001,0.2",
    "mixing=none",
    "hydra.sweeper.pruner.name=threshold",
    "hydra.sweeper.pruner.upper=75",
    "hydra.sweeper.pruner.n_warmup_steps=2",
    *QUICK,
    "trainer.epochs=3",
    "trainer.limit_train_batches=12",
]


class _OneProcess:
    def share(self, value):
        return value


# The settings and their checks.


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"name": "asha"}, "hydra.sweeper.pruner.name"),
        ({"name": "median", "reduction_factor": 3}, "hydra.sweeper.pruner.reduction_factor"),
        ({"name": "hyperband", "reduction_factor": 1}, "hydra.sweeper.pruner.reduction_factor"),
        ({"name": "median", "n_warmup_steps": -1}, "hydra.sweeper.pruner.n_warmup_steps"),
        ({"name": "threshold", "upper": "high"}, "hydra.sweeper.pruner.upper"),
    ],
)
def test_an_unknown_pruner_or_bad_setting_names_its_key(node, key):
    with pytest.raises(InputError) as caught:
        pruner_spec(node)
    assert caught.value.key == key


def test_settings_left_null_take_optunas_defaults():
    assert pruner_spec({"name": "none", "upper": None}) is None
    spec = pruner_spec({"name": "median", "n_warmup_steps": 2, "n_startup_trials": None})
    assert spec == {"name": "median", "class": "MedianPruner", "kwargs": {"n_warmup_steps": 2}}


def test_the_plan_expects_successive_halving_and_hyperband_to_save_epochs():
    halving = epoch_budget(pruner_spec({"name": "successive_halving", "min_resource": 1}), 10, 64)
    # rungs at 1, 4, 16 epochs; a quarter of the trials go on past each
    assert halving.rungs == (1, 4, 16) and halving.worst == 640
    assert halving.expected == pytest.approx(10 * (1 + 3 / 4 + 12 / 16 + 48 / 64))
    band = epoch_budget(pruner_spec({"name": "hyperband"}), 10, 27)
    assert band.rungs == (1, 3, 9) and halving.expected < band.expected < band.worst
    assert epoch_budget(pruner_spec({"name": "median"}), 10, 27).expected is None


def test_a_file_that_is_no_optuna_journal_is_refused(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("alpha=0.2 was good\n")
    with pytest.raises(InputError, match="is not an Optuna journal"):
        check_journal(other)
    check_journal(tmp_path / "new.journal")  # a new journal is fine


# The job's side: report, ask, and find its values again after a restart.


def _study(path: Path, spec: dict | None) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=open_journal(path))
    study.set_user_attr(PRUNER_ATTR, spec)
    return study


def _settings(path: Path, number: int):
    return OmegaConf.create({"number": number, "journal": str(path), "study": "s"})


def test_a_trial_reports_each_epoch_once_and_stops_at_the_known_threshold(tmp_path):
    path = tmp_path / "optuna.journal"
    spec = pruner_spec({"name": "threshold", "upper": 50, "n_warmup_steps": 2})
    study = _study(path, spec)
    number = study.ask().number
    trial = SearchTrial.open(_settings(path, number))
    assert not prune_now(trial, _OneProcess(), 80.0, 1)  # above the threshold, but warming up
    assert prune_now(trial, _OneProcess(), 70.0, 2)
    # A job run again after a kill opens the same trial with what it reported.
    again = SearchTrial.open(_settings(path, number))
    assert again.reported() == {1: 80.0, 2: 70.0}
    again.report(10.0, 2)  # an epoch already reported keeps its value
    assert again.reported()[2] == 70.0
    history = [
        {"epoch": e, "val_top1_err": v, "val_top5_err": 1.0, "val_loss": 1.0}
        for e, v in ((1, 80.0), (2, 70.0), (3, 60.0))
    ]
    again.catch_up(history, "top1_err_last")
    assert again.reported() == {1: 80.0, 2: 70.0, 3: 60.0}
    assert SearchTrial.open(OmegaConf.create({"number": None})) is None


# Bad input: one line, exit 2, nothing started.


def _owned_journal(folder: Path, owner: dict) -> Path:
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="alpha_search", storage=open_journal(folder / "j"))
    study.set_user_attr(OWNER_ATTR, owner)
    return folder / "j"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["+sweep=alpha_search", "hydra.sweeper.pruner.name=asha"], "is not one of none, median"),
        (["mixing.k=2,3", "hydra.sweeper.pruner.name=median"], "BasicSweeper does not search"),
        (
            [
                "+sweep=alpha_search",
                "hydra.sweeper.pruner.name=median",
                "hydra.sweeper.pruner.min_resource=2",
            ],
            "the median pruner takes",
        ),
        (["+sweep=alpha_search", "hydra/sweeper/sampler=grid"], "the grid sampler enumerates"),
    ],
)
def test_bad_pruner_settings_are_refused_before_anything_runs(args, expected):
    problem = precheck(args)
    assert problem is not None and expected in problem and "\n" not in problem


def test_a_storage_that_is_no_journal_or_another_sweeps_is_refused(tmp_path):
    other = tmp_path / "results.csv"
    other.write_text("a,b\n1,2\n")
    problem = precheck(["+sweep=alpha_search", f"hydra.sweeper.storage={other}"])
    assert problem.startswith("hydra.sweeper.storage: ") and "not an Optuna journal" in problem
    journal = _owned_journal(tmp_path / "first", {"folder": "/x", "search": ["mixing.k=2"]})
    problem = precheck(
        ["+sweep=alpha_search", f"hydra.sweeper.storage={journal}", f"hydra.sweep.dir={tmp_path}"]
    )
    assert "belongs to another sweep (folder, search" in problem


@pytest.mark.slow
def test_the_command_line_ends_in_one_line_and_exit_2_with_nothing_written(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(
        ["-m", "+sweep=alpha_search", "hydra.sweeper.pruner.name=asha", f"hydra.sweep.dir={sweep}"]
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hydra.sweeper.pruner.name: 'asha' is not one of none, median, "
        "successive_halving, hyperband, threshold"
    ]
    assert not sweep.exists()


# Real sweeps.


def _trials(sweep: Path, name: str = "adhoc") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=open_journal(sweep / "optuna.journal"))
    return sorted(study.get_trials(), key=lambda t: t.number)


def check_pruned_sweep(sweep: Path) -> None:
    """One trial completed, the other pruned at epoch 2 and told so; the best is the completed one."""
    trials = {t.params["optimizer.lr"]: t for t in _trials(sweep)}
    assert trials[0.2].state == optuna.trial.TrialState.COMPLETE
    assert trials[0.00001].state == optuna.trial.TrialState.PRUNED
    assert sorted(trials[0.00001].intermediate_values) == [1, 2]
    runs = {read_results(p)["config"]["lr"]: p for p in sweep.glob("*trial*")}
    pruned = read_results(runs[0.00001])
    assert pruned["status"] == "pruned" and pruned["pruned_epoch"] == 2
    assert pruned["epochs_completed"] == 2 and pruned["pruned_value"] > 75
    assert pruned["pruned_value"] == trials[0.00001].intermediate_values[2]
    assert (runs[0.00001] / "checkpoints" / "last.pt").is_file()
    completed = read_results(runs[0.2])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == completed["top1_err_last"] == trials[0.2].value
    assert best["best_params"] == {"optimizer.lr": 0.2}
    assert best["trials"] == {"complete": 1, "pruned": 1}


@pytest.mark.slow
def test_a_pruned_search_on_the_basic_launcher_and_its_rerun(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = ["-m", *PRUNED_GRID, f"hydra.sweep.dir={sweep}"]
    result = cli(args, env=ONE_THREAD, timeout=600)
    # a pruned trial is no failure: the sweep exits 0 and lists it
    assert result.returncode == 0, result.stderr
    assert "2 jobs: 1 completed, 1 pruned" in result.stderr
    check_pruned_sweep(sweep)
    assert report_status(sweep) == 0
    out = capsys.readouterr().out
    assert "2 run folders of 2 planned" in out and "pruned          1" in out
    # A rerun reopens the journal: both trials are finished, so nothing is trained again.
    pruned_ckpt = next(sweep.glob("*lr1e-05*")) / "checkpoints" / "last.pt"
    mtime = pruned_ckpt.stat().st_mtime_ns
    again = cli(args, env=ONE_THREAD, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "Launching" not in again.stderr and pruned_ckpt.stat().st_mtime_ns == mtime
    assert len(_trials(sweep)) == 2


@pytest.mark.slow
def test_a_pruned_search_on_the_local_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    result = cli(
        ["-m", *PRUNED_GRID, "hydra/launcher=local", f"hydra.sweep.dir={sweep}"],
        env=ONE_THREAD,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    check_pruned_sweep(sweep)


def _epochs(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


@pytest.mark.slow
def test_a_trial_killed_mid_search_resumes_with_its_reported_values(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m", "+sweep=alpha_search", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner.name=median", *QUICK, "trainer.epochs=4",
        "trainer.limit_train_batches=8", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dcutmix.train", *args], cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not [run for run in sweep.glob("*trial0*") if _epochs(run) >= 2]:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    first = next(sweep.glob("*trial0*"))
    assert read_results(first)["status"] == "interrupted", stderr
    before = _trials(sweep, "alpha_search")[0]
    assert before.state == optuna.trial.TrialState.RUNNING
    assert len(before.intermediate_values) >= 2 and not list(sweep.glob("*trial1*"))

    resumed = subprocess.run(
        [sys.executable, "-m", "dcutmix.sweep.cli", "resume", str(sweep)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    trials = _trials(sweep, "alpha_search")
    assert [t.number for t in trials] == [0, 1]
    after = trials[0]
    assert after.state == optuna.trial.TrialState.COMPLETE  # the first trial is never pruned
    assert sorted(after.intermediate_values) == [1, 2, 3, 4]
    for epoch, value in before.intermediate_values.items():
        assert after.intermediate_values[epoch] == value
    assert [json.loads(line)["epoch"] for line in (first / "metrics.jsonl").open()] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_pruned_trial_ends_its_wandb_run_with_its_own_state(tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["logger=wandb" if arg == "logger=none" else arg for arg in PRUNED_GRID]
    result = cli(
        ["-m", *grid, "logger.mode=offline", f"hydra.sweep.dir={sweep}"],
        env=ONE_THREAD,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    pruned = read_wandb_run(next(sweep.glob("*lr1e-05*")))
    # not a failure (exit code 0), not a finished run either: its own status and tag
    assert pruned["exit_code"] == 0
    assert pruned["summary"]["status"] == "pruned" and "pruned" in pruned["run"]["tags"]
    completed = read_wandb_run(next(sweep.glob("*lr0.2*")))
    assert completed["exit_code"] == 0 and completed["summary"]["status"] == "completed"
    assert "pruned" not in completed["run"]["tags"]
