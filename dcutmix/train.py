"""``dcutmix-train``: train and evaluate one classifier with one mixing mode, configured by Hydra.

This is the only module that knows Hydra: its task, its entry point and its sweep callback.
``train_run`` calls the steps of one run, defined top to bottom in ``dcutmix.run.lifecycle``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dcutmix.config import CONF_DIR, build_checked_mixer, register, resolve_device, validate
from dcutmix.errors import InputError, one_line
from dcutmix.mixing import Mixer
from dcutmix.run import lifecycle
from dcutmix.run.distributed import Distributed
from dcutmix.run.progress import log
from dcutmix.run.trial import SearchTrial
from dcutmix.store.files import atomic_write_json, read_json
from dcutmix.store.results import RunResult, Status, now_iso
from dcutmix.store.run_folder import RESULTS_FILE, RunFolder, find_run_folders
from dcutmix.store.runlock import RunFolderLocked, hold_run_folder

_exit_code = 0


def train_run(cfg: DictConfig, run_dir: Path) -> int:
    """Train (or evaluate) one configuration in ``run_dir``; returns the process exit code."""
    mixer = validate(cfg)
    dist = Distributed()
    device = dist.start(resolve_device(cfg.trainer.device))
    try:
        code = _run(cfg, dist.share(run_dir), dist, device, mixer)
        dist.finish()
        return code
    finally:
        dist.stop()


def _run(
    cfg: DictConfig, run_dir: Path, dist: Distributed, device: torch.device, mixer: Mixer
) -> int:
    """The run's steps in order (see ``dcutmix.run.lifecycle``)."""
    folder = RunFolder(run_dir, writer=dist.is_main)
    if dist.is_main:
        folder.check_writable()
    with hold_run_folder(run_dir, dist.is_main, dist.share):
        return _run_locked(cfg, folder, dist, device, mixer)


def _run_locked(
    cfg: DictConfig, folder: RunFolder, dist: Distributed, device: torch.device, mixer: Mixer
) -> int:
    """The steps after the folder's lock is held; the lock is released however they end."""
    run_dir = folder.path
    if lifecycle.already_completed(cfg, folder, dist):
        return 0
    built = lifecycle.build(cfg, dist, device, mixer)
    if built.data.subset is not None:  # the chosen images, beside the run's other files
        folder.write_json(*built.data.subset_file())
    if cfg.eval_only:
        return lifecycle.evaluate_checkpoint(cfg, built, folder)
    training = lifecycle.build_training(cfg, built)
    state = lifecycle.resume(folder, built, training)
    # A search's trial: its journal opened (and caught up with the history) before training.
    trial = SearchTrial.open(cfg.trial) if dist.is_main else None
    if trial is not None:
        trial.catch_up(state.history, cfg.objective)
    engine = lifecycle.make_engine(cfg, built, training)
    logger = lifecycle.start_logger(cfg, run_dir, built, state.history) if dist.is_main else None
    result = lifecycle.running_result(cfg, built, state)
    fit = lifecycle.Fit(cfg, folder, built, training, engine, state, result, trial)
    return lifecycle.fit(fit, logger)


def task(cfg: DictConfig) -> float:
    """The Hydra task: one job. Failures are recorded and turned into exit codes; returns the objective."""
    from hydra.core.hydra_config import HydraConfig

    from dcutmix.sweep.objective import objective_value

    global _exit_code
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        code = train_run(cfg, run_dir)
    except RunFolderLocked as error:
        # The folder is another process's: say so and leave everything in it as it is.
        print(f"error: {error}", file=sys.stderr, flush=True)
        code = 2
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        _record_failure(run_dir, cfg, str(error))
        code = 2
    except Exception as error:
        traceback.print_exc()
        _record_failure(run_dir, cfg, one_line(error))
        code = 1
    _exit_code = max(_exit_code, code)
    # A searching sweeper minimises what the task returns; exit codes travel in _exit_code.
    return objective_value(run_dir, cfg.objective, code)


def _record_failure(run_dir: Path, cfg: DictConfig, message: str) -> None:
    """Note a failure for the report, without overwriting what an earlier attempt wrote."""
    results = run_dir / RESULTS_FILE
    if results.exists() or not os.access(run_dir, os.W_OK):
        return
    try:
        # the mixing group may be what failed: then no config is recorded
        config = lifecycle.run_config(cfg, build_checked_mixer(cfg.mixing))
    except Exception:
        config = None
    record = RunResult.failed_early(message, cfg.trainer.epochs, cfg.run_name, config)
    with contextlib.suppress(OSError):
        atomic_write_json(results, {**record.to_json(), "updated_at": now_iso()})


