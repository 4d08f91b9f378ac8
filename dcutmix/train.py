"""``dcutmix-train``: train and evaluate one classifier with one mixing mode, configured by Hydra.

This is the only module that knows Hydra. It turns the composed config into plain objects,
runs the engine, and writes the run folder: metrics.jsonl, results.json, checkpoints/ and W&B.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dcutmix import checkpoint as ckpt_io
from dcutmix.config import (
    CONF_DIR,
    REPO_ROOT,
    register,
    resolve_device,
    resolve_milestones,
    validate,
)
from dcutmix.engine import Diverged, Engine, EpochState, LRSchedule
from dcutmix.errors import ConfigError
from dcutmix.mixing import build_mixer

MIN_FREE_BYTES = 64 * 2**20
_exit_code = 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _log(message: str) -> None:
    print(f"[dcutmix] {message}", file=sys.stderr, flush=True)


class Distributed:
    """Rank and world size from torchrun's or Slurm's environment; one process when neither."""

    def __init__(self) -> None:
        env = os.environ
        if (
            int(env.get("WORLD_SIZE", "1")) <= 1
            and int(env.get("SLURM_NTASKS", "1")) > 1
            and "SUBMITIT_FOLDER" in env
        ):
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        self.world_size = int(env.get("WORLD_SIZE", "1"))
        self.rank = int(env.get("RANK", "0"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        if not self.enabled:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(
            backend=backend, rank=self.rank, world_size=self.world_size
        )
        return device

    def share(self, value: Any) -> Any:
        """Rank 0's value on every rank (its run folder, its decisions)."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def finish(self) -> None:
        """Wait until every rank is done with its collectives (call after a successful run).

        A rank that leaves while its last collective is still being wound up by gloo's threads
        can abort at exit (see ``_exit_now``); waiting here made that rare (8 of 42 two-process
        CPU runs aborted without it, 2 of 200 with it) and ``_exit_now`` removes the rest.
        """
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def stop(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _shard(batches, rank: int, world_size: int):
    """This rank's contiguous slice of every global batch."""
    for images, labels in batches:
        per = -(-labels.shape[0] // world_size)
        yield images[rank * per : (rank + 1) * per], labels[rank * per : (rank + 1) * per]


class RunFolder:
    """Everything a run writes, in Hydra's output dir; only the main rank writes."""

    def __init__(self, path: Path, writer: bool) -> None:
        self.path = path
        self.writer = writer
        self.metrics = path / "metrics.jsonl"
        self.results = path / "results.json"
        self.checkpoints = path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def check_writable(self) -> None:
        probe = self.path / f".write-probe-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as error:
            raise ConfigError(
                f"hydra.run.dir: cannot write to {self.path} ({error.strerror})"
            ) from None
        free = shutil.disk_usage(self.path).free
        if free < MIN_FREE_BYTES:
            raise ConfigError(
                f"hydra.run.dir: only {free // 2**20} MiB free under {self.path}; at least "
                f"{MIN_FREE_BYTES // 2**20} MiB are needed for checkpoints"
            )

    def read_results(self) -> dict | None:
        from dcutmix.tracking import read_json

        return read_json(self.results)

    def write_results(self, results: dict) -> None:
        from dcutmix.tracking import atomic_write_json

        if self.writer:
            atomic_write_json(self.results, {**results, "updated_at": _now()})

    def rewrite_metrics(self, history: list[dict]) -> None:
        """Make metrics.jsonl exactly the checkpoint's history (a kill may have left it ahead)."""
        from dcutmix.tracking import atomic_write_text

        if self.writer:
            atomic_write_text(self.metrics, "".join(_json_line(row) for row in history))

    def append_metrics(self, row: dict) -> None:
        from dcutmix.tracking import append_jsonl

        if self.writer:
            append_jsonl(self.metrics, row)

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes that a kill interrupted (the real files are intact)."""
        if not self.writer:
            return
        stale = [
            *self.checkpoints.glob(".*.tmp-*"),
            *self.path.glob(".metrics.jsonl.*.tmp"),
            *self.path.glob(".results.json.*.tmp"),
        ]
        for tmp in stale:
            tmp.unlink(missing_ok=True)


def _json_line(row: dict) -> str:
    import json

    return json.dumps(row) + "\n"


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
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


def _run_config(cfg: DictConfig) -> dict:
    """The settings a report groups by, as stored in results.json."""
    m = cfg.mixing
    mixer = build_mixer(
        m.mode,
        num_classes=2,
        k=m.k,
        alpha=m.alpha,
        prob=m.prob,
        per_sample=m.per_sample,
        layers=m.layers,
    )
    return {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "mixing": {
            "mode": m.mode,
            "k": mixer.k,
            "alpha": mixer.alpha,
            "prob": mixer.prob,
            "per_sample": mixer.per_sample,
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


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def _in_submitit_job() -> bool:
    return "SUBMITIT_FOLDER" in os.environ or "SUBMITIT_EXECUTOR" in os.environ


def train_run(cfg: DictConfig, run_dir: Path) -> int:
    """Train (or evaluate) one configuration in ``run_dir``; returns the process exit code."""
    validate(cfg)
    dist = Distributed()
    device = dist.start(resolve_device(cfg.trainer.device))
    try:
        code = _train_run(cfg, dist.share(run_dir), dist, device)
        dist.finish()
        return code
    finally:
        dist.stop()


def _train_run(cfg: DictConfig, run_dir: Path, dist: Distributed, device: torch.device) -> int:
    folder = RunFolder(run_dir, writer=dist.is_main)
    if dist.is_main:
        folder.check_writable()
    previous = folder.read_results()
    if dist.share(
        not cfg.eval_only
        and previous is not None
        and previous.get("status") == "completed"
        and previous.get("epochs_completed", 0) >= cfg.trainer.epochs
    ):
        if dist.is_main:
            _log(
                f"run already completed in {run_dir}; nothing to do (top-1 error {previous.get('top1_err_last')}%)"
            )
        return 0

    from dcutmix.data import build_data
    from dcutmix.models import build_model, count_parameters

    t = cfg.trainer
    _seed_everything(t.seed, t.deterministic)
    if t.batch_size % dist.world_size:
        raise ConfigError(
            f"trainer.batch_size: the global batch {t.batch_size} must divide evenly over {dist.world_size} processes"
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
    model_kwargs = {
        k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name"
    }
    torch.manual_seed(t.seed)
    model = build_model(
        cfg.model.name, num_classes=data.num_classes, in_channels=data.in_channels, **model_kwargs
    )
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    num_params = count_parameters(model)
    m = cfg.mixing
    mixer = build_mixer(
        m.mode,
        num_classes=data.num_classes,
        k=m.k,
        alpha=m.alpha,
        prob=m.prob,
        per_sample=m.per_sample,
        layers=m.layers,
    )
    run_config = _run_config(cfg)
    run_name = cfg.run_name

    if cfg.eval_only:
        return _evaluate_checkpoint(cfg, model, data, device, folder, run_config, num_params, dist)

    steps = (
        len(data.train)
        if t.limit_train_batches is None
        else min(len(data.train), t.limit_train_batches)
    )
    schedule = LRSchedule(
        cfg.optimizer.lr,
        steps,
        t.epochs,
        cfg.scheduler.name,
        milestones=resolve_milestones(list(cfg.scheduler.milestones), t.epochs)
        if cfg.scheduler.name == "multistep"
        else None,
        gamma=cfg.scheduler.gamma,
        warmup_epochs=cfg.scheduler.warmup_epochs,
        min_lr=cfg.scheduler.min_lr,
    )
    optimizer = _build_optimizer(cfg, model)
    amp_dtype = _amp_dtype(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    start_epoch, epoch_state, history, best, wall_before = 1, EpochState(), [], None, 0.0
    folder.remove_stale_temporaries()
    state = ckpt_io.load_latest(folder.last, map_location=device)
    if state is not None:
        _check_same_run(state, run_config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        ckpt_io.restore_rng_state(state["rng"])
        start_epoch = state["epoch"] + 1
        epoch_state = EpochState(**state["epoch_state"])
        history = list(state["history"])
        best = state.get("best")
        wall_before = state["wall_seconds"]
        folder.rewrite_metrics(history)
        where = (
            f"epoch {start_epoch}, step {epoch_state.step}"
            if epoch_state.step
            else f"epoch {start_epoch}"
        )
        _log(
            f"resuming from {folder.last} at {where} (restart count {os.environ.get('SLURM_RESTART_COUNT', 0)})"
        )

    train_model = model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.compile:
        train_model = torch.compile(train_model)

    engine = Engine(
        model=train_model,
        optimizer=optimizer,
        schedule=schedule,
        mixer=mixer,
        device=device,
        seed=t.seed,
        amp_dtype=amp_dtype,
        scaler=scaler,
        label_smoothing=t.label_smoothing,
        on_nonfinite=t.on_nonfinite,
        log_every=t.log_every,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    logger = _start_logger(cfg, run_dir, run_name, run_config, num_params) if dist.is_main else None
    if logger is not None:
        # A kill between a checkpoint and its W&B row would leave a gap; the logger skips rows
        # it already sent, so replaying the history fills exactly that gap.
        for row in history:
            logger.log_epoch(row)
    results = {
        "status": "running",
        "epochs_completed": start_epoch - 1,
        "epochs": t.epochs,
        **_errors_summary(history),
        "wall_seconds": wall_before,
        "num_params": num_params,
        "error": None,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "run_name": run_name,
        "config": run_config,
        "device": str(device),
        "world_size": dist.world_size,
    }
    folder.write_results(results)
    _log(
        f"{run_name}: {cfg.model.name} ({num_params:,} parameters) on {cfg.dataset.name}, "
        f"{mixer!r}, {t.epochs} epochs on {device}"
        + (f" x{dist.world_size}" if dist.enabled else "")
    )

    def checkpoint(epoch_done: int, partial: EpochState) -> None:
        if not dist.is_main:
            return
        ckpt_io.atomic_save(
            {
                "format": ckpt_io.CHECKPOINT_FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "scheduler": {"global_step": epoch_done * schedule.steps_per_epoch + partial.step},
                "epoch": epoch_done,
                "epoch_state": partial.as_dict(),
                "history": history,
                "best": best,
                "rng": ckpt_io.capture_rng_state(),
                "wall_seconds": wall_before + time.perf_counter() - started,
                "run_config": run_config,
            },
            folder.last,
        )

    started = time.perf_counter()
    stop_signals = (
        () if _in_submitit_job() else (15, 2)
    )  # SIGTERM, SIGINT; submitit owns them in its jobs
    exit_code = 0
    try:
        with engine.stop.installed(stop_signals):
            for epoch in range(start_epoch, t.epochs + 1):
                batches = data.train.epoch(epoch, start_step=epoch_state.step)
                if dist.enabled:
                    batches = _shard(batches, dist.rank, dist.world_size)
                epoch_state = engine.train_epoch(batches, epoch, steps, epoch_state)
                if engine.stop.signum is not None and epoch_state.step < steps:
                    checkpoint(epoch - 1, epoch_state)
                    results.update(
                        status="interrupted",
                        wall_seconds=wall_before + time.perf_counter() - started,
                        error=f"stopped by signal {engine.stop.signum} at epoch {epoch}, "
                        f"step {epoch_state.step}; rerun the same command to resume",
                    )
                    folder.write_results(results)
                    _log(results["error"])
                    exit_code = 128 + engine.stop.signum
                    break
                row = _epoch_row(epoch, schedule, steps, epoch_state, dist.world_size)
                if epoch % t.eval_every == 0 or epoch == t.epochs:
                    eval_start = time.perf_counter()
                    val = data.val.epoch(epoch)
                    if dist.enabled:
                        val = _shard(val, dist.rank, dist.world_size)
                    row.update(engine.evaluate(val, t.limit_val_batches))
                    row["epoch_seconds"] += time.perf_counter() - eval_start
                history.append(row)
                improved = row["val_top1_err"] is not None and (
                    best is None or row["val_top1_err"] < best["val_top1_err"]
                )
                if improved:
                    best = {"epoch": epoch, "val_top1_err": row["val_top1_err"]}
                epoch_state = EpochState()
                checkpoint(epoch, epoch_state)
                if improved and t.save_best and dist.is_main:
                    ckpt_io.atomic_save(
                        {
                            "format": ckpt_io.CHECKPOINT_FORMAT,
                            "model": model.state_dict(),
                            "epoch": epoch,
                            "run_config": run_config,
                            "val_top1_err": row["val_top1_err"],
                        },
                        folder.best,
                        keep_previous=False,
                    )
                folder.append_metrics(row)
                if logger is not None:
                    logger.log_epoch(row)
                results.update(
                    epochs_completed=epoch,
                    **_errors_summary(history),
                    wall_seconds=wall_before + time.perf_counter() - started,
                )
                folder.write_results(results)
                _log(_epoch_line(row, t.epochs))
                if engine.stop.signum is not None:
                    results.update(
                        status="interrupted",
                        error=f"stopped by signal {engine.stop.signum} after "
                        f"epoch {epoch}; rerun the same command to resume",
                    )
                    folder.write_results(results)
                    exit_code = 128 + engine.stop.signum
                    break
            else:
                results["status"] = "completed"
                folder.write_results(results)
                _log(
                    f"done: top-1 error {results['top1_err_last']:.2f}% (best {results['top1_err_best']:.2f}%) "
                    f"in {results['wall_seconds']:.1f}s; results in {run_dir}"
                )
    except Diverged as error:
        results.update(
            status="diverged",
            error=str(error),
            diverged_epoch=error.epoch,
            diverged_step=error.step,
            wall_seconds=wall_before + time.perf_counter() - started,
        )
        folder.write_results(results)
        _log(
            f"{error}: run stopped with status diverged (set trainer.on_nonfinite=skip to skip such batches)"
        )
        exit_code = 3
    except BaseException as error:
        results.update(
            status="failed",
            error=_one_line(error),
            wall_seconds=wall_before + time.perf_counter() - started,
        )
        folder.write_results(results)
        if logger is not None:
            logger.finish("failed", _summary(results))
        raise
    if logger is not None:
        logger.finish(results["status"], _summary(results))
    return exit_code


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _epoch_row(
    epoch: int, schedule: LRSchedule, steps: int, state: EpochState, world_size: int
) -> dict:
    lr = schedule.lr_at((epoch - 1) * schedule.steps_per_epoch + max(0, steps - 1))
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
        f"val loss {row['val_loss']:.4f} top-1 err {row['val_top1_err']:.2f}% top-5 err {row['val_top5_err']:.2f}%"
        if row["val_top1_err"] is not None
        else "no evaluation"
    )
    return (
        f"epoch {row['epoch']}/{epochs} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} {val} "
        f"({row['epoch_seconds']:.1f}s, {row['images_per_second']:.0f} img/s)"
    )


def _errors_summary(history: list[dict]) -> dict:
    evaluated = [row for row in history if row.get("val_top1_err") is not None]
    if not evaluated:
        return {
            "top1_err_last": None,
            "top1_err_best": None,
            "top5_err_last": None,
            "top5_err_best": None,
            "val_loss_last": None,
        }
    last = evaluated[-1]
    return {
        "top1_err_last": last["val_top1_err"],
        "top1_err_best": min(row["val_top1_err"] for row in evaluated),
        "top5_err_last": last["val_top5_err"],
        "top5_err_best": min(row["val_top5_err"] for row in evaluated),
        "val_loss_last": last["val_loss"],
    }


def _summary(results: dict) -> dict:
    keys = (
        "top1_err_last",
        "top1_err_best",
        "top5_err_last",
        "top5_err_best",
        "val_loss_last",
        "wall_seconds",
        "epochs_completed",
        "status",
        "num_params",
    )
    return {key: results.get(key) for key in keys}


def _check_same_run(state: dict, run_config: dict) -> None:
    saved = state.get("run_config") or {}
    for key in ("dataset", "model", "mixing", "seed"):
        if key in saved and saved[key] != run_config[key]:
            raise ConfigError(
                f"{key}: the checkpoint in this run folder was trained with {key}={saved[key]}, not "
                f"{run_config[key]}; use a new output folder or the original settings"
            )


def _code_revision() -> str | None:
    """The git revision of the code this run executes: for a frozen sweep, the one it was frozen at."""
    from dcutmix.tracking import git_revision, read_json

    snapshot = read_json(REPO_ROOT / "snapshot.json")
    if isinstance(snapshot, dict) and snapshot.get("git_revision"):
        return snapshot["git_revision"]
    return git_revision(REPO_ROOT)


def _start_logger(cfg: DictConfig, run_dir: Path, run_name: str, run_config: dict, num_params: int):
    from dcutmix.tracking import NullLogger, WandbLogger, flatten_config

    if cfg.logger.name == "none":
        return NullLogger()
    config = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    config.update(
        {
            "mixing.mode": cfg.mixing.mode,
            "mixing.k": run_config["mixing"]["k"],
            "mixing.alpha": run_config["mixing"]["alpha"],
            "model": cfg.model.name,
            "dataset": cfg.dataset.name,
            "seed": cfg.trainer.seed,
            "num_params": num_params,
            "git_revision": _code_revision(),
        }
    )
    return WandbLogger.start(
        run_dir,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.experiment_name
        if cfg.sweep_name == "adhoc" and cfg.experiment_name
        else cfg.sweep_name,
        name=run_name,
        job_type=cfg.mixing.mode,
        tags=[*cfg.logger.tags, cfg.dataset.name, cfg.model.name, cfg.mixing.mode],
        config=config,
        mode=cfg.logger.mode,
    )


def _evaluate_checkpoint(
    cfg, model, data, device, folder: RunFolder, run_config, num_params, dist
) -> int:
    from dcutmix.models import load_authors_state_dict

    path = Path(cfg.ckpt).expanduser()
    state = ckpt_io.load_file(path, map_location=device)
    weights = ckpt_io.extract_model_state(state)
    try:
        load_authors_state_dict(model, weights)
    except ConfigError as error:
        raise ConfigError(f"ckpt: {path} does not fit model={cfg.model.name}: {error}") from None
    amp_dtype = _amp_dtype(cfg.trainer.amp, device)
    engine = Engine(
        model=model,
        optimizer=None,
        schedule=None,
        mixer=None,
        device=device,
        seed=cfg.trainer.seed,
        amp_dtype=amp_dtype,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    started = time.perf_counter()
    val = data.val.epoch(1)
    if dist.enabled:
        val = _shard(val, dist.rank, dist.world_size)
    metrics = engine.evaluate(val, cfg.trainer.limit_val_batches)
    results = {
        "status": "completed",
        "eval_only": True,
        "checkpoint": str(path),
        "epochs_completed": 0,
        "epochs": 0,
        "top1_err_last": metrics["val_top1_err"],
        "top1_err_best": metrics["val_top1_err"],
        "top5_err_last": metrics["val_top5_err"],
        "top5_err_best": metrics["val_top5_err"],
        "val_loss_last": metrics["val_loss"],
        "wall_seconds": time.perf_counter() - started,
        "num_params": num_params,
        "error": None,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "run_name": cfg.run_name,
        "config": run_config,
    }
    folder.write_results(results)
    _log(
        f"evaluated {path}: top-1 error {metrics['val_top1_err']:.2f}%, top-5 error "
        f"{metrics['val_top5_err']:.2f}%, loss {metrics['val_loss']:.4f}"
    )
    return 0


def task(cfg: DictConfig) -> int:
    """The Hydra task: one job. Failures are recorded in the run folder and turned into exit codes."""
    from hydra.core.hydra_config import HydraConfig

    global _exit_code
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        code = train_run(cfg, run_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        _record_failure(run_dir, cfg, str(error))
        code = 2
    except Exception as error:
        traceback.print_exc()
        _record_failure(run_dir, cfg, _one_line(error))
        code = 1
    _exit_code = max(_exit_code, code)
    return code


def _record_failure(run_dir: Path, cfg: DictConfig, message: str) -> None:
    """Note a failure for the report, without overwriting what an earlier attempt wrote."""
    from dcutmix.tracking import atomic_write_json

    results = run_dir / "results.json"
    if results.exists() or not os.access(run_dir, os.W_OK):
        return
    try:
        config = _run_config(cfg)
    except Exception:
        config = None
    with contextlib.suppress(OSError):
        atomic_write_json(
            results,
            {
                "status": "failed",
                "error": message,
                "epochs_completed": 0,
                "epochs": cfg.trainer.epochs,
                "run_name": cfg.run_name,
                "config": config,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "updated_at": _now(),
            },
        )


class SweepSummary(Callback):
    """Hydra callback: names the sweep folder and, at the end, summarises its jobs from their files.

    It reads each job's results.json, so it sees the same truth for local and Slurm jobs, and
    makes the multirun exit non-zero when any job did not complete.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dcutmix.tracking import atomic_write_json

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            sweep_dir / "sweep.json",
            {
                "name": config.sweep_name,
                "started_at": _now(),
                "command": sys.argv[1:],
                "launcher": config.hydra.launcher.get("_target_"),
            },
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from dcutmix.tracking import read_json

        global _exit_code
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses: dict[str, list[str]] = {}
        for results_path in sorted(sweep_dir.glob("*/results.json")):
            results = read_json(results_path) or {}
            status = results.get("status", "unknown")
            line = results_path.parent.name + (
                f" ({results['error']})" if results.get("error") else ""
            )
            statuses.setdefault(status, []).append(line)
        total = sum(len(v) for v in statuses.values())
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(statuses.items()))
        _log(f"sweep {config.sweep_name}: {total} jobs: {counts}; folder {sweep_dir}")
        failed = {k: v for k, v in statuses.items() if k != "completed"}
        for status, jobs in failed.items():
            for job in jobs:
                _log(f"  {status}: {job}")
        if failed:
            _log(f"summarise with: dcutmix-report {sweep_dir}")
            _exit_code = max(_exit_code, 1)


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

    from dcutmix.config import precheck

    register()
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun only rank 0 writes; the others keep Hydra's own files out of the way.
        sys.argv += [
            "hydra.output_subdir=null",
            "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled",
        ]
    argv = sys.argv[1:]
    if not _NO_PRECHECK_FLAGS.intersection(a.split("=")[0] for a in argv) and not os.environ.get(
        "HYDRA_FULL_ERROR"
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
