"""What a run ends in: its status and the one ``RunResult`` record every end of a run writes.

``results.json`` is ``RunResult.to_json()`` plus ``updated_at``; the report, the sweep summary and
the analyses read it back. Its keys and their order are part of the run-folder format.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class Status(str, Enum):
    """A run's state; a ``str``, so JSON and comparisons with plain words see the word itself."""

    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"
    FAILED = "failed"
    # Stopped early by a searching sweeper's pruner (exit code 0): a finished trial, not a failure.
    PRUNED = "pruned"
    # Only the report infers these, from a folder's files.
    UNFINISHED = "unfinished"
    NOT_STARTED = "not started"
    UNREADABLE = "unreadable"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


#: the fields of results.json a searching sweeper may minimise (``objective``); each is an error
#: or a loss, so lower is better
OBJECTIVES = ("top1_err_last", "top1_err_best", "val_loss_last")
ERROR_KEYS = ("top1_err_last", "top1_err_best", "top5_err_last", "top5_err_best", "val_loss_last")
# What W&B's run summary carries (a subset of results.json).
SUMMARY_KEYS = (*ERROR_KEYS, "wall_seconds", "epochs_completed", "status", "num_params")


def now_iso() -> str:
    """The current UTC time to the second, as results.json and sweep.json store it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def errors_summary(history: list[dict]) -> dict[str, float | None]:
    """Last and best validation errors over the evaluated epochs of ``history`` (None before any)."""
    evaluated = [row for row in history if row.get("val_top1_err") is not None]
    if not evaluated:
        return dict.fromkeys(ERROR_KEYS)
    last = evaluated[-1]
    return {
        "top1_err_last": last["val_top1_err"],
        "top1_err_best": min(row["val_top1_err"] for row in evaluated),
        "top5_err_last": last["val_top5_err"],
        "top5_err_best": min(row["val_top5_err"] for row in evaluated),
        "val_loss_last": last["val_loss"],
    }


_ABSENT: Any = object()  # a field that this kind of result does not write at all
_EARLY_LAYOUT = (
    "status", "error", "epochs_completed", "epochs", "run_name", "config", "hostname", "pid",
)  # fmt: skip


@dataclass
class RunResult:
    """One run's results.json. Fields left ``_ABSENT`` are not written; the order is the file's.

    A new fact about a run is a new field here (placed where it should appear in the file).
    """

    status: Status
    eval_only: bool = _ABSENT
    checkpoint: str = _ABSENT
    epochs_completed: int = 0
    epochs: int = 0
    top1_err_last: float | None = None
    top1_err_best: float | None = None
    top5_err_last: float | None = None
    top5_err_best: float | None = None
    val_loss_last: float | None = None
    wall_seconds: float = 0.0
    num_params: int | None = None
    # Training images one epoch draws (a subset run's fewer): the proxy search's cost in images.
    images_per_epoch: int = _ABSENT
    error: str | None = None
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    run_name: str | None = None
    config: dict | None = None
    device: str = _ABSENT
    world_size: int = _ABSENT
    # Damaged image files the loaders have skipped (image folders); set after each epoch.
    bad_images: int = _ABSENT
    diverged_epoch: int = _ABSENT
    diverged_step: int = _ABSENT
    # A pruned trial: the epoch it stopped after and the objective it reported there.
    pruned_epoch: int = _ABSENT
    pruned_value: float = _ABSENT
    # Which fields a result writes, when not all of them (see ``failed_early``); never written.
    layout: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def record_errors(self, history: list[dict]) -> None:
        """Take the last and best error figures from the run's metrics history."""
        for key, value in errors_summary(history).items():
            setattr(self, key, value)

    def to_json(self) -> dict[str, Any]:
        """The fields this result has, in file order, without ``updated_at``."""
        names = self.layout or [f.name for f in fields(self) if f.name != "layout"]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not _ABSENT}

    @classmethod
    def failed_early(
        cls, message: str, epochs: int, run_name: str | None, config: dict | None
    ) -> RunResult:
        """A run that failed before it could start: the short record, in its own key order."""
        return cls(
            Status.FAILED,
            error=message,
            epochs=epochs,
            run_name=run_name,
            config=config,
            layout=_EARLY_LAYOUT,
        )

    def summary(self) -> dict[str, Any]:
        """The figures W&B's run summary carries."""
        values = self.to_json()
        return {key: values.get(key) for key in SUMMARY_KEYS}
