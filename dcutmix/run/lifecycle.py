"""One run, from a composed config to its results, in the order it happens.

``dcutmix.train.train_run`` validates the config (``dcutmix.config.validate``, which builds the
run's one mixer), checks the folder (``RunFolder.check_writable``), takes its lock
(``dcutmix.store.runlock.hold_run_folder``) and then calls these steps in turn:

1. ``already_completed``: is there work left in this folder?
2. ``build``: data and model, and the mixer given the data's classes (all ``eval_only`` needs).
3. ``build_training``: optimizer, learning-rate schedule and gradient scaler.
4. ``resume``: the last good checkpoint, if the folder has one, restored into those.
5. ``make_engine``: the model wrapped for DDP / ``torch.compile`` and the engine that steps it.
6. ``fit``: the epoch loop; every checkpoint, evaluation and stop decision is made there.
7. ``finish``: the final ``RunResult`` written, the W&B run closed.

Every end of a run (completed, interrupted, diverged, failed) writes one ``RunResult``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dcutmix.config import REPO_ROOT, resolve_milestones
from dcutmix.errors import InputError, one_line
from dcutmix.mixing import Mixer, compile_mixer, mode_settings
from dcutmix.run import checkpoint as ckpt_io
from dcutmix.run.distributed import Distributed, shard
from dcutmix.run.engine import Diverged, Engine, EpochState, LRSchedule
from dcutmix.run.progress import log
from dcutmix.run.seeding import seed_everything
from dcutmix.run.trial import prune_now
from dcutmix.store.results import RunResult, Status
from dcutmix.store.run_folder import RunFolder

EXIT_DIVERGED = 3
# SIGTERM and SIGINT stop a run cleanly; in submitit's jobs submitit owns them.
STOP_SIGNALS = (15, 2)


@dataclass
class Built:
    """What every run builds from its config, training or evaluating."""

    data: Any
    model: torch.nn.Module
    mixer: Any
    num_params: int
    run_config: dict
    device: torch.device
    dist: Distributed


@dataclass
class Training:
    """What only training needs, built before a checkpoint is restored into it."""

    steps: int
    schedule: LRSchedule
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None


@dataclass
class RunState:
    """Where training stands: restored from ``last.pt`` and saved back into it."""

    start_epoch: int = 1
    epoch_state: EpochState = field(default_factory=EpochState)
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    wall_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def wall_seconds(self) -> float:
        """Training time over every attempt of this run, this one up to now."""
        return self.wall_before + time.perf_counter() - self.started


# 1. The folder.


def already_completed(cfg: DictConfig, folder: RunFolder, dist: Distributed) -> bool:
    """True (and says so) when this folder holds a completed run of at least as many epochs."""
    previous = folder.read_results() or {}
    pruned = previous.get("status") == Status.PRUNED
    done = dist.share(
        not cfg.eval_only
        and (pruned or previous.get("status") == Status.COMPLETED)
        and (pruned or previous.get("epochs_completed", 0) >= cfg.trainer.epochs)
    )
    if done and dist.is_main:
        log(
            f"run already {previous['status']} in {folder.path}; nothing to do "
            f"(top-1 error {previous.get('top1_err_last')}%)"
        )
    return done


# 2.-3. Building.


def run_config(cfg: DictConfig, mixer: Mixer) -> dict:
    """The settings a report groups by, as stored in results.json; ``mixer`` is the run's."""
    from dcutmix.models import recorded_settings

    m = cfg.mixing
    return {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        **recorded_settings(OmegaConf.to_container(cfg.model, resolve=True)),
        "mixing": {
            "mode": m.mode,
            "k": mixer.k,
            "alpha": mixer.alpha,
            "prob": mixer.prob,
            "per_sample": mixer.per_sample,
            **mode_settings(mixer),
        },
        "seed": cfg.trainer.seed,
        "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr,
        "weight_decay": cfg.optimizer.weight_decay,
        "batch_size": cfg.trainer.batch_size,
        "epochs": cfg.trainer.epochs,
        "scheduler": cfg.scheduler.name,
        # regularisers of the paper's table (dcutmix.reference.run_method names the method)
        "label_smoothing": cfg.trainer.label_smoothing,
        "stochastic_depth": cfg.model.get("stochastic_depth"),
        "dropblock": OmegaConf.to_container(cfg.model, resolve=True).get("dropblock"),
        "experiment": cfg.experiment_name,
        "sweep": cfg.sweep_name,
    }


