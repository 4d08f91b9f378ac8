"""Fixtures; the helpers themselves live in tests/helpers (re-exported here for older imports)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dcutmix.config import register
from tests.helpers.runs import FAST, cli, compose_config, read_metrics, read_results

register()

# Under pytest-xdist (`make test` runs one worker per core) every worker and every process it
# starts computes on one thread: with torch's default of a thread per core, two
# workers' trainings oversubscribe the cores and spin-wait, which made the suite slower in
# parallel than in series.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Quiet, offline, and never touching the user's own W&B settings.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

__all__ = ["FAST", "cli", "compose_config", "read_metrics", "read_results"]

# The count of skipped tests by reason at the end of a run; under CI=true a skip for any reason
# but "needs CUDA" fails the run (tests/helpers/provided.py says which tests may skip).
pytest_plugins = ["tests.helpers.skips"]


@pytest.fixture
def train_in_process():
    """Train one configuration in this process; returns (exit code, run folder)."""
    from dcutmix.train import train_run

    def run(overrides: list[str], run_dir: Path) -> tuple[int, Path]:
        cfg = compose_config(overrides)
        return train_run(cfg, run_dir), run_dir

    return run


# Files whose tests submit to the one local Slurm cluster: under pytest-xdist (`make test` runs
# one worker per core) they run one after another on a single worker, so jobs of two tests never queue
# behind each other on the cluster's two CPUs and no test's wait depends on another's.
SERIAL_GROUPS = {
    "test_slurm.py": "slurm",
    "test_slurm_infra.py": "slurm",
    "test_slurm_pending.py": "slurm",
    "test_sweep_slurm.py": "slurm",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = SERIAL_GROUPS.get(Path(str(item.fspath)).name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
