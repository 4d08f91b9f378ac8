"""Running the trainer from tests: compose-and-train in process, the real command line, its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dcutmix.config import CONF_DIR, REPO_ROOT

FAST = ["logger=none", "trainer.device=cpu", "run_name=test"]


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[*FAST, *overrides])
    finally:
        GlobalHydra.instance().clear()


def cli(args: list[str], cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """``python -m dcutmix.train ARGS`` as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "dcutmix.train", *args],
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def read_metrics(run_dir: Path, drop_timing: bool = True) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if drop_timing:
        rows = [
            {k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")}
            for r in rows
        ]
    return rows
