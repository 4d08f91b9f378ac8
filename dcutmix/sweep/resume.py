"""``dcutmix-sweep resume``: the recorded command again, into the same folder, from the same code.

Each job then does what a rerun in its folder does: a completed run says so and exits without
training, an unfinished or interrupted one resumes from its last checkpoint, a failed one runs
again.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from dcutmix.errors import ConfigError
from dcutmix.sweep.status import read_sweep_record

SNAPSHOT = ".code"
FROZEN_LAUNCHERS = ("FrozenSlurmLauncher", "FrozenLocalLauncher")


def resume_command(folder: Path, record: dict) -> list[str]:
    """The recorded ``dcutmix-train`` arguments, aimed at ``folder``."""
    args = [a for a in record["command"] if not a.startswith("hydra.sweep.dir=")]
    if not {"-m", "--multirun"} & set(args):
        args.insert(0, "-m")
    return [*args, f"hydra.sweep.dir={folder}"]


def resume_environment(folder: Path, record: dict) -> tuple[dict[str, str], Path | None]:
    """The environment that makes Python import the sweep's frozen code, and that code's folder."""
    env = dict(os.environ)
    launcher = str(record.get("launcher") or "")
    if not launcher.endswith(FROZEN_LAUNCHERS):
        return env, None
    code = folder / SNAPSHOT
    if not (code / "dcutmix").is_dir():
        raise ConfigError(
            f"FOLDER: the frozen code of {folder} ({code}) is gone, so its jobs cannot be rerun as "
            "they were; rerun the command from a checkout with hydra.sweep.dir=" + str(folder)
        )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    # Keep the working directory (often a checkout) off sys.path, ahead of the frozen copy.
    env["PYTHONSAFEPATH"] = "1"
    return env, code


def resume(folder: Path, out: Callable[[str], None] = print) -> int:
    """Relaunch the sweep recorded in ``folder``; returns its exit code."""
    folder = folder.expanduser().absolute()
    record = read_sweep_record(folder)
    env, code = resume_environment(folder, record)
    args = resume_command(folder, record)
    cwd = Path(str(record.get("cwd") or os.getcwd()))
    if not cwd.is_dir():
        cwd = Path.cwd()
    source = (
        f"the frozen code in {code}"
        if code
        else "the installed code (no frozen copy: basic launcher)"
    )
    out(f"resuming {folder} with {source}: dcutmix-train {shlex.join(args)}")
    return subprocess.call([sys.executable, "-m", "dcutmix.train", *args], cwd=cwd, env=env)