def build(cfg: DictConfig, dist: Distributed, device: torch.device, mixer: Mixer) -> Built:
    """Data and model, seeded so that every rank and every attempt builds the same, and the
    validated ``mixer`` given the data's classes."""
    from dcutmix.data import build_data
    from dcutmix.models import build_model, count_parameters

    t = cfg.trainer
    seed_everything(t.seed, t.deterministic)
    if t.batch_size % dist.world_size:
        raise InputError(
            "trainer.batch_size",
            f"the global batch {t.batch_size} must divide evenly over {dist.world_size} processes",
        )
    data = build_data(
        OmegaConf.to_container(cfg.dataset, resolve=True),
        batch_size=t.batch_size,
        device=device,
        seed=t.seed,
        num_workers=t.num_workers,
        eval_batch_size=t.eval_batch_size,
        channels_last=t.channels_last,
    )
    model_kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    model_kwargs.pop("name")
    torch.manual_seed(t.seed)
    model = build_model(
        cfg.model.name, num_classes=data.num_classes, in_channels=data.in_channels, **model_kwargs
    )
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    mixer.set_num_classes(data.num_classes)
    config = {**run_config(cfg, mixer), **data.recorded_subset()}
    mixing = compile_mixer(mixer) if cfg.mixing.compile else mixer
    return Built(data, model, mixing, count_parameters(model), config, device, dist)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``trainer.amp`` on ``device`` (None: full precision)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov when it has momentum) or AdamW, from ``cfg.optimizer``."""
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
        )
    return torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay
    )


def build_training(cfg: DictConfig, built: Built) -> Training:
    """Optimizer, schedule and scaler for ``built.model``."""
    t, s = cfg.trainer, cfg.scheduler
    steps = len(built.data.train)
    if t.limit_train_batches is not None:
        steps = min(steps, t.limit_train_batches)
    milestones = resolve_milestones(list(s.milestones), t.epochs) if s.name == "multistep" else None
    schedule = LRSchedule(
        cfg.optimizer.lr, steps, t.epochs, s.name, milestones=milestones, gamma=s.gamma,
        warmup_epochs=s.warmup_epochs, min_lr=s.min_lr,
    )  # fmt: skip
    optimizer = build_optimizer(cfg, built.model)
    dtype = amp_dtype(t.amp, built.device)
    scaler = torch.amp.GradScaler(built.device.type) if dtype == torch.float16 else None
    return Training(steps, schedule, optimizer, dtype, scaler)


# 4. Resuming.


def check_same_run(state: dict, config: dict) -> None:
    """Refuse a checkpoint trained with another dataset, model, mixing or seed."""
    saved = state.get("run_config") or {}
    for key in ("dataset", "model", "mixing", "seed"):
        if key in saved and saved[key] != config[key]:
            raise InputError(
                key,
                f"the checkpoint in this run folder was trained with {key}={saved[key]}, not "
                f"{config[key]}; use a new output folder or the original settings",
            )


def resume(folder: RunFolder, built: Built, training: Training) -> RunState:
    """Restore the folder's last good checkpoint into the model and ``training``, if there is one."""
    folder.remove_stale_temporaries()
    state = ckpt_io.load_latest(folder.last, map_location=built.device)
    if state is None:
        return RunState()
    check_same_run(state, built.run_config)
    built.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    if training.scaler is not None and state.get("scaler"):
        training.scaler.load_state_dict(state["scaler"])
    ckpt_io.restore_rng_state(state["rng"])
    run = RunState(
        start_epoch=state["epoch"] + 1,
        epoch_state=EpochState(**state["epoch_state"]),
        history=list(state["history"]),
        best=state.get("best"),
        wall_before=state["wall_seconds"],
    )
    folder.rewrite_metrics(run.history)
    step = run.epoch_state.step
    where = f"epoch {run.start_epoch}" + (f", step {step}" if step else "")
    restarts = os.environ.get("SLURM_RESTART_COUNT", 0)
    log(f"resuming from {folder.last} at {where} (restart count {restarts})")
    return run


# 5. The engine.


