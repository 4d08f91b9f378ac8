"""The override check for every Hydra sweep syntax, the run's objective, and ``dcutmix-sweep``."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dcutmix.config import CONF_DIR, REPO_ROOT, register
from dcutmix.store.files import atomic_write_json
from dcutmix.sweep.cli import main as sweep_main
from dcutmix.sweep.objective import WORST, objective_value
from dcutmix.sweep.points import FastComposer
from dcutmix.sweep.precheck import precheck

register()

QUICK = ["logger=none", "trainer.device=cpu", "trainer.epochs=1", "trainer.limit_train_batches=5"]


def _write_results(run_dir: Path, **results) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "results.json", results)
    return run_dir


@pytest.mark.parametrize(
    "overrides",
    [
        ["hydra/sweeper=dcutmix_optuna", "mixing.alpha=interval(0.1,2.0)"],
        ["hydra/sweeper=dcutmix_optuna", "mixing.alpha=tag(log, interval(0.05, 5))"],
        [
            "hydra/sweeper=dcutmix_optuna",
            "mixing.k=int(interval(2, 8))",
            "trainer.seed=choice(1, 2)",
        ],
        ["+sweep=alpha_search"],
        ["+sweep=alpha_search", "objective=val_loss_last"],
        ["mixing=glob(d*)", "trainer.seed=shuffle(1,2,3)", "optimizer.lr=sort(0.2,0.1)"],
        ["mixing=dcutmix", "mixing.k=range(2,5)", "mixing.alpha=choice(0.2,1.0)"],
        ["mixing=glob(*,exclude=[naive_*])"],
    ],
)
def test_every_hydra_sweep_syntax_passes_the_override_check(overrides):
    assert precheck(overrides) is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["mixing.alpha=interval(0.1,2.0)"],
            "mixing.alpha=interval(0.1,2.0): an interval is searched",
        ),
        (["hydra/sweeper=dcutmix_optuna", "mixing.alpha=interval(2.0,0.1)"], "start below its end"),
        (
            ["hydra/sweeper=dcutmix_optuna", "mixing.alpha=tag(log, interval(0, 1))"],
            "log-scale interval",
        ),
        (["hydra/sweeper=dcutmix_optuna", "mixing.k=interval(2, 8)"], "mixing.k: Value '2.0'"),
        (["hydra/sweeper=dcutmix_optuna", "mixing.alpha=interval(-1.0, 1.0)"], "mixing.alpha"),
        (["mixing=glob(zz*)"], "mixing: glob(zz*) matches no option of the config group mixing"),
        (["objective=top5_err"], "objective: 'top5_err' is not one of top1_err_last"),
        (["+sweep=alpha_search", "hydra.sweeper.direction=maximize"], "must minimize"),
        (["mixing.k=range(2,5)", "mixing=mixup"], "mixing.k"),
    ],
)
def test_bad_sweeps_are_one_line_naming_the_key(overrides, expected):
    problem = precheck(overrides)
    assert problem is not None and expected in problem
    assert "\n" not in problem


def test_the_objective_is_read_from_a_completed_run_and_worst_otherwise(tmp_path):
    done = _write_results(
        tmp_path / "done", status="completed", top1_err_last=12.5, top1_err_best=10.0
    )
    assert objective_value(done, "top1_err_last", 0) == 12.5
    assert objective_value(done, "top1_err_best", 0) == 10.0
    assert objective_value(done, "top1_err_last", 2) == WORST == math.inf
    assert objective_value(done, "val_loss_last", 0) == WORST  # no value recorded
    diverged = _write_results(tmp_path / "div", status="diverged", top1_err_last=90.0)
    assert objective_value(diverged, "top1_err_last", 0) == WORST
    assert objective_value(tmp_path / "missing", "top1_err_last", 0) == WORST


def _composed(overrides: list[str]) -> str:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return OmegaConf.to_yaml(compose("train", overrides=overrides))
    finally:
        GlobalHydra.instance().clear()


def test_the_plans_fast_composition_equals_hydras_point_after_point():
    points = [
        ["mixing=dmixup", "mixing.k=4", "trainer.seed=2", "+trainer.extra=1"],
        ["mixing=dmixup", "mixing.k=6", "scheduler.milestones=[2,3]"],
        ["mixing=dmixup", "run_name=fixed"],
        ["mixing=dmixup"],
        ["+sweep=k_ablation", "mixing=cutmix", "mixing.k=2", "optimizer.lr=0.3"],
    ]
    expected = [_composed(point) for point in points]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composer = FastComposer()
            for point, want in zip(points, expected, strict=True):
                with composer.point(point) as cfg:
                    assert OmegaConf.to_yaml(cfg) == want, point
    finally:
        GlobalHydra.instance().clear()


def test_plan_lists_each_job_with_the_folder_a_sweep_gives_it_and_the_totals(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _write_results(
        sweep / "dcutmix-k5-a0.2-devicecpu-epochs1-limit_train_batches5-s2", status="completed"
    )
    _write_results(sweep / "none-devicecpu-epochs1-limit_train_batches5-s1", status="failed")
    args = ["mixing=none,dcutmix", "trainer.seed=1,2", *QUICK, f"hydra.sweep.dir={sweep}"]
    assert sweep_main(["plan", "--seconds-per-epoch", "90", "-m", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {line.split()[0] for line in lines[:4]}
    # The same names test_sweeps.py finds on disk after running this sweep.
    assert names == {
        f"{mode}-devicecpu-epochs1-limit_train_batches5-s{seed}"
        for mode in ("none", "dcutmix-k5-a0.2")
        for seed in (1, 2)
    }
    assert [line.endswith("[complete]") for line in lines[:4]].count(True) == 1
    assert lines[4] == f"1 of 4 already complete in {sweep}"
    # digits: 1437 training images, 5 batches of 64 per epoch, one epoch per job
    assert lines[5] == (
        "4 jobs: 4 epochs, 1,280 training images in all (epochs x images); "
        "0.1 GPU-hours at 90 s per epoch"
    )


def test_plan_of_a_search_prints_its_space_and_trials(capsys):
    assert sweep_main(["plan", "+sweep=alpha_search", "hydra.sweeper.n_trials=7", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "search: OptunaSweeper TPESampler, 7 trials, 2 at once" in out
    assert "mixing.alpha = tag(log, interval(0.05, 5.0))" in out
    assert out.splitlines()[-1].startswith("7 jobs: 7 epochs")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "mixing=glob(zz*)"], "matches no option"),
        (["plan", "+sweep=alpha_search", "hydra.sweeper.n_trials=0"], "0 trials"),
        (["plan", "mixing.k=1,2"], "mixing.k"),
        (["plan", "objective=accuracy"], "objective: 'accuracy'"),
        (["plan", "--seconds-per-epoch", "-3", "mixing=none"], "--seconds-per-epoch"),
        (["plan", "mixing=dcutmixx"], "mixing=dcutmixx: no such mixing option"),
    ],
)
def test_plan_refuses_bad_input_in_one_line(args, expected, capsys):
    assert sweep_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_status_and_resume_refuse_a_folder_that_is_no_sweep(tmp_path, capsys):
    for command in ("status", "resume"):
        assert sweep_main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"FOLDER: {tmp_path} is no sweep" in err and err.count("\n") == 1
    assert sweep_main(["status", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_resume_refuses_a_sweep_whose_frozen_code_is_gone(tmp_path, capsys):
    atomic_write_json(
        tmp_path / "sweep.json",
        {
            "name": "adhoc",
            "command": ["-m", "mixing=none,dcutmix", "hydra/launcher=local"],
            "launcher": "hydra_plugins.dcutmix_launcher.FrozenLocalLauncher",
        },
    )
    assert sweep_main(["resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "frozen code" in err and "is gone" in err and err.count("\n") == 1


def test_status_counts_each_state_and_names_the_jobs_that_need_a_person(tmp_path, capsys):
    atomic_write_json(tmp_path / "sweep.json", {"name": "k_ablation", "command": ["-m"]})
    _write_results(tmp_path / "a", status="completed", run_name="a")
    _write_results(tmp_path / "b", status="completed", run_name="b")
    _write_results(tmp_path / "c", status="failed", run_name="c", error="ValueError: boom")
    _write_results(tmp_path / "d", status="diverged", run_name="d", error="non-finite loss")
    # A run whose process on this host is gone is unfinished, however recent its last write.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _write_results(
        tmp_path / "e",
        status="running",
        run_name="e",
        pid=int(gone.stdout),
        hostname=os.uname().nodename,
    )
    assert sweep_main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    states = {
        line.split()[0]: int(line.split()[1])
        for line in out[1:]
        if not line.startswith(" ") and line.split()[1].isdigit()
    }
    assert states == {"completed": 2, "failed": 1, "diverged": 1, "unfinished": 1}
    needing = [line for line in out if line.startswith("  needs a person: ")]
    assert [line.split()[3] for line in needing] == ["c", "d", "e"]
    assert "ValueError: boom" in needing[0]
    assert out[-1].startswith("3 jobs need a person")


def _run(command: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**env, **env_extra},
        cwd=REPO_ROOT,
        timeout=300,
    )


@pytest.mark.slow
def test_only_hydra_full_error_1_turns_the_override_check_off():
    command = [sys.executable, "-m", "dcutmix.train", "mixing.kk=3", *QUICK]
    checked = _run(command, {"HYDRA_FULL_ERROR": "0"})
    assert checked.returncode == 2
    assert checked.stderr.startswith("error: mixing.kk: unknown key")
    assert "Traceback" not in checked.stderr
    full = _run(command, {"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr
