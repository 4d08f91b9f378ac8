"""What a run records in Weights & Biases, and the code revision it ran.

Nothing here knows Hydra. Nothing about W&B may cost a training run: every failure of wandb
turns into one warning line and a logger that does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcutmix.errors import InputError, one_line
from dcutmix.store.files import atomic_write_text
from dcutmix.store.results import Status

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

RUN_ID_FILE = "wandb_run_id.txt"
LAST_STEP_FILE = "wandb_last_step.txt"
MODES = ("online", "offline", "disabled")
# wandb's older names for its modes, still accepted in WANDB_MODE.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
# Upper bound on run.finish() waiting for uploads; whatever is left stays on disk for `wandb sync`.
FINISH_TIMEOUT_S = 60.0
GIT_TIMEOUT_S = 5.0


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one flat dict with dotted keys (``{"mixing": {"k": 5}}`` -> ``mixing.k``)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def git_revision(path: str | os.PathLike[str]) -> str | None:
    """The commit checked out at ``path`` (``-dirty`` when tracked files changed); None if unknown."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(path), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    if not revision:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return f"{revision}-dirty" if changes else revision


class NullLogger:
    """A tracker that records nothing: for ``logger=none`` and for when W&B cannot start."""

    run_id: str | None = None

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Record nothing."""

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """Record nothing."""


def _warn(message: str) -> None:
    print(f"wandb: warning: {message}", file=sys.stderr, flush=True)


def _resolve_mode(mode: str | None) -> str | None:
    """The requested mode (argument first, then WANDB_MODE), or None to decide from credentials."""
    if mode is not None:
        if mode not in MODES:
            raise InputError(
                "logger.mode", f"{mode!r} is not one of {', '.join(MODES)}, or null for automatic"
            )
        return mode
    env_mode = os.environ.get("WANDB_MODE")
    if not env_mode:
        return None
    env_mode = _MODE_ALIASES.get(env_mode, env_mode)
    if env_mode not in MODES:
        raise InputError(
            "WANDB_MODE", f"{env_mode!r} is not one of {', '.join(MODES)}; unset it for automatic"
        )
    return env_mode


def _has_credentials() -> bool:
    """Whether W&B credentials are configured here (env, netrc, settings), asking no server."""
    try:
        from wandb import env
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        if os.environ.get(env.API_KEY) or os.environ.get(env.IDENTITY_TOKEN_FILE):
            return True
        settings = wandb_setup.singleton().settings
        return bool(settings.api_key or wbauth.read_netrc_auth(host=settings.base_url))
    except Exception:
        # A malformed key or a changed wandb API: offline is the safe answer either way.
        return False


def _read_stripped(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class WandbLogger:
    """One W&B run kept in a run folder: its files under ``run_dir/wandb``, its id beside them.

    Rerunning in the same folder resumes the same W&B run, so a requeued job is one curve.
    """

    # The run this process has open; a job that died without finish() leaves it here.
    _open: WandbLogger | None = None

    def __init__(self, run: Run, run_dir: Path, last_step: int | None) -> None:
        self._run: Run | None = run
        self._run_dir = run_dir
        self._last_step = last_step
        self.run_id: str = run.id
        WandbLogger._open = self

    @classmethod
    def start(
        cls,
        run_dir: Path,
        *,
        project: str,
        entity: str | None,
        group: str | None,
        name: str,
        job_type: str,
        tags: list[str],
        config: dict,
        mode: str | None = None,
        init_timeout_s: float = 30,
    ) -> WandbLogger | NullLogger:
        """Start (or resume) the W&B run of ``run_dir``; a NullLogger when W&B cannot start."""
        requested = _resolve_mode(mode)
        if cls._open is not None:
            # Multirun jobs share a process: the next job must not log into a dead job's run.
            cls._open._close(exit_code=1)
        if requested == "disabled":
            return NullLogger()
        # Absolute, so the printed `wandb sync` command works from any folder.
        run_dir = Path(run_dir).absolute()
        try:
            resumed_id, run_id = _claim_run_id(run_dir)
        except Exception as error:
            _warn(f"cannot start ({one_line(error)}); training continues without W&B")
            return NullLogger()
        init_args = {
            "dir": run_dir, "project": project, "entity": entity, "group": group, "name": name,
            "job_type": job_type, "tags": tags, "config": config, "id": run_id,
            "resume": "allow",
        }  # fmt: skip
        run, run_mode = _init_or_fall_back(init_args, _usable_mode(requested), init_timeout_s)
        if run is None:
            return NullLogger()
        if run_mode == "offline":
            print(
                f"wandb: offline run; upload it later with: wandb sync {run.settings.sync_dir}",
                file=sys.stderr,
                flush=True,
            )
        last_step = _read_stripped(run_dir / LAST_STEP_FILE) if resumed_id else ""
        return cls(run, run_dir, int(last_step) if last_step.isdigit() else None)

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Log one history row at step ``metrics["epoch"]``; rows a resume repeats are skipped."""
        if self._run is None:
            return
        try:
            step = int(metrics["epoch"])
            if self._last_step is not None and step <= self._last_step:
                return
            # Epochs without evaluation carry None; W&B charts show a gap for a missing key.
            self._run.log(
                {key: value for key, value in metrics.items() if value is not None}, step=step
            )
            atomic_write_text(self._run_dir / LAST_STEP_FILE, f"{step}\n")
        except Exception as error:
            self._give_up(error)
            return
        self._last_step = step

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """Write the final summary and status, then close the run.

        A completed run and a trial its search pruned close with exit code 0, every other end
        with 1; a pruned trial's summary says ``pruned`` and it carries the tag ``pruned``, so
        W&B lists it apart from both finished and failed runs.
        """
        if self._run is None:
            return
        try:
            self._run.summary.update({**summary, "status": status})
            if status == Status.PRUNED:
                self._run.tags = (*self._run.tags, "pruned")
        except Exception as error:
            _warn(f"writing the run summary failed ({one_line(error)})")
        self._close(exit_code=0 if status in (Status.COMPLETED, Status.PRUNED) else 1)

    def _give_up(self, error: Exception) -> None:
        _warn(f"logging failed ({one_line(error)}); training continues without W&B")
        self._close(exit_code=1)

    def _close(self, exit_code: int) -> None:
        run, self._run = self._run, None
        if WandbLogger._open is self:
            WandbLogger._open = None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as error:
            _warn(f"closing the run failed ({one_line(error)}); its files stay in {run.dir}")


