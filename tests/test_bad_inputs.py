"""A table of bad inputs and the one line each must produce, before anything runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcutmix.config import REPO_ROOT
from dcutmix.errors import ConfigError
from dcutmix.sweep.precheck import precheck
from tests.helpers.bad_config import SEMANTIC_CASES
from tests.helpers.provided import require
from tests.helpers.runs import cli, read_results

# (command-line overrides, the start of the message); each is checked by composing and validating
# every point of its grid, exactly as `dcutmix-train` does before it launches anything.
CONFIG_CASES = [
    (
        ["mixing=dcutmixx"],
        "mixing=dcutmixx: no such mixing option; choose one of cutmix, cutout, dcutmix",
    ),
    (["model=resnet50"], "model=resnet50: no such model option; choose one of preactresnet18"),
    (["dataset=imagenet"], "dataset=imagenet: no such dataset option; choose one of"),
    (["+sweep=k_ablatoin"], "sweep=k_ablatoin: no such sweep option; choose one of alpha_ablation"),
    (["experiment=c100_pyramidnet110"], "experiment=c100_pyramidnet110: no such experiment option"),
    (
        ["mixing.kk=3"],
        "mixing.kk: unknown key; valid keys under mixing: mode, k, alpha, prob, per_sample",
    ),
    (["trainer.epoch=3"], "trainer.epoch: unknown key; valid keys under trainer: epochs"),
    (["learning_rate=0.1"], "learning_rate: unknown key; valid keys under the top level"),
    (["mixing.k=five"], "mixing.k: Value 'five' of type 'str' could not be converted to Integer"),
    (
        ["trainer.epochs=1.5"],
        "trainer.epochs: Value '1.5' of type 'float' could not be converted to Integer",
    ),
    (
        ["optimizer.lr=fast"],
        "optimizer.lr: Value 'fast' of type 'str' could not be converted to Float",
    ),
    (
        ["optimizer=rmsprop"],
        "optimizer=rmsprop: no such optimizer option; choose one of adamw, sgd",
    ),
    (["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite: 'ignore' is not one of stop, skip"),
    (
        ["mixing=dcutmix,mixup", "mixing.alpha=0.5,0"],
        "mixing.alpha: must be a finite number > 0, got 0.0",
    ),
    (["+sweep=demo", "mixing.k=1"], "mixing.k:"),
    (
        ["model=pyramidnet110", "model.stochastic_depth=1.0"],
        "model.stochastic_depth: 1.0 is not valid; use the last block's survival probability in [0, 1)",
    ),
    (["model=pyramidnet200", "model.stochastic_depth=-0.5"], "model.stochastic_depth: -0.5 is not"),
    (
        ["model=pyramidnet110", "model.dropblock={keep_prob:0}"],
        "model.dropblock.keep_prob: 0 is not valid; use a number in (0, 1]",
    ),
    (
        ["model=pyramidnet110", "model.dropblock={block_size:-2}"],
        "model.dropblock.block_size: -2 is not valid; use a positive integer",
    ),
    (
        ["model=pyramidnet110", "model.dropblock={size:3}"],
        "model.dropblock.size: unknown key; valid keys: keep_prob, block_size",
    ),
    (
        ["mixing=manifold_mixup", "mixing.layers=[0,5]"],
        "mixing.layers: tiny has no hidden layer 5; valid: 0, 1, 2, 3, 4 (0 = the input)",
    ),
    (
        ["mixing=manifold_mixup", "model=pyramidnet110", "mixing.layers=[4]"],
        "mixing.layers: pyramidnet110 has no hidden layer 4; valid: 0, 1, 2, 3",
    ),
    (["mixing=manifold_mixup", "mixing.layers=[]"], "mixing.layers: expected a non-empty list"),
    (["mixing=manifold_mixup", "mixing.alpha=0"], "mixing.alpha: must be a finite number > 0"),
    (["mixing=mixup", "mixing.layers=[1]"], "mixing.layers: mixup mixes images, not hidden layers"),
    (["mixing.k=[1,2"], "command line: cannot parse an override"),
]


ALL_CASES = CONFIG_CASES + SEMANTIC_CASES


@pytest.mark.parametrize(
    ("overrides", "message"), ALL_CASES, ids=[" ".join(c[0]) for c in ALL_CASES]
)
def test_bad_config_values(overrides, message):
    problem = precheck(["trainer.device=cpu", *overrides])
    assert problem is not None and problem.startswith(message), problem
    assert "\n" not in problem


def test_cuda_requested_without_cuda(monkeypatch):
    # Runs on a CUDA machine too, as one where torch finds no GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precheck(["trainer.device=cuda"]).startswith(
        "trainer.device: cuda was requested but CUDA is not available here; use auto or cpu"
    )


def test_good_configs_pass_the_precheck():
    assert precheck([]) is None
    assert precheck(["+sweep=demo"]) is None
    assert precheck(["mixing=dcutmix,dmixup", "mixing.k=2,3,8"]) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mixing.k=1"], "error: mixing.k: dcutmix needs an integer k in [2, 64], got 1"),
        (
            ["mixing=cutout", "mixing.length=40"],
            "error: mixing.length: 40 is larger than the dataset's 32x32 images",
        ),
        (["mixing=fmix", "mixing.decay=0"], "error: mixing.decay: must be a finite number > 0"),
        (
            ["-m", "+sweep=demo", "mixing.alpha=0"],
            "error: mixing.alpha: must be a finite number > 0",
        ),
        (
            ["trainer.batch_size=x"],
            "error: trainer.batch_size: Value 'x' of type 'str' could not be converted",
        ),
        (
            ["dataset=fake", "model=pyramidnet110", "model.stochastic_depth=1.0"],
            "error: model.stochastic_depth: 1.0 is not valid",
        ),
        (
            ["dataset=fake", "model=pyramidnet110", "model.dropblock={keep_prob:1.5}"],
            "error: model.dropblock.keep_prob: 1.5 is not valid",
        ),
        (
            ["mixing=manifold_mixup", "mixing.layers=[0,7]"],
            "error: mixing.layers: tiny has no hidden layer 7",
        ),
    ],
)
def test_cli_prints_one_line_and_exits_2_before_anything_runs(tmp_path, args, message):
    result = cli(
        [*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def _error_lines(stderr: str) -> list[str]:
    """The one-line errors a command printed (its ``error: KEY: ...`` lines)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_missing_dataset_root_is_one_line(tmp_path):
    result = cli(
        [
            "dataset=cifar10",
            f"dataset.root={tmp_path / 'nowhere'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ]
    )
    assert result.returncode == 2
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: dataset.root:"), result.stderr
    assert "dataset.download=true" in lines[0]
    assert "Traceback" not in result.stderr


def test_damaged_checkpoint_for_evaluation_is_one_line(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    result = cli(
        ["eval_only=true", f"ckpt={bad}", f"hydra.run.dir={tmp_path / 'run'}", "logger=none"]
    )
    assert result.returncode == 2
    errors = _error_lines(result.stderr)
    assert errors and errors[0].startswith(f"error: ckpt: {bad} is damaged"), result.stderr
    assert "Traceback" not in result.stderr


def test_checkpoint_for_another_model_is_one_line(train_in_process, tmp_path):
    _, run = train_in_process(
        ["trainer.epochs=1", "trainer.limit_train_batches=1"], tmp_path / "tiny"
    )
    with pytest.raises(ConfigError, match=r"^ckpt: .*(missing|unexpected)"):
        train_in_process(
            ["model=resnet18", "eval_only=true", f"ckpt={run / 'checkpoints' / 'last.pt'}"],
            tmp_path / "eval",
        )


def _as_bound_by_permissions(command: list[str]) -> list[str]:
    """``command`` as a process that file permissions bind, even when the tests run as root.

    Root keeps its user id (the interpreter and the code may sit under root's own folders) but
    starts the command without the capabilities that override permissions, as setpriv does.
    """
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    require(
        "setpriv (util-linux), to test permissions as root",
        None if setpriv else "no setpriv on PATH; apt-get install util-linux",
    )
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *command]


def test_unwritable_output_folder_is_reported_before_training(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    command = [sys.executable, "-m", "dcutmix.train", f"hydra.run.dir={locked / 'run'}"]
    result = subprocess.run(
        _as_bound_by_permissions([*command, "logger=none"]),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
            "PYTHONDONTWRITEBYTECODE": "1",  # the unprivileged run may not write __pycache__
        },
    )
    assert result.returncode == 2, result.stderr
    assert _error_lines(result.stderr) == [
        f"error: hydra.run.dir: cannot write to {locked / 'run'}: no write permission on {locked}"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert list(locked.iterdir()) == []


def test_output_folder_blocked_by_a_file_is_reported(tmp_path, train_in_process):
    """A file where the run folder should be: nothing can be created there, whoever we are."""
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^hydra.run.dir: cannot write to"):
        train_in_process(["trainer.epochs=1"], blocker / "run")


@pytest.fixture
def small_mount(tmp_path):
    """Mount a 1 MiB tmpfs (read-only with ``small_mount("ro")``); skip where mounting is refused."""
    mounted: list[Path] = []

    def mount(*options: str) -> Path:
        point = tmp_path / f"mount{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(["size=1m", *options]), "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        require(
            "a tmpfs mount (root, in a container that allows mount)",
            None
            if done.returncode == 0
            else f"mount refused: {done.stderr.strip() or done.returncode}",
        )
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_read_only_file_system_is_reported_before_training(small_mount):
    read_only = small_mount("ro")
    result = cli([f"hydra.run.dir={read_only / 'run'}", "logger=none"])
    assert result.returncode == 2
    assert _error_lines(result.stderr) == [
        f"error: hydra.run.dir: cannot write to {read_only / 'run'}: {read_only} is on a "
        "read-only file system"
    ], result.stderr
    assert "Traceback" not in result.stderr


def test_full_disk_is_reported_before_training(small_mount):
    full = small_mount()
    result = cli([f"hydra.run.dir={full / 'run'}", "logger=none"])
    assert result.returncode == 2
    (line,) = _error_lines(result.stderr)
    assert line.startswith(f"error: hydra.run.dir: only 0 MiB free under {full / 'run'}; at least")
    assert not (full / "run" / "checkpoints").exists()
    assert not (full / "run" / "metrics.jsonl").exists()


def test_bad_input_on_an_existing_run_loses_nothing(train_in_process, tmp_path):
    _, run = train_in_process(
        ["trainer.epochs=1", "trainer.limit_train_batches=2"], tmp_path / "run"
    )
    before = {p: p.read_bytes() for p in Path(run).rglob("*") if p.is_file()}
    result = cli(["trainer.epochs=1", "mixing.alpha=-3", f"hydra.run.dir={run}"])
    assert result.returncode == 2
    after = {p: p.read_bytes() for p in Path(run).rglob("*") if p.is_file()}
    assert before == after
    assert read_results(run)["status"] == "completed"


def test_run_folder_under_a_file_is_one_line_before_anything_runs(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    result = cli([f"hydra.run.dir={blocker / 'run'}", "logger=none"])
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: hydra.run.dir: cannot create {blocker / 'run'}: {blocker} is a file, not a folder"
    )
