"""``dcutmix-sweep plan``: every job of a multirun command line, composed and checked, none run."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dcutmix.config import run_name, validate
from dcutmix.errors import ConfigError
from dcutmix.report import read_run
from dcutmix.store.results import Status
from dcutmix.sweep.hydra_private import overrides_dirname
from dcutmix.sweep.points import FastComposer, Sweep, check_points, grid_jobs, target_folder
from dcutmix.sweep.pruners import epoch_budget, pruner_spec

CIFAR_TRAIN_IMAGES = 50_000
DIGITS_IMAGES = 1_797
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp")


def _count_images(root: Path) -> int | None:
    train = root / "train"
    if not train.is_dir():
        return None
    return sum(
        name.lower().endswith(IMAGE_SUFFIXES) for _, _, names in os.walk(train) for name in names
    )


class _ImageCounter:
    """Training images per epoch of a config, counting an image folder once."""

    def __init__(self) -> None:
        self._folders: dict[str, int | None] = {}

    def dataset_size(self, dataset: DictConfig) -> int | None:
        name = dataset.name
        if name in ("cifar10", "cifar100"):
            return CIFAR_TRAIN_IMAGES
        if name == "digits":
            # scikit-learn's split rounds the validation share up.
            return DIGITS_IMAGES - math.ceil(float(dataset.val_fraction) * DIGITS_IMAGES)
        if name == "fake":
            return int(dataset.num_train)
        root = str(Path(str(dataset.get("root") or "")).expanduser())
        if root not in self._folders:
            self._folders[root] = _count_images(Path(root))
        return self._folders[root]

    def per_epoch(self, cfg: DictConfig) -> int | None:
        images = self.dataset_size(cfg.dataset)
        if images is None:
            return None
        t = cfg.trainer
        if cfg.dataset.get("drop_last", True):
            images = images // t.batch_size * t.batch_size
        if t.limit_train_batches is not None:
            images = min(images, t.limit_train_batches * t.batch_size)
        return images


def job_name(
    cfg: DictConfig, job: list[str], composer: FastComposer, dirname_cfg: DictConfig
) -> str:
    """The job's folder name, as ``run_name`` in conf/train.yaml gives it."""
    if not OmegaConf.is_interpolation(cfg, "run_name"):
        return str(cfg.run_name)
    dirname = overrides_dirname(
        [composer.parse(line) for line in job],
        list(dirname_cfg.exclude_keys),
        dirname_cfg.item_sep,
        dirname_cfg.kv_sep,
    )
    m = cfg.mixing
    return run_name(m.mode, m.k, m.alpha, cfg.trainer.seed, cfg.experiment_name, dirname)


def _totals(jobs: int, epochs: int, images: int | None, seconds_per_epoch: float | None) -> str:
    line = f"{jobs} jobs: {epochs:,} epochs"
    line += f", {images:,} training images in all (epochs x images)" if images is not None else ""
    if seconds_per_epoch is not None:
        line += f"; {epochs * seconds_per_epoch / 3600:,.1f} GPU-hours at {seconds_per_epoch:g} s per epoch"
    return line


def plan_grid(
    sweep: Sweep, seconds_per_epoch: float | None, out: Callable[[str], None] = print
) -> int:
    """Print one line per job of a grid and the totals; returns how many jobs there are."""
    composer = FastComposer()
    counter = _ImageCounter()
    dirname_cfg = sweep.base.hydra.job.config.override_dirname
    folder = target_folder(sweep)
    jobs = grid_jobs(sweep)
    if not jobs:
        raise ConfigError("command line: the sweep has 0 points; give at least one value per key")
    epochs, images, complete, names = 0, 0, 0, set()
    for job in jobs:
        with composer.point(job) as cfg:
            validate(cfg)
            name = job_name(cfg, job, composer, dirname_cfg)
            job_epochs, per_epoch = cfg.trainer.epochs, counter.per_epoch(cfg)
        if name in names:
            raise ConfigError(f"command line: two jobs would share the folder {name}")
        names.add(name)
        done = folder is not None and read_run(folder / name).status == Status.COMPLETED
        complete += done
        out(f"{name}  {' '.join(job)}" + ("  [complete]" if done else ""))
        epochs += job_epochs
        images = None if images is None or per_epoch is None else images + per_epoch * job_epochs
    if folder is not None and folder.is_dir():
        out(f"{complete} of {len(jobs)} already complete in {folder}")
    out(_totals(len(jobs), epochs, images, seconds_per_epoch))
    return len(jobs)


def plan_search(
    sweep: Sweep, seconds_per_epoch: float | None, out: Callable[[str], None] = print
) -> int:
    """Print a search's space (checked at its ends) and the totals of its trials."""
    composer = FastComposer()
    for point in check_points(sweep):
        with composer.point(point) as cfg:
            validate(cfg)
    trials = int(sweep.sweeper.get("n_trials") or 0)
    if trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials: the search has {trials} trials; give 1 or more")
    target = str(sweep.sweeper.get("_target_", "")).rsplit(".", 1)[-1]
    sampler = str(OmegaConf.select(sweep.sweeper, "sampler._target_") or "").rsplit(".", 1)[-1]
    out(f"search: {target} {sampler}, {trials} trials, {sweep.sweeper.get('n_jobs', 1)} at once")
    for key, override in sweep.keys.items():
        if override.is_sweep_override():
            out(f"  {key} = {override.input_line.split('=', 1)[1]}")
    out(f"  fixed: {' '.join(sweep.fixed)}")
    with composer.point(next(iter(check_points(sweep)))) as cfg:
        per_epoch = _ImageCounter().per_epoch(cfg)
        epochs = trials * cfg.trainer.epochs
        run_epochs = cfg.trainer.epochs
    if sweep.is_search:
        out(_pruner_line(sweep, trials, run_epochs, seconds_per_epoch))
    out(
        _totals(
            trials, epochs, None if per_epoch is None else per_epoch * epochs, seconds_per_epoch
        )
        + (" (the worst case: no trial pruned)" if sweep.is_search else "")
    )
    return trials


def _pruner_line(sweep: Sweep, trials: int, epochs: int, seconds_per_epoch: float | None) -> str:
    """The pruner and, for successive halving and hyperband, the epochs to expect."""
    spec = pruner_spec(sweep.sweeper.get("pruner"))
    if spec is None:
        return "pruner: none (every trial trains every epoch)"
    settings = ", ".join(f"{k}={v}" for k, v in spec["kwargs"].items())
    line = f"pruner: {spec['name']}" + (f" ({settings})" if settings else "")
    budget = epoch_budget(spec, trials, epochs)
    if budget.expected is None:
        return line + "; how many epochs it saves depends on the values the trials report"
    line += f"; rungs at epochs {', '.join(map(str, budget.rungs)) or 'none'}"
    line += f"; expected about {budget.expected:,.0f} epochs"
    if seconds_per_epoch is not None:
        line += f" ({budget.expected * seconds_per_epoch / 3600:,.1f} GPU-hours)"
    return line + f" of {budget.worst:,}, when many trials compete"