def _claim_run_id(run_dir: Path) -> tuple[str, str]:
    """(the id this folder's earlier attempt used or "", the id to use), kept in the folder."""
    import wandb
    from wandb.sdk.lib.runid import generate_id

    # The first wandb call in a process sets its terminal output for the whole process.
    wandb.setup(wandb.Settings(silent=True, quiet=True))
    resumed_id = _read_stripped(run_dir / RUN_ID_FILE)
    run_id = resumed_id or generate_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_ID_FILE, run_id + "\n")
    return resumed_id, run_id


def _usable_mode(requested: str | None) -> str:
    """The mode to start in: automatic is online only with credentials, and so is online."""
    if requested is None:
        return "online" if _has_credentials() else "offline"
    if requested == "online" and not _has_credentials():
        # wandb would otherwise prompt for a key, and a prompt can block a job forever.
        _warn("online mode asked for, but no API key (WANDB_API_KEY or netrc); logging offline")
        return "offline"
    return requested


def _init(init_args: dict[str, Any], run_mode: str, timeout_s: float) -> Run:
    import wandb

    settings = wandb.Settings(
        init_timeout=timeout_s,
        login_timeout=timeout_s,
        finish_timeout=FINISH_TIMEOUT_S,
        reinit="finish_previous",
        silent=True,
        quiet=True,
        # The run folder keeps the console log already (Hydra's job log).
        console="off",
    )
    return wandb.init(**init_args, mode=run_mode, settings=settings)


def _init_or_fall_back(
    init_args: dict[str, Any], run_mode: str, timeout_s: float
) -> tuple[Run | None, str]:
    """The started run and its mode; an unreachable server means offline, anything else no run."""
    import wandb

    try:
        return _init(init_args, run_mode, timeout_s), run_mode
    except Exception as error:
        if run_mode != "online":
            _warn(f"cannot start ({one_line(error)}); training continues without W&B")
            return None, run_mode
        _warn(f"cannot reach W&B ({one_line(error)}); logging offline instead")
    try:
        # The failed attempt still holds the run id in wandb's service; only a fresh service
        # lets the offline run keep the id.
        wandb.teardown()
        return _init(init_args, "offline", timeout_s), "offline"
    except Exception as offline_error:
        _warn(f"cannot start ({one_line(offline_error)}); training continues without W&B")
        return None, "offline"
