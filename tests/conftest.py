"""Fixtures; the helpers themselves live in tests/helpers (re-exported here for older imports)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcutmix.config import register
from tests.helpers.runs import FAST, cli, compose_config, read_metrics, read_results

register()

# Quiet, offline, and never touching the user's own W&B settings.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

__all__ = ["FAST", "cli", "compose_config", "read_metrics", "read_results"]


@pytest.fixture
def train_in_process():
    """Train one configuration in this process; returns (exit code, run folder)."""
    from dcutmix.train import train_run

    def run(overrides: list[str], run_dir: Path) -> tuple[int, Path]:
        cfg = compose_config(overrides)
        return train_run(cfg, run_dir), run_dir

    return run
