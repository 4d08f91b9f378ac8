"""The GPU check: its CUDA tests (skipped without CUDA) and its CPU dry run, which CI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dcutmix.bench.gpu_check import EXIT_NO_GPU, _parse, gpu_test_files
from dcutmix.bench.gpu_pipelines import authors_style_dcutmix
from dcutmix.config import REPO_ROOT
from tests.helpers.provided import NEEDS_CUDA
from tests.helpers.runs import read_metrics, read_results

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NEEDS_CUDA)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "amp, channels_last, compile_model",
    [("bf16", True, False), ("bf16", True, True), ("off", False, False), ("off", False, True)],
    ids=["bf16-channels_last", "bf16-channels_last-compile", "fp32", "fp32-compile"],
)
def test_two_digits_epochs_on_cuda_end_with_a_finite_loss(
    train_in_process, tmp_path, amp, channels_last, compile_model
):
    code, run = train_in_process(
        [
            "trainer.device=cuda",
            "trainer.epochs=2",
            f"trainer.amp={amp}",
            f"trainer.channels_last={channels_last}",
            f"trainer.compile={compile_model}",
        ],
        tmp_path / "run",
    )
    assert code == 0 and read_results(run)["status"] == "completed"
    losses = [row["train_loss"] for row in read_metrics(run)]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_authors_style_dcutmix_targets_are_the_pixel_shares():
    batch, height, width = 16, 12, 10
    images = (
        torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1).expand(-1, 2, height, width)
    )
    onehot = torch.eye(batch, dtype=torch.float64)
    mixed, targets = authors_style_dcutmix(images, onehot, np.random.default_rng(0))
    counts = torch.stack([(mixed[:, 0] == s).sum((1, 2)) for s in range(batch)], 1)
    torch.testing.assert_close(targets, counts.double() / (height * width))
    assert (targets > 0).sum(1).float().mean() > 1.5  # it really mixes


def test_gpu_test_files_are_the_files_with_gpu_marked_tests():
    names = {p.rsplit("/", 1)[1] for p in gpu_test_files("gpu")}
    assert {"test_mixing.py", "test_data.py", "test_gpu.py"} <= names
    assert "test_report.py" not in names


def test_without_cuda_it_says_so_in_one_line_and_exits_3():
    # On a CUDA machine too: with no device visible, torch finds none.
    proc = subprocess.run(
        [sys.executable, "-m", "dcutmix.bench.gpu_check", "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == EXIT_NO_GPU
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "needs a CUDA GPU" in proc.stderr


@pytest.mark.slow
def test_cpu_dry_run_runs_every_step_and_writes_the_json(tmp_path):
    out = tmp_path / "check" / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "dcutmix.bench.gpu_check", "--cpu-dry-run", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and report["check"] == "dry-run"
    assert set(report["steps"]) == {"pytest_gpu", "throughput", "pyramidnet200"}
    assert report["steps"]["pytest_gpu"]["counts"].get("skipped", 0) > 0  # CUDA tests, skipped
    (row,) = report["steps"]["throughput"]["rows"]
    for name in ("framework", "authors_style"):
        assert row[name]["images_per_s"] > 0 and row[name]["loss_finite"]
        assert 0 < row[name]["data_and_mixing_share_pct"] < 100
    assert row["ratio_framework_vs_authors"] > 0
    assert "gpu-check dry-run" in proc.stdout and "throughput" in proc.stdout


def test_readme_gives_one_short_device_command_that_parses():
    readme = (REPO_ROOT / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if "python3 -m dcutmix.bench.gpu_check" in x]
    assert len(line) < 2000
    args = line.split("python3 -m dcutmix.bench.gpu_check", 1)[1].split("2>&1")[0].split()
    assert _parse([a.strip('"') for a in args]).out is not None
