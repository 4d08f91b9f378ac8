"""Analyses of one run folder: which runs qualify, loading them, writing analysis.json."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcutmix.analyze.calibration import calibration
from dcutmix.analyze.common import (
    ANALYSIS_FILE,
    ANALYSIS_FORMAT,
    CHECKPOINTS,
    DEFAULT_DIRECTIONS,
    DEFAULT_MAX_IMAGES,
    DEFAULT_SIGMAS,
    ECE_BINS,
    FGSM_EPSILONS,
)
from dcutmix.analyze.entropy import entropy_summary
from dcutmix.analyze.fgsm import Evaluation, evaluate_with_fgsm
from dcutmix.analyze.landscape import loss_landscape
from dcutmix.errors import InputError
from dcutmix.store.files import atomic_write_json, read_json
from dcutmix.store.results import Status
from dcutmix.store.run_folder import find_run_folders

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    return run_dir / "checkpoints" / f"{checkpoint}.pt"


def skip_reason(run_dir: Path, checkpoint: str = "last") -> str | None:
    """Why ``run_dir`` cannot be analysed (not finished, no checkpoint or config), or None."""
    results = read_json(run_dir / "results.json")
    if not isinstance(results, dict):
        return "no readable results.json, so the run never started training"
    if results.get("status") != Status.COMPLETED:
        return f"status is {results.get('status')!r}, not 'completed'"
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        return "no .hydra/config.yaml to rebuild the model and data from"
    if not _checkpoint_path(run_dir, checkpoint).is_file():
        hint = " (was trainer.save_best off?)" if checkpoint == "best" else ""
        return f"no checkpoints/{checkpoint}.pt{hint}"
    return None


def find_runs(paths: Iterable[Path | str]) -> list[Path]:
    """Run folders named by ``paths``: each a run folder, or a sweep folder searched for runs."""
    runs: dict[Path, None] = {}  # ordered and without repeats
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            problem = "does not exist" if not path.exists() else "is not a folder"
            raise InputError("PATH", f"{raw} {problem}; give run folders or sweep folders")
        found = list(find_run_folders(path))
        if not found:
            raise InputError(
                "PATH",
                f"{raw} holds no run folders (folders with results.json or .hydra/config.yaml)",
            )
        runs.update(dict.fromkeys(found))
    return list(runs)


def check_options(
    *,
    checkpoint: str,
    max_images: int | None,
    directions: int,
    sigmas: Sequence[float],
    batch_size: int | None,
) -> None:
    """Raise InputError, naming the option, for a setting no analysis can use."""
    if checkpoint not in CHECKPOINTS:
        raise InputError("--checkpoint", f"{checkpoint!r} is not valid; use last or best")
    if max_images is not None and max_images < 1:
        raise InputError(
            "--max-images", f"{max_images} is not valid; use a whole number >= 1 or all"
        )
    if directions < 1:
        raise InputError("--directions", f"{directions} is not valid; use a whole number >= 1")
    if not sigmas or any(not math.isfinite(s) or s < 0 for s in sigmas):
        raise InputError(
            "--sigmas", f"{list(sigmas)} is not valid; give finite values >= 0, e.g. 0,0.002,0.004"
        )
    if batch_size is not None and batch_size < 1:
        raise InputError("--batch-size", f"{batch_size} is not valid; use a whole number >= 1")


def analysis_settings(
    checkpoint: str, max_images: int | None, directions: int, sigmas: Sequence[float], seed: int
) -> dict[str, Any]:
    """What decides an analysis's figures; an analysis.json made with the same ones is reused."""
    return {
        "format": ANALYSIS_FORMAT,
        "checkpoint": checkpoint,
        "max_images": max_images,
        "directions": directions,
        "sigmas": [float(s) for s in sigmas],
        "seed": seed,
        "fgsm_epsilons_255": list(FGSM_EPSILONS),
        "ece_bins": ECE_BINS,
    }


def _checkpoint_stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def up_to_date(run_dir: Path, settings: dict[str, Any], checkpoint: str) -> bool:
    """Whether analysis.json was made with ``settings`` from the checkpoint file now in place."""
    previous = read_json(run_dir / ANALYSIS_FILE)
    stamp = _checkpoint_stamp(_checkpoint_path(run_dir, checkpoint))
    return (
        isinstance(previous, dict)
        and previous.get("settings") == settings
        and (previous.get("checkpoint") or {}).get("stamp") == stamp
    )


def _take(
    batches: Iterator[tuple[Tensor, Tensor]], max_images: int | None
) -> list[tuple[Tensor, Tensor]]:
    """The first ``max_images`` images (all when None) in loader order, as a reusable list."""
    taken, count = [], 0
    for images, labels in batches:
        if max_images is not None and count + labels.shape[0] >= max_images:
            keep = max_images - count
            taken.append((images[:keep], labels[:keep]))
            break
        taken.append((images, labels))
        count += labels.shape[0]
    return taken


@dataclass
class _Run:
    model: nn.Module
    data: Any  # dcutmix.data.DataBundle
    checkpoint: dict[str, Any]
    dataset: dict[str, Any]  # the dataset config the data was built from