def make_engine(cfg: DictConfig, built: Built, training: Training) -> Engine:
    """The engine over the model as it trains: under DDP with several processes, compiled if asked."""
    t, dist, device = cfg.trainer, built.dist, built.device
    train_model = built.model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.compile:
        train_model = torch.compile(train_model)
    return Engine(
        model=train_model,
        optimizer=training.optimizer,
        schedule=training.schedule,
        mixer=built.mixer,
        device=device,
        seed=t.seed,
        amp_dtype=training.amp_dtype,
        scaler=training.scaler,
        label_smoothing=t.label_smoothing,
        on_nonfinite=t.on_nonfinite,
        log_every=t.log_every,
        rank=dist.rank,
        world_size=dist.world_size,
    )


def start_logger(cfg: DictConfig, run_dir: Path, built: Built, history: list[dict]) -> Any:
    """The run's W&B logger (a no-op one for ``logger=none``), caught up with ``history``."""
    from dcutmix.store.tracking import NullLogger, WandbLogger, flatten_config

    if cfg.logger.name == "none":
        return NullLogger()
    mixing = built.run_config["mixing"]
    config = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    config.update(
        {
            "mixing.mode": cfg.mixing.mode,
            "mixing.k": mixing["k"],
            "mixing.alpha": mixing["alpha"],
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "seed": cfg.trainer.seed,
            "num_params": built.num_params,
            "git_revision": code_revision(),
        }
    )
    adhoc = cfg.sweep_name == "adhoc" and cfg.experiment_name
    logger = WandbLogger.start(
        run_dir,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.experiment_name if adhoc else cfg.sweep_name,
        name=cfg.run_name,
        job_type=cfg.mixing.mode,
        tags=[*cfg.logger.tags, cfg.dataset.name, cfg.model.name, cfg.mixing.mode],
        config=config,
        mode=cfg.logger.mode,
    )
    # A kill between a checkpoint and its W&B row would leave a gap; the logger skips rows it
    # already sent, so replaying the history fills exactly that gap.
    for row in history:
        logger.log_epoch(row)
    return logger


def code_revision() -> str | None:
    """The git revision of the code this run executes: for a frozen sweep, the one it was frozen at."""
    from dcutmix.store.files import read_json
    from dcutmix.store.tracking import git_revision

    snapshot = read_json(REPO_ROOT / "snapshot.json")
    if isinstance(snapshot, dict) and snapshot.get("git_revision"):
        return snapshot["git_revision"]
    return git_revision(REPO_ROOT)


# 6. The loop.


@dataclass
class Fit:
    """One training attempt: the parts, where it stands, and the result it keeps up to date."""

    cfg: DictConfig
    folder: RunFolder
    built: Built
    training: Training
    engine: Engine
    state: RunState
    result: RunResult
    # The search trial this run is (``dcutmix.run.trial.SearchTrial``, on the main process).
    trial: Any = None

    def save_last(self, epoch_done: int) -> None:
        """``last.pt``: all that resuming after ``epoch_done`` (and the partial epoch) needs."""
        if not self.folder.writer:
            return
        t, s = self.training, self.state
        training = {
            "optimizer": t.optimizer.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else None,
            "scheduler": {
                "global_step": epoch_done * t.schedule.steps_per_epoch + s.epoch_state.step
            },
            "epoch_state": s.epoch_state.as_dict(),
            "history": s.history,
            "best": s.best,
            "rng": ckpt_io.capture_rng_state(),
            "wall_seconds": s.wall_seconds(),
        }
        state = ckpt_io.build_checkpoint(
            self.built.model, epoch_done, self.built.run_config, training=training
        )
        ckpt_io.atomic_save(state, self.folder.last)

    def save_best(self, row: dict) -> None:
        """``best.pt``: the weights of the epoch with the lowest validation error so far."""
        if not (self.cfg.trainer.save_best and self.folder.writer):
            return
        state = ckpt_io.build_checkpoint(
            self.built.model, row["epoch"], self.built.run_config, val_top1_err=row["val_top1_err"]
        )
        ckpt_io.atomic_save(state, self.folder.best, keep_previous=False)

    def write(self, **changes: Any) -> None:
        """Update the result (its wall time always) and write results.json."""
        for key, value in changes.items():
            setattr(self.result, key, value)
        self.result.wall_seconds = self.state.wall_seconds()
        self.folder.write_results(self.result)


