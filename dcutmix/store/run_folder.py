"""A run's folder: the files one run writes, and how run folders are found under a path."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dcutmix.errors import InputError
from dcutmix.store.files import (
    TEMPORARY_GLOB,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from dcutmix.store.results import RunResult, now_iso

MIN_FREE_BYTES = 64 * 2**20
RESULTS_FILE = "results.json"
HYDRA_DIR = ".hydra"


class RunFolder:
    """Everything a run writes, in Hydra's output dir; only the main rank writes."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path = path
        self.writer = writer
        self.metrics = path / "metrics.jsonl"
        self.results = path / RESULTS_FILE
        self.checkpoints = path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def check_writable(self) -> None:
        """Fail with one line, before anything is built, when the folder cannot take a run."""
        probe = self.path / f".write-probe-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise InputError(
                "hydra.run.dir", f"cannot write to {self.path} ({error.strerror})"
            ) from None
        free = shutil.disk_usage(self.path).free
        if free < MIN_FREE_BYTES:
            raise InputError(
                "hydra.run.dir",
                f"only {free // 2**20} MiB free under {self.path}; at least "
                f"{MIN_FREE_BYTES // 2**20} MiB are needed for checkpoints",
            )

    def read_results(self) -> dict | None:
        return read_json(self.results)

    def write_results(self, result: RunResult) -> None:
        if self.writer:
            atomic_write_json(self.results, {**result.to_json(), "updated_at": now_iso()})

    def write_json(self, name: str, obj: Any) -> None:
        """Another file of the run (``name`` in the folder), as JSON, atomically."""
        if self.writer:
            atomic_write_json(self.path / name, obj)

    def rewrite_metrics(self, history: list[dict]) -> None:
        """Make metrics.jsonl exactly the checkpoint's history (a kill may have left it ahead)."""
        if self.writer:
            atomic_write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in history))

    def append_metrics(self, row: dict) -> None:
        if self.writer:
            append_jsonl(self.metrics, row)

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes that a kill interrupted (the real files are intact)."""
        if not self.writer:
            return
        stale = [
            *self.checkpoints.glob(TEMPORARY_GLOB),
            *self.checkpoints.glob(".*.tmp-*"),  # the name earlier versions gave them
            *self.path.glob(".metrics.jsonl.*.tmp"),
            *self.path.glob(".results.json.*.tmp"),
        ]
        for tmp in stale:
            tmp.unlink(missing_ok=True)


def is_run_folder(path: Path) -> bool:
    """A folder dcutmix-train wrote: it holds results.json or Hydra's ``.hydra/``."""
    return (path / RESULTS_FILE).is_file() or (path / HYDRA_DIR).is_dir()


def find_run_folders(root: Path) -> Iterator[Path]:
    """Run folders under ``root`` (itself included), in name order, each once.

    A run's own subfolders (checkpoints, wandb) hold no further runs, and symbolic links back up
    the tree are followed only once.
    """
    seen: set[Path] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
        except OSError:
            continue  # an unreadable folder holds no run anyone could read either
        names = {entry.name for entry in entries}
        if HYDRA_DIR in names or RESULTS_FILE in names:
            yield folder
            continue
        stack.extend(
            Path(entry.path)
            for entry in entries
            if not entry.name.startswith(".") and entry.is_dir()
        )