def load_run(
    run_dir: Path,
    checkpoint: str,
    device: torch.device,
    batch_size: int | None,
    whole_training_set: bool = False,
) -> _Run:
    """The run's model with its checkpoint's weights, and its data, as its config describes them
    (``whole_training_set``: without the run's ``dataset.subset``)."""
    from omegaconf import OmegaConf

    from dcutmix.config import register
    from dcutmix.data import build_data
    from dcutmix.models import build_model
    from dcutmix.run import checkpoint as ckpt_io

    register()  # the resolvers the saved config may name
    config_path = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(config_path)
        dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{config_path}", f"cannot read the dataset, model and trainer settings ({first})"
        ) from None
    if whole_training_set:
        dataset.pop("subset", None)
    # The run's own seed: a dataset may draw its validation split from it.
    data = build_data(
        dataset,
        batch_size=trainer["batch_size"],
        device=device,
        seed=trainer["seed"],
        eval_batch_size=batch_size or trainer.get("eval_batch_size"),
    )
    name = model_cfg.pop("name")
    model = build_model(
        name, num_classes=data.num_classes, in_channels=data.in_channels, **model_cfg
    )
    path = _checkpoint_path(run_dir, checkpoint)
    state = ckpt_io.load_file(path, map_location=device)
    try:
        model.load_state_dict(ckpt_io.extract_model_state(state))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(
            "ckpt", f"{path} does not fit model {name} of .hydra/config.yaml ({first})"
        ) from None
    model.to(device)
    record = {"kind": checkpoint, "file": f"checkpoints/{path.name}", "epoch": state.get("epoch")}
    return _Run(model, data, record, dataset)


def analyze_run(
    run_dir: Path,
    *,
    checkpoint: str = "last",
    max_images: int | None = DEFAULT_MAX_IMAGES,
    directions: int = DEFAULT_DIRECTIONS,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Analyse a finished run's checkpoint and write ``analysis.json`` into ``run_dir``; returns it.

    ``max_images=None`` takes every validation image; ``progress`` draws a bar on stderr.
    """
    import torch

    check_options(
        checkpoint=checkpoint,
        max_images=max_images,
        directions=directions,
        sigmas=sigmas,
        batch_size=batch_size,
    )
    run_dir = Path(run_dir)
    reason = skip_reason(run_dir, checkpoint)
    if reason is not None:
        raise InputError("PATH", f"{run_dir} cannot be analysed: {reason}")
    stamp = _checkpoint_stamp(_checkpoint_path(run_dir, checkpoint))
    started = time.perf_counter()
    device = torch.device(device)
    run = load_run(run_dir, checkpoint, device, batch_size)
    batches = _take(iter(run.data.val.epoch(1)), max_images)
    evaluation, landscape = _measure(run, batches, sigmas, directions, seed, run_dir.name, progress)
    results = read_json(run_dir / "results.json") or {}
    analysis = {
        "format": ANALYSIS_FORMAT,
        "run_name": results.get("run_name", run_dir.name),
        "mode": ((results.get("config") or {}).get("mixing") or {}).get("mode"),
        "checkpoint": {**run.checkpoint, "stamp": stamp},
        "settings": analysis_settings(checkpoint, max_images, directions, sigmas, seed),
        **_figures(evaluation, landscape, run.data.num_classes),
        "device": str(device),
        "seconds": time.perf_counter() - started,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(run_dir / ANALYSIS_FILE, analysis)
    return analysis


def _measure(
    run: _Run,
    batches: list,
    sigmas: Sequence[float],
    directions: int,
    seed: int,
    desc: str,
    progress: bool,
) -> tuple[Evaluation, dict[str, Any]]:
    """The clean and FGSM pass, then the loss landscape, under one progress bar."""
    from dcutmix.run.progress import Progress

    total = len(batches) * (1 + directions * len(sigmas))
    bar = Progress(total, desc=desc, every=-(-total // 10), enabled=progress)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        bar.update(done, None)

    try:
        evaluation = evaluate_with_fgsm(
            run.model,
            batches,
            epsilons=[e / 255 for e in FGSM_EPSILONS],
            mean=run.data.mean,
            std=run.data.std,
            tick=tick,
        )
        landscape = loss_landscape(
            run.model, batches, sigmas, directions=directions, seed=seed, tick=tick
        )
    finally:
        bar.close()
    return evaluation, landscape


def _figures(evaluation: Evaluation, landscape: dict[str, Any], num_classes: int) -> dict:
    """analysis.json's measured part, in its key order (images ... predictive_entropy)."""
    ece, bins = calibration(evaluation.confidence, evaluation.correct)
    return {
        "images": int(evaluation.correct.numel()),
        "num_classes": num_classes,
        "clean": {
            "top1_err": evaluation.top1_err,
            "top5_err": evaluation.top5_err,
            "nll": evaluation.nll,
        },
        "fgsm": {
            "epsilons_255": list(FGSM_EPSILONS),
            "top1_err": evaluation.fgsm_top1_err,
            "space": "pixels in [0, 1]: unnormalise, step, clamp, renormalise",
        },
        "calibration": {"ece": ece, "bins": bins},
        "loss_landscape": landscape,
        "predictive_entropy": {
            **entropy_summary(evaluation.entropy, evaluation.correct),
            "max": math.log(num_classes),
        },
    }


def analysis_columns(run_dir: Path) -> dict[str, float]:
    """Flat figures from ``run_dir/analysis.json`` for table columns; empty when there is none.

    Errors and ECE are in %, NLL and entropy in nats; a figure recorded as null becomes NaN.
    """
    analysis = read_json(Path(run_dir) / ANALYSIS_FILE)
    if not isinstance(analysis, dict):
        return {}

    def number(value: float | None) -> float:
        return math.nan if value is None else float(value)

    clean, fgsm = analysis["clean"], analysis["fgsm"]
    columns = {
        "clean_top1_err": number(clean["top1_err"]),
        "clean_top5_err": number(clean["top5_err"]),
        "nll": number(clean["nll"]),
        "ece": number(analysis["calibration"]["ece"]),
    }
    for epsilon, error in zip(fgsm["epsilons_255"], fgsm["top1_err"], strict=True):
        columns[f"fgsm_top1_err@{epsilon:g}"] = number(error)
    columns["predictive_entropy_mean"] = number(analysis["predictive_entropy"]["mean"])
    return columns