def running_result(cfg: DictConfig, built: Built, state: RunState) -> RunResult:
    """The result a run shows while it trains (and keeps, should it be killed outright)."""
    result = RunResult(
        Status.RUNNING, epochs_completed=state.start_epoch - 1, epochs=cfg.trainer.epochs,
        wall_seconds=state.wall_before, num_params=built.num_params, run_name=cfg.run_name,
        config=built.run_config, device=str(built.device), world_size=built.dist.world_size,
        images_per_epoch=built.data.images_per_epoch(cfg.trainer.limit_train_batches),
    )  # fmt: skip
    result.record_errors(state.history)
    return result


def fit(f: Fit, logger: Any) -> int:
    """Train the remaining epochs; returns the exit code. Every way out writes its RunResult."""
    f.folder.write_results(f.result)
    b, t = f.built, f.cfg.trainer
    log(
        f"{f.cfg.run_name}: {f.cfg.model.name} ({b.num_params:,} parameters) on "
        f"{f.cfg.dataset.name}, {b.mixer!r}, {t.epochs} epochs on {b.device}"
        + (f" x{b.dist.world_size}" if b.dist.enabled else "")
    )
    f.state.started = time.perf_counter()
    stop_signals = () if _in_submitit_job() else STOP_SIGNALS
    try:
        with f.engine.stop.installed(stop_signals):
            code = _train_epochs(f, logger)
    except Diverged as error:
        f.write(
            status=Status.DIVERGED, error=str(error), diverged_epoch=error.epoch,
            diverged_step=error.step,
        )  # fmt: skip
        log(
            f"{error}: run stopped with status diverged "
            "(set trainer.on_nonfinite=skip to skip such batches)"
        )
        code = EXIT_DIVERGED
    except BaseException as error:
        f.write(status=Status.FAILED, error=one_line(error))
        finish(f.result, logger)
        raise
    finish(f.result, logger)
    return code


def _train_epochs(f: Fit, logger: Any) -> int:
    """The epoch loop: train, evaluate when due, checkpoint, record, and stop when asked."""
    t, steps = f.cfg.trainer, f.training.steps
    for epoch in range(f.state.start_epoch, t.epochs + 1):
        f.state.epoch_state = f.engine.train_epoch(
            _batches(f.built, f.built.data.train.epoch(epoch, start_step=f.state.epoch_state.step)),
            epoch,
            steps,
            f.state.epoch_state,
        )
        if f.engine.stop.signum is not None and f.state.epoch_state.step < steps:
            f.save_last(epoch - 1)  # the partial epoch, to be continued where it stopped
            return _interrupted(f, f"at epoch {epoch}, step {f.state.epoch_state.step}")
        row = _epoch_row(epoch, f.training, f.state.epoch_state, f.built.dist.world_size)
        if epoch % t.eval_every == 0 or epoch == t.epochs:
            _evaluate_into(row, f)
        _record_epoch(row, f, logger)
        if row["val_top1_err"] is not None and _pruned(f, epoch):
            return 0
        if f.engine.stop.signum is not None:
            return _interrupted(f, f"after epoch {epoch}")
    f.write(status=Status.COMPLETED)
    r = f.result
    log(
        f"done: top-1 error {r.top1_err_last:.2f}% (best {r.top1_err_best:.2f}%) "
        f"in {r.wall_seconds:.1f}s; results in {f.folder.path}"
    )
    return 0


def _batches(built: Built, batches: Any) -> Any:
    """This process's part of each global batch."""
    dist = built.dist
    return shard(batches, dist.rank, dist.world_size) if dist.enabled else batches


def _evaluate_into(row: dict, f: Fit) -> None:
    started = time.perf_counter()
    val = _batches(f.built, f.built.data.val.epoch(row["epoch"]))
    row.update(f.engine.evaluate(val, f.cfg.trainer.limit_val_batches))
    row["epoch_seconds"] += time.perf_counter() - started


def _record_epoch(row: dict, f: Fit, logger: Any) -> None:
    """A finished epoch: best so far, checkpoints, metrics.jsonl, W&B, results.json, one line."""
    s = f.state
    s.history.append(row)
    improved = row["val_top1_err"] is not None and (
        s.best is None or row["val_top1_err"] < s.best["val_top1_err"]
    )
    if improved:
        s.best = {"epoch": row["epoch"], "val_top1_err": row["val_top1_err"]}
    s.epoch_state = EpochState()
    f.save_last(row["epoch"])
    if improved:
        f.save_best(row)
    f.folder.append_metrics(row)
    if logger is not None:
        logger.log_epoch(row)
    f.result.record_errors(s.history)
    f.write(epochs_completed=row["epoch"], bad_images=f.built.data.bad_images)
    log(_epoch_line(row, f.cfg.trainer.epochs))


