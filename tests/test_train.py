"""The training entrypoint end to end: run folder, every mode, resume, evaluation, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dcutmix.mixing import MIXING_MODES
from tests.helpers.runs import cli, compose_config, read_metrics, read_results
from tests.helpers.waiting import wait_for_line

METRIC_KEYS = {
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_top1_err",
    "val_top5_err",
    "epoch_seconds",
    "images_per_second",
}
RESULT_KEYS = {
    "status",
    "epochs_completed",
    "top1_err_last",
    "top1_err_best",
    "top5_err_last",
    "top5_err_best",
    "wall_seconds",
    "num_params",
    "config",
}


def test_run_folder_holds_the_whole_truth(train_in_process, tmp_path):
    code, run = train_in_process(
        ["trainer.epochs=2", "trainer.limit_train_batches=4"], tmp_path / "run"
    )
    assert code == 0
    rows = read_metrics(run, drop_timing=False)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= METRIC_KEYS
    assert all(0.0 <= r["val_top1_err"] <= 100.0 for r in rows)
    results = read_results(run)
    assert set(results) >= RESULT_KEYS
    assert results["status"] == "completed" and results["epochs_completed"] == 2
    assert results["top1_err_last"] == rows[-1]["val_top1_err"]
    assert results["top1_err_best"] == min(r["val_top1_err"] for r in rows)
    assert results["config"]["mixing"] == {
        "mode": "dcutmix",
        "k": 5,
        "alpha": 0.2,
        "prob": 1.0,
        "per_sample": True,
    }
    assert (
        results["config"]["dataset"],
        results["config"]["model"],
        results["config"]["seed"],
    ) == ("digits", "tiny", 0)
    assert (run / "checkpoints" / "last.pt").is_file() and (
        run / "checkpoints" / "best.pt"
    ).is_file()


@pytest.mark.parametrize("mode", MIXING_MODES)
def test_every_mode_trains_one_short_epoch(train_in_process, tmp_path, mode):
    code, run = train_in_process(
        [
            f"mixing={mode}",
            "trainer.epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
        ],
        tmp_path / mode,
    )
    assert code == 0
    results = read_results(run)
    assert results["status"] == "completed"
    assert results["config"]["mixing"]["mode"] == mode
    assert torch.isfinite(torch.tensor(read_metrics(run)[0]["train_loss"]))


def test_a_finished_run_rerun_does_nothing(train_in_process, tmp_path):
    overrides = ["trainer.epochs=1", "trainer.limit_train_batches=2"]
    _, run = train_in_process(overrides, tmp_path / "run")
    before = (run / "checkpoints" / "last.pt").stat().st_mtime_ns, read_results(run)
    code, _ = train_in_process(overrides, run)
    assert code == 0
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == before[0]
    assert read_results(run)["wall_seconds"] == before[1]["wall_seconds"]


def test_resume_refuses_a_different_configuration(train_in_process, tmp_path):
    from dcutmix.errors import ConfigError

    _, run = train_in_process(
        ["trainer.epochs=2", "trainer.limit_train_batches=2"], tmp_path / "run"
    )
    (run / "results.json").unlink()  # looks unfinished, but the checkpoint belongs to dcutmix
    with pytest.raises(
        ConfigError, match="mixing: the checkpoint in this run folder was trained with"
    ):
        train_in_process(["trainer.epochs=3", "mixing=mixup"], run)


# Progress lines ("epoch 2 step 5/90 ...") every LOG_EVERY steps: events the tests signal at.
LOG_EVERY = 5
SLOW_RUN = [
    "trainer.epochs=4",
    "trainer.batch_size=16",
    "logger=none",
    "trainer.device=cpu",
    "trainer.seed=3",
    f"trainer.log_every={LOG_EVERY}",
]


def _at_epoch_two(run: Path, mode: str) -> subprocess.Popen:
    """Start SLOW_RUN in ``run`` and return as it reports step LOG_EVERY of its second epoch.

    The epoch has about 90 steps left then: a signal sent now lands inside it.
    """
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dcutmix.train",
            *SLOW_RUN,
            f"mixing={mode}",
            f"hydra.run.dir={run}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(
        proc.stderr,
        lambda line: line.startswith(f"epoch 2 step {LOG_EVERY}/"),
        timeout=300,
        what=f"the run's progress line for step {LOG_EVERY} of epoch 2",
    )
    return proc


# fmix draws Fourier noise from the mixing generator besides the Beta and permutation draws
RESUME_MODES = ("dcutmix", "fmix", "random_erasing")


@pytest.fixture(scope="module")
def uninterrupted_metrics(tmp_path_factory) -> Callable[[str], list[dict]]:
    """metrics.jsonl of SLOW_RUN left alone, per mode (each trained once per module): what every
    interrupted and resumed copy must match."""
    cache: dict[str, list[dict]] = {}

    def metrics(mode: str) -> list[dict]:
        if mode not in cache:
            reference = tmp_path_factory.mktemp(f"reference-{mode}") / "run"
            assert cli([*SLOW_RUN, f"mixing={mode}", f"hydra.run.dir={reference}"]).returncode == 0
            cache[mode] = read_metrics(reference)
        return cache[mode]

    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("mode", RESUME_MODES)
def test_sigkill_mid_run_then_rerun_ends_with_the_uninterrupted_metrics(
    tmp_path, uninterrupted_metrics, mode
):
    run = tmp_path / "killed"
    proc = _at_epoch_two(run, mode=mode)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert read_results(run)["status"] == "running"  # what a kill leaves behind

    rerun = cli([*SLOW_RUN, f"mixing={mode}", f"hydra.run.dir={run}"])
    assert rerun.returncode == 0, rerun.stderr
    # Killed inside epoch 2: everything of it is done again from epoch 1's checkpoint.
    assert "last.pt at epoch 2 (restart count" in rerun.stderr, rerun.stderr
    assert read_metrics(run) == uninterrupted_metrics(mode)
    assert read_results(run)["status"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("mode", [*RESUME_MODES, "manifold_mixup"])
def test_sigterm_checkpoints_mid_epoch_and_resumes_exactly(tmp_path, uninterrupted_metrics, mode):
    run = tmp_path / "stopped"
    proc = _at_epoch_two(run, mode=mode)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    results = read_results(run)
    assert results["status"] == "interrupted", stderr
    assert "rerun the same command to resume" in results["error"]
    rerun = cli([*SLOW_RUN, f"mixing={mode}", f"hydra.run.dir={run}"])
    assert rerun.returncode == 0, rerun.stderr
    resumed = rerun.stderr.split("resuming from", 1)[1].splitlines()[0]
    assert " at epoch 2, step " in resumed, resumed
    assert read_metrics(run) == uninterrupted_metrics(mode)


@pytest.mark.parametrize("mode", RESUME_MODES)
def test_damaged_last_checkpoint_falls_back_to_the_previous_one(train_in_process, tmp_path, mode):
    overrides = ["trainer.epochs=3", "trainer.limit_train_batches=2", f"mixing={mode}"]
    _, reference = train_in_process(overrides, tmp_path / "reference")
    _, run = train_in_process(overrides, tmp_path / "run")
    # Make it look as if the run died after epoch 3's checkpoint was half written.
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (run / "results.json").unlink()
    with pytest.warns(UserWarning) as caught:
        code, _ = train_in_process(overrides, run)
    messages = [str(warning.message) for warning in caught]
    assert any("is damaged" in m and "trying the previous checkpoint" in m for m in messages)
    assert any(m.startswith("resuming from the previous good checkpoint") for m in messages)
    assert code == 0
    assert read_metrics(run) == read_metrics(reference)


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    from dcutmix.errors import ConfigError
    from dcutmix.run.checkpoint import load_file

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(ConfigError, match="carries pickled Python objects"):
        load_file(path)
    assert not (tmp_path / "pwned").exists()


def test_eval_only_loads_the_authors_checkpoint_format(train_in_process, tmp_path):
    from dcutmix.models import build_model

    torch.manual_seed(0)
    model = build_model("pyramidnet110", num_classes=10, in_channels=3)
    authors = {
        "net": {f"module.{k}": v for k, v in model.state_dict().items()},
        "epoch": 300,
        "best_err1": 16.95,
    }
    path = tmp_path / "model_best.pth.tar"
    torch.save(authors, path)
    code, run = train_in_process(
        [
            "model=pyramidnet110",
            "eval_only=true",
            f"ckpt={path}",
            "trainer.limit_val_batches=1",
            "trainer.eval_batch_size=32",
        ],
        tmp_path / "eval",
    )
    assert code == 0
    results = read_results(run)
    assert results["eval_only"] is True and results["status"] == "completed"
    # identical weights give identical predictions: compare with evaluating the model directly
    from dcutmix.data import build_data

    data = build_data(
        dict(compose_config([]).dataset),
        batch_size=64,
        device=torch.device("cpu"),
        seed=0,
        eval_batch_size=32,
    )
    images, labels = next(iter(data.val.epoch(1)))
    model.eval()
    with torch.no_grad():
        top1 = (model(images).argmax(1) == labels).float().mean().item()
    assert abs(results["top1_err_last"] - 100 * (1 - top1)) < 1e-6


def test_eval_only_of_our_own_checkpoint(train_in_process, tmp_path):
    _, run = train_in_process(
        ["trainer.epochs=1", "trainer.limit_train_batches=3"], tmp_path / "run"
    )
    code, evaluated = train_in_process(
        ["eval_only=true", f"ckpt={run / 'checkpoints' / 'last.pt'}"], tmp_path / "eval"
    )
    assert code == 0
    assert read_results(evaluated)["top1_err_last"] == pytest.approx(
        read_results(run)["top1_err_last"]
    )


@pytest.mark.slow
def test_default_command_meets_time_and_accuracy(tmp_path):
    """`dcutmix-train` with no arguments: tiny on digits with dcutmix, under a minute, >= 95% accuracy."""
    started = time.time()
    result = cli(["logger=none", f"hydra.run.dir={tmp_path / 'default'}"])
    elapsed = time.time() - started
    assert result.returncode == 0, result.stderr
    results = read_results(tmp_path / "default")
    assert results["config"]["mixing"]["mode"] == "dcutmix"
    assert results["top1_err_last"] <= 5.0, results
    print(f"default run: {elapsed:.1f}s wall, top-1 error {results['top1_err_last']:.2f}%")


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    result = cli(["mixing=dcutmixx", f"hydra.run.dir={tmp_path / 'x'}"])
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: mixing=dcutmixx: no such mixing option; choose one of cutmix, cutout, dcutmix, "
        "dmixup, fmix, manifold_mixup, mixup, naive_cutmix, naive_mixup, none, random_erasing, "
        "resizemix"
    ]
    assert not (tmp_path / "x").exists()


def test_works_from_any_working_directory(tmp_path):
    result = cli(
        ["trainer.epochs=1", "trainer.limit_train_batches=2", "logger=none", "hydra.run.dir=here"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "here" / "results.json").is_file()
