"""The number a run hands to Hydra's sweeper: the objective read back from its results.json.

Every objective is an error or a loss, so lower is better; a run that did not complete (failed,
diverged, interrupted, or without an evaluation) scores ``inf``, which Optuna ranks below every
finite trial instead of ending the search.
"""

from __future__ import annotations

import math
from pathlib import Path

from dcutmix.store.files import read_json
from dcutmix.store.results import Status
from dcutmix.store.run_folder import RESULTS_FILE

WORST = math.inf


def objective_value(run_dir: Path, objective: str, exit_code: int) -> float:
    """The run's objective, or ``WORST`` when the run did not complete with a finite value."""
    if exit_code != 0:
        return WORST
    results = read_json(Path(run_dir) / RESULTS_FILE)
    if not isinstance(results, dict) or results.get("status") != Status.COMPLETED:
        return WORST
    value = results.get(objective)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return WORST
    return float(value)


def run_status(run_dir: Path) -> str:
    """The status a job's results.json records (``unknown`` when it has none)."""
    results = read_json(Path(run_dir) / RESULTS_FILE)
    status = results.get("status") if isinstance(results, dict) else None
    return str(status or Status.UNKNOWN)