def _pruned(f: Fit, epoch: int) -> bool:
    """A search's trial after an evaluated epoch: report, and stop when its pruner says so."""
    if f.cfg.trial.number is None:
        return False
    value = getattr(f.result, f.cfg.objective)
    if not prune_now(f.trial, f.built.dist, value, epoch):
        return False
    f.write(status=Status.PRUNED, pruned_epoch=epoch, pruned_value=value)
    log(f"pruned by the search after epoch {epoch} ({f.cfg.objective} {value:.4g}); last.pt kept")
    return True


def _interrupted(f: Fit, where: str) -> int:
    signum = f.engine.stop.signum
    message = f"stopped by signal {signum} {where}; rerun the same command to resume"
    f.write(status=Status.INTERRUPTED, error=message)
    log(message)
    return 128 + signum


def _epoch_row(epoch: int, training: Training, state: EpochState, world_size: int) -> dict:
    """metrics.jsonl's row for a trained epoch; the validation keys are filled when evaluated."""
    schedule = training.schedule
    lr = schedule.lr_at((epoch - 1) * schedule.steps_per_epoch + max(0, training.steps - 1))
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": state.loss_sum / max(1, state.samples),
        "val_loss": None,
        "val_top1_err": None,
        "val_top5_err": None,
        "epoch_seconds": state.seconds,
        "images_per_second": state.samples * world_size / max(state.seconds, 1e-9),
        "skipped_batches": state.skipped,
    }


def _epoch_line(row: dict, epochs: int) -> str:
    val = (
        f"val loss {row['val_loss']:.4f} top-1 err {row['val_top1_err']:.2f}% "
        f"top-5 err {row['val_top5_err']:.2f}%"
        if row["val_top1_err"] is not None
        else "no evaluation"
    )
    return (
        f"epoch {row['epoch']}/{epochs} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} "
        f"{val} ({row['epoch_seconds']:.1f}s, {row['images_per_second']:.0f} img/s)"
    )


def _in_submitit_job() -> bool:
    return "SUBMITIT_FOLDER" in os.environ or "SUBMITIT_EXECUTOR" in os.environ


# 7. The end.


def finish(result: RunResult, logger: Any) -> None:
    """Close the W&B run with the final figures (results.json is already written)."""
    if logger is not None:
        logger.finish(str(result.status), result.summary())


def evaluate_checkpoint(cfg: DictConfig, built: Built, folder: RunFolder) -> int:
    """``eval_only``: validation error of the weights in ``cfg.ckpt``, written as the result."""
    from dcutmix.models import load_authors_state_dict

    path = Path(cfg.ckpt).expanduser()
    weights = ckpt_io.extract_model_state(ckpt_io.load_file(path, map_location=built.device))
    try:
        load_authors_state_dict(built.model, weights)
    except InputError as error:
        raise InputError("ckpt", f"{path} does not fit model={cfg.model.name}: {error}") from None
    engine = Engine(
        model=built.model, optimizer=None, schedule=None, mixer=None, device=built.device,
        seed=cfg.trainer.seed, amp_dtype=amp_dtype(cfg.trainer.amp, built.device),
        rank=built.dist.rank, world_size=built.dist.world_size,
    )  # fmt: skip
    started = time.perf_counter()
    metrics = engine.evaluate(
        _batches(built, built.data.val.epoch(1)), cfg.trainer.limit_val_batches
    )
    result = RunResult(
        Status.COMPLETED, eval_only=True, checkpoint=str(path),
        top1_err_last=metrics["val_top1_err"], top1_err_best=metrics["val_top1_err"],
        top5_err_last=metrics["val_top5_err"], top5_err_best=metrics["val_top5_err"],
        val_loss_last=metrics["val_loss"], wall_seconds=time.perf_counter() - started,
        num_params=built.num_params, run_name=cfg.run_name, config=built.run_config,
    )  # fmt: skip
    folder.write_results(result)
    log(
        f"evaluated {path}: top-1 error {metrics['val_top1_err']:.2f}%, top-5 error "
        f"{metrics['val_top5_err']:.2f}%, loss {metrics['val_loss']:.4f}"
    )
    return 0
