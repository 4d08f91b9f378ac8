"""The W&B logger, checked against the files the real wandb client writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import wandb

from dcutmix.config import REPO_ROOT
from dcutmix.errors import ConfigError
from dcutmix.store.tracking import (
    LAST_STEP_FILE,
    RUN_ID_FILE,
    NullLogger,
    WandbLogger,
    _has_credentials,
    flatten_config,
    git_revision,
)
from tests.helpers.wandb_files import read_wandb_parts, read_wandb_run

NESTED_CONFIG = {
    "dataset": {"name": "digits", "root": "/data"},
    "mixing": {"mode": "dcutmix", "k": 5, "alpha": 0.2, "prob": 1.0},
    "trainer": {"seed": 1, "epochs": 4},
}


def _isolated_env(home: Path) -> dict[str, str]:
    """WANDB_* settings that keep wandb's files under ``home`` and away from real credentials."""
    return {
        "HOME": str(home),
        "NETRC": str(home / "netrc"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
        "WANDB_DIR": str(home / "wandb-dir"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


@pytest.fixture(scope="module", autouse=True)
def wandb_home(tmp_path_factory: pytest.TempPathFactory):
    """wandb reads its environment once per process, so set it and restart wandb around the module."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("WANDB_")]:
            patch.delenv(name)
        for name, value in _isolated_env(home).items():
            patch.setenv(name, value)
        wandb.teardown()
        yield home
        wandb.teardown()


def start(run_dir: Path, **overrides) -> WandbLogger | NullLogger:
    config = flatten_config(NESTED_CONFIG)
    config.update({"model": "tiny", "dataset": "digits", "seed": 1})
    kwargs = {
        "project": "dcutmix-tests",
        "entity": None,
        "group": "k_ablation",
        "name": "dcutmix-k5-a0.2-s1",
        "job_type": "dcutmix",
        "tags": ["digits", "tiny"],
        "config": config,
    }
    return WandbLogger.start(run_dir, **{**kwargs, **overrides})


def epoch_row(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "lr": 0.1,
        "train_loss": 2.0 / epoch,
        "val_loss": 1.5 / epoch,
        "val_top1_err": 40.0 / epoch,
        "val_top5_err": 5.0 / epoch,
    }


def logged_epochs(history: list[dict]) -> list[int]:
    return [row["_step"] for row in history]


SUMMARY = {"top1_err_last": 10.0, "top1_err_best": 9.5, "wall_seconds": 3.2, "epochs_completed": 3}


def test_three_epochs_are_recorded_with_run_metadata(tmp_path: Path, capsys) -> None:
    logger = start(tmp_path)
    assert isinstance(logger, WandbLogger)
    for epoch in (1, 2, 3):
        logger.log_epoch(epoch_row(epoch))
    logger.finish("completed", SUMMARY)

    record = read_wandb_run(tmp_path)
    run = record["run"]
    assert run["run_id"] == logger.run_id == (tmp_path / RUN_ID_FILE).read_text().strip()
    assert (run["project"], run["group"], run["job_type"], run["display_name"]) == (
        "dcutmix-tests",
        "k_ablation",
        "dcutmix",
        "dcutmix-k5-a0.2-s1",
    )
    assert run["tags"] == ["digits", "tiny"]
    config = run["config"]
    assert (config["mixing.k"], config["mixing.alpha"], config["mixing.mode"]) == (
        5,
        0.2,
        "dcutmix",
    )
    assert (config["model"], config["dataset"], config["seed"]) == ("tiny", "digits", 1)
    assert logged_epochs(record["history"]) == [1, 2, 3]
    for epoch, row in zip((1, 2, 3), record["history"], strict=True):
        assert {key: row[key] for key in epoch_row(epoch)} == pytest.approx(epoch_row(epoch))
    summary = record["summary"]
    assert {key: summary[key] for key in SUMMARY} == SUMMARY
    assert summary["status"] == "completed"
    assert record["exit_code"] == 0

    sync_lines = [line for line in capsys.readouterr().err.splitlines() if "wandb sync" in line]
    assert len(sync_lines) == 1
    assert Path(sync_lines[0].split("wandb sync ")[1]) == record["path"].parent


@pytest.mark.parametrize("status", ["failed", "diverged", "interrupted"])
def test_a_run_that_did_not_complete_exits_non_zero(tmp_path: Path, status: str) -> None:
    logger = start(tmp_path)
    logger.log_epoch(epoch_row(1))
    logger.finish(status, {"top1_err_last": None})

    record = read_wandb_run(tmp_path)
    assert record["exit_code"] not in (None, 0)
    assert record["summary"]["status"] == status


def test_second_start_in_a_run_folder_continues_the_same_run(tmp_path: Path) -> None:
    first = start(tmp_path)
    for epoch in (1, 2):
        first.log_epoch(epoch_row(epoch))
    first.finish("interrupted", {})

    # The requeued job restarts from its checkpoint at epoch 1 and so repeats epoch 2.
    second = start(tmp_path)
    for epoch in (2, 3, 4):
        second.log_epoch(epoch_row(epoch))
    second.finish("completed", {})

    assert second.run_id == first.run_id
    parts = read_wandb_parts(tmp_path)
    assert [part["run"]["run_id"] for part in parts] == [first.run_id] * 2
    assert [logged_epochs(part["history"]) for part in parts] == [[1, 2], [3, 4]]
    assert [part["exit_code"] for part in parts] == [1, 0]
    assert parts[1]["run"]["resume"]
    assert (tmp_path / LAST_STEP_FILE).read_text().strip() == "4"


def test_runs_started_one_after_another_in_one_process_are_distinct(tmp_path: Path) -> None:
    ids = []
    for index, run_dir in enumerate((tmp_path / "a", tmp_path / "b")):
        logger = start(run_dir, name=f"job-{index}")
        logger.log_epoch(epoch_row(1 + index))
        logger.finish("completed", {})
        ids.append(logger.run_id)

    assert len(set(ids)) == 2
    for index, (run_id, run_dir) in enumerate(
        zip(ids, (tmp_path / "a", tmp_path / "b"), strict=True)
    ):
        record = read_wandb_run(run_dir)
        assert record["run"]["run_id"] == run_id
        assert record["run"]["display_name"] == f"job-{index}"
        assert logged_epochs(record["history"]) == [1 + index]
        assert record["exit_code"] == 0


def test_a_new_start_closes_a_run_left_open(tmp_path: Path) -> None:
    abandoned = start(tmp_path / "a")
    abandoned.log_epoch(epoch_row(1))
    start(tmp_path / "b").finish("completed", {})

    assert read_wandb_run(tmp_path / "a")["exit_code"] == 1
    assert read_wandb_run(tmp_path / "b")["exit_code"] == 0


def test_epochs_without_evaluation_leave_the_metric_out(tmp_path: Path) -> None:
    logger = start(tmp_path)
    logger.log_epoch({**epoch_row(1), "val_top1_err": None})
    logger.finish("completed", {})

    (row,) = read_wandb_run(tmp_path)["history"]
    assert "val_top1_err" not in row
    assert row["train_loss"] == 2.0


def test_mode_argument_wins_over_the_environment(tmp_path: Path) -> None:
    assert isinstance(start(tmp_path, mode="disabled"), NullLogger)
    assert not (tmp_path / "wandb").exists()


def test_wandb_mode_disabled_in_the_environment_turns_logging_off(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert isinstance(start(tmp_path), NullLogger)


def test_without_a_mode_or_an_api_key_the_run_is_offline(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("WANDB_MODE")
    logger = start(tmp_path)
    logger.finish("completed", {})

    assert isinstance(logger, WandbLogger)
    assert read_wandb_run(tmp_path)["exit_code"] == 0
    assert "wandb: offline run; upload it later with: wandb sync " in capsys.readouterr().err


def test_an_api_key_in_netrc_counts_as_credentials(wandb_home: Path, monkeypatch) -> None:
    netrc = wandb_home / "netrc-with-key"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    assert not _has_credentials()
    monkeypatch.setenv("NETRC", str(netrc))
    assert _has_credentials()


@pytest.mark.parametrize(
    ("mode", "env", "key"),
    [("sometimes", None, "logger.mode"), (None, "sometimes", "WANDB_MODE")],
)
def test_an_unknown_mode_is_a_config_error(tmp_path: Path, monkeypatch, mode, env, key) -> None:
    if env is not None:
        monkeypatch.setenv("WANDB_MODE", env)
    with pytest.raises(ConfigError, match=rf"^{key}: 'sometimes' is not one of online, offline"):
        start(tmp_path, mode=mode)


def test_null_logger_accepts_the_calls_and_writes_nothing(tmp_path: Path) -> None:
    logger = NullLogger()
    logger.log_epoch(epoch_row(1))
    logger.finish("completed", SUMMARY)
    assert logger.run_id is None
    assert list(tmp_path.iterdir()) == []


UNREACHABLE_SCRIPT = """
import json, sys, time
from pathlib import Path
from dcutmix.store.tracking import WandbLogger

began = time.perf_counter()
logger = WandbLogger.start(Path(sys.argv[1]), project="p", entity=None, group="g", name="n",
                           job_type="dcutmix", tags=[], config={"seed": 1}, init_timeout_s=5)
started = time.perf_counter() - began
logger.log_epoch({"epoch": 1, "train_loss": 0.5})
logger.finish("completed", {"top1_err_last": 1.0})
print(json.dumps({"logger": type(logger).__name__, "start_s": started,
                  "total_s": time.perf_counter() - began}))
"""


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers (a hung server)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["closed port", "silent server"])
def test_an_unreachable_server_costs_a_bounded_wait_and_falls_back_to_offline(
    tmp_path: Path, wandb_home: Path, silent_server: str, server: str
) -> None:
    base_url = "http://127.0.0.1:9" if server == "closed port" else silent_server
    # Also drops WANDB_SERVICE: wandb sets it for children, and a child sharing this process's
    # wandb service could not take over the failed online run's id.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(_isolated_env(wandb_home))
    env.update(
        WANDB_MODE="online",
        WANDB_API_KEY="k" * 40,
        WANDB_BASE_URL=base_url,
        PYTHONPATH=str(REPO_ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", UNREACHABLE_SCRIPT, str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,  # a guard against a hang, not a measurement
    )

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["logger"] == "WandbLogger", done.stderr
    # The script gives up on the server after init_timeout_s=5, then starts offline. Left to
    # wandb's own init_timeout it would wait 90 s first; the guard sits between the two, with
    # an offline start's worth of room for a loaded machine.
    assert outcome["start_s"] < 75, (
        f"the start gave up on the unreachable server only after {outcome['start_s']:.0f} s "
        "(init_timeout_s=5; wandb's own default is 90 s)"
    )
    assert "cannot reach W&B" in done.stderr
    assert "wandb: offline run; upload it later with: wandb sync " in done.stderr
    record = read_wandb_run(tmp_path)
    assert logged_epochs(record["history"]) == [1]
    assert record["exit_code"] == 0


def test_flatten_config_joins_nested_keys_with_dots() -> None:
    nested = {"mixing": {"k": 5, "alpha": 0.2, "extra": {"deep": True}}, "seed": 1, "tags": ["a"]}
    assert flatten_config(nested) == {
        "mixing.k": 5,
        "mixing.alpha": 0.2,
        "mixing.extra.deep": True,
        "seed": 1,
        "tags": ["a"],
    }
    assert flatten_config({"k": 5, "empty": {}}, prefix="mixing.") == {
        "mixing.k": 5,
        "mixing.empty": {},
    }


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_git_revision_names_the_commit_and_marks_a_dirty_tree(tmp_path: Path) -> None:
    assert git_revision(tmp_path) is None
    assert git_revision(tmp_path / "missing") is None
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("a = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    revision = git_revision(tmp_path)

    assert revision is not None and len(revision) == 40
    int(revision, 16)
    (tmp_path / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    assert git_revision(tmp_path) == revision
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_revision(tmp_path) == f"{revision}-dirty"