class SweepSummary(Callback):
    """Hydra callback: names the sweep folder and, at the end, summarises its jobs from their files.

    It reads each job's results.json, so it sees the same truth for local and Slurm jobs, and
    makes the multirun exit non-zero when any job did not complete.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            sweep_dir / "sweep.json",
            {
                "name": config.sweep_name,
                "started_at": now_iso(),
                "command": sys.argv[1:],
                "cwd": os.getcwd(),
                "launcher": config.hydra.launcher.get("_target_"),
                # how many jobs the sweep will launch, so status can count those never submitted
                "planned_jobs": _planned_jobs(config),
            },
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _exit_code
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses: dict[str, list[str]] = {}
        for folder in find_run_folders(sweep_dir):
            if not (folder / RESULTS_FILE).is_file():
                continue  # a job that never started writes nothing to count
            results = read_json(folder / RESULTS_FILE) or {}
            status = results.get("status", Status.UNKNOWN)
            line = folder.name + (f" ({results['error']})" if results.get("error") else "")
            statuses.setdefault(status, []).append(line)
        total = sum(len(v) for v in statuses.values())
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(statuses.items()))
        log(f"sweep {config.sweep_name}: {total} jobs: {counts}; folder {sweep_dir}")
        # A trial its search pruned ended as asked: listed, but no failure.
        failed = {k: v for k, v in statuses.items() if k not in (Status.COMPLETED, Status.PRUNED)}
        for status, jobs in {**failed, Status.PRUNED: statuses.get(Status.PRUNED, [])}.items():
            for job in jobs:
                log(f"  {status}: {job}")
        if failed:
            log(f"summarise with: dcutmix-report {sweep_dir}")
            _exit_code = max(_exit_code, 1)


def _planned_jobs(config: DictConfig) -> int | None:
    """A search's trials, or the product of a grid's value counts; None when unknown."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    trials = sweeper.get("n_trials")
    sampler = str(OmegaConf.select(sweeper, "sampler._target_", default=""))
    if trials is not None and not sampler.endswith("GridSampler"):
        return int(trials)
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(
            params + list(config.hydra.overrides.task)
        )
        keyed = {o.get_key_element(): o for o in parsed}
        total = 1
        for o in keyed.values():
            if o.is_sweep_override():
                total *= len(list(o.sweep_string_iterator()))
    except Exception:
        return None if trials is None else int(trials)
    return total if trials is None else min(int(trials), total)


_NO_PRECHECK_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--version",
    "--info",
    "-i",
    "--cfg",
    "-c",
    "--resolve",
    "--package",
    "-p",
    "--shell-completion",
    "-sc",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


def main() -> None:
    """Console entry point: ``dcutmix-train [overrides] [-m]``."""
    import hydra

    from dcutmix.sweep.precheck import precheck

    register()
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun only rank 0 writes; the others keep Hydra's own files out of the way.
        sys.argv += [
            "hydra.output_subdir=null",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
        ]
    argv = sys.argv[1:]
    # Hydra shows its full report only for HYDRA_FULL_ERROR=1; the project's check steps aside then.
    if (
        not _NO_PRECHECK_FLAGS.intersection(a.split("=")[0] for a in argv)
        and os.environ.get("HYDRA_FULL_ERROR") != "1"
    ):
        problem = precheck([a for a in argv if not a.startswith("-")])
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
    decorated = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(task)
    decorated()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _exit_now(_exit_code)
    sys.exit(_exit_code)


def _exit_now(code: int) -> None:
    """End a torchrun rank without interpreter shutdown, once everything it wrote is flushed.

    Once DistributedDataParallel has wrapped a model, the gloo process group outlives
    ``destroy_process_group`` (torch keeps a reference), so its worker threads are still alive at
    interpreter shutdown; one that then releases a finished collective's tensors needs the GIL
    and aborts the process (SIGABRT, "terminate called without an active exception"). A rank
    that had finished its run, results and all, then failed the torchrun job.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# Hydra pickles the task for Slurm jobs and imports this module there: register on import too.
register()

if __name__ == "__main__":
    # Run the module's importable twin, so that launchers pickle `dcutmix.train.task`, not
    # `__main__.task` with everything this script's globals reference.
    from dcutmix.train import main as _main

    _main()
