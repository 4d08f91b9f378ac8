"""Reading run folders: each run's effective status and what its results.json says."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from dcutmix.errors import InputError
from dcutmix.store.results import Status
from dcutmix.store.run_folder import find_run_folders
from dcutmix.store.runlock import pid_alive
from dcutmix.store.tracking import flatten_config

# A "running" run on another host is only known to be dead when it stops updating; the trainer
# rewrites results.json after every epoch, and no epoch of the project's recipes takes this long.
STALE_AFTER_SECONDS = 2 * 3600


# Names and seeds label a run; they are not part of the configuration it computes.
LABEL_KEYS = ("seed", "sweep", "experiment")


class Run:
    """One run folder as the report sees it: its effective status and what its results.json says."""

    def __init__(
        self, path: Path, status: str, results: dict[str, Any], detail: str | None = None
    ) -> None:
        self.path = path
        self.status = status
        self.results = results
        self.detail = detail

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    @property
    def name(self) -> str:
        """The trainer's run name, or the folder's name when results.json does not give one."""
        return str(self.results.get("run_name") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        """The settings block of results.json (empty when there is none)."""
        config = self.results.get("config")
        return config if isinstance(config, dict) else {}

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The flat settings that define this run's configuration (everything but labels)."""
        flat: dict[str, Any] = {}
        for name, value in flatten_config(self.config).items():
            if name in LABEL_KEYS:
                continue
            # The mixing block's keys are the ones people name (mode, k, alpha), so keep them bare;
            # lists become text so that settings can be compared and grouped.
            unhashable = isinstance(value, (list, dict))
            flat[name.removeprefix("mixing.")] = json.dumps(value) if unhashable else value
        if flat.get("mode") == "none":
            # The trainer may store k as 1 or null for no mixing; both mean the same configuration.
            flat["k"] = flat["alpha"] = None
        return flat


def human_duration(seconds: float) -> str:
    """Seconds in the unit a person reads best, e.g. ``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# Reading run folders.


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _running_state(results: dict[str, Any], now: datetime) -> tuple[str, str]:
    """``running`` or ``unfinished`` for a run whose results.json says running, with the reason."""
    pid, host = results.get("pid"), results.get("hostname")
    if host == socket.gethostname() and isinstance(pid, int) and pid > 0 and not pid_alive(pid):
        return Status.UNFINISHED, f"its process {pid} on this host is gone"
    updated = _parse_time(results.get("updated_at"))
    if updated is None:
        return Status.RUNNING, f"on {host or 'an unknown host'}"
    age = max(0.0, (now - updated).total_seconds())
    if age > STALE_AFTER_SECONDS:
        return Status.UNFINISHED, f"no update for {human_duration(age)}"
    return Status.RUNNING, f"on {host or 'an unknown host'}, updated {human_duration(age)} ago"


def read_run(path: Path, now: datetime | None = None) -> Run:
    """The run in one folder, with ``running`` turned into ``unfinished`` when it is stale."""
    try:
        text = (path / "results.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return Run(path, Status.NOT_STARTED, {}, "no results.json")
    except OSError as error:
        return Run(path, Status.UNREADABLE, {}, f"results.json: {error.strerror}")
    try:
        results = json.loads(text)
    except ValueError as error:
        return Run(path, Status.UNREADABLE, {}, f"results.json is not JSON ({error})")
    if not isinstance(results, dict):
        return Run(path, Status.UNREADABLE, {}, "results.json does not hold an object")
    status = str(results.get("status") or Status.UNKNOWN)
    error_line = results.get("error")
    detail = str(error_line).splitlines()[0] if error_line else None
    if status == Status.RUNNING:
        status, detail = _running_state(results, now or datetime.now(timezone.utc))
    return Run(path, status, results, detail)


def collect_runs(paths: Iterable[str | os.PathLike[str]], now: datetime | None = None) -> list[Run]:
    """Every run folder under ``paths`` (sweep folders, run folders, or folders of either)."""
    now = now or datetime.now(timezone.utc)
    runs: list[Run] = []
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise InputError(
                "PATH",
                f"{given} does not exist; pass a sweep or run folder written by dcutmix-train",
            )
        if not root.is_dir():
            raise InputError(
                "PATH", f"{given} is not a folder; pass a sweep or run folder from dcutmix-train"
            )
        for folder in find_run_folders(root):
            real = folder.resolve()
            if real not in seen:
                seen.add(real)
                runs.append(read_run(folder, now))
    return runs


def read_val_curve(run: Run) -> list[tuple[int, float]]:
    """(epoch, validation top-1 error in %) for each epoch of the run's metrics.jsonl."""
    try:
        text = (run.path / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return []
    curve = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a process killed mid-append can leave a partial last line
        epoch, error = row.get("epoch"), _number(row.get("val_top1_err"))
        if isinstance(epoch, int) and error is not None:
            curve.append((epoch, error))
    return curve
