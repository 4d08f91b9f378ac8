"""``dcutmix-analyze PATH...``: robustness, calibration and loss-landscape analyses of trained runs.

For every finished run folder (or every run found in a sweep folder) it rebuilds the model and the
validation data from ``.hydra/config.yaml``, loads ``checkpoints/last.pt`` (or ``best.pt``), takes
the first ``--max-images`` validation images in loader order, and writes ``analysis.json`` into the
run folder, atomically:

- ``clean``: top-1 and top-5 error (%) and negative log-likelihood (nats per image);
- ``fgsm``: top-1 error (%) under a one-step FGSM attack at epsilon 1, 2, 4 and 8 (/255). The step
  is taken in pixel space: the normalisation is undone, the image moved by epsilon times the sign
  of the loss gradient, clamped to [0, 1] and normalised again;
- ``calibration``: expected calibration error (%) over 15 equal-width confidence bins, and per
  bin its count, mean confidence and accuracy (a reliability diagram);
- ``loss_landscape``: validation loss (and top-1 error) against sigma for random Gaussian
  perturbations of the weights, averaged over ``--directions`` directions;
- ``predictive_entropy``: the entropy (nats) of each image's predicted distribution, summarised
  over all images and over correct and incorrect ones. This is plain predictive entropy; the
  paper's own uncertainty measure could not be checked, so none is claimed to match it.

Loss landscape choices. The perturbation is absolute, as in the paper's figure: every element of
every convolution's and linear layer's ``weight`` gets ``sigma * N(0, 1)`` added, with no scaling
by filter or parameter norm. Biases, BatchNorm's affine parameters and its running statistics are
left alone, and the model stays in eval mode. Because the scale is absolute, curves compare models
of one architecture (whose weight norms are alike), not architectures. The directions come from a
CPU generator seeded with ``--seed``, so they are the same on every device, and direction ``i``
does not depend on how many are drawn. Each point starts from a copy of the trained weights, which
are restored bit for bit afterwards.

Everything runs in float32 without autocast, and the image subset is held in memory on the device.
torch is imported only inside the functions that compute, so the report can read analyses
(``analysis_columns``, ``plot_analyses``) without loading it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcutmix.errors import InputError
from dcutmix.files import atomic_save_figure, atomic_write_json, read_json

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = [
    "DEFAULT_SIGMAS",
    "ECE_BINS",
    "FGSM_EPSILONS",
    "Evaluation",
    "analysis_columns",
    "analyze_run",
    "calibration",
    "check_options",
    "entropy_summary",
    "evaluate_with_fgsm",
    "find_runs",
    "loss_landscape",
    "main",
    "perturbed_weights",
    "plot_analyses",
    "skip_reason",
]

ANALYSIS_FORMAT = 1
ANALYSIS_FILE = "analysis.json"
DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.002, 0.004, 0.006, 0.008, 0.010, 0.012)
FGSM_EPSILONS: tuple[int, ...] = (1, 2, 4, 8)  # in units of 1/255 of the [0, 1] pixel range
ECE_BINS = 15
DEFAULT_MAX_IMAGES = 1000
DEFAULT_DIRECTIONS = 3
CHECKPOINTS = ("last", "best")
PLOT_LOSS_LANDSCAPE = "plot_loss_landscape.png"
PLOT_FGSM = "plot_fgsm.png"
PLOT_RELIABILITY = "plot_reliability.png"

Batches = Sequence[tuple["Tensor", "Tensor"]]
Tick = Callable[[], None]


def _log(message: str) -> None:
    print(f"[dcutmix] {message}", file=sys.stderr, flush=True)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged figure is written as null."""
    return value if math.isfinite(value) else None


@dataclass
class Evaluation:
    """Clean figures, FGSM errors and the per-image outcomes the other analyses need."""

    nll: float
    top1_err: float
    top5_err: float
    fgsm_top1_err: list[float]  # top-1 error in %, one per epsilon
    confidence: Tensor  # (N,) largest predicted probability, float64 on the CPU
    correct: Tensor  # (N,) whether the top-1 prediction is right, bool on the CPU
    entropy: Tensor  # (N,) predictive entropy in nats, float64 on the CPU


def evaluate_with_fgsm(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    epsilons: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
    tick: Tick | None = None,
) -> Evaluation:
    """Clean metrics and the FGSM top-1 error at each epsilon (pixel units, images in [0, 1]).

    ``batches`` yield normalised images, ``(pixels - mean) / std``, and integer labels.
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    per_image: dict[str, list[Tensor]] = {
        key: [] for key in ("nll", "top1", "top5", "confidence", "entropy", "fgsm_wrong")
    }
    for images, labels in batches:
        inputs = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(inputs).float()
            losses = F.cross_entropy(logits, labels, reduction="none")
            (gradient,) = torch.autograd.grad(losses.sum(), inputs)
        logits = logits.detach()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels.unsqueeze(1)
        probs = logits.double().softmax(dim=1)
        per_image["nll"].append(losses.detach().double())
        per_image["top1"].append(hits[:, 0])
        per_image["top5"].append(hits.any(dim=1))
        per_image["confidence"].append(probs.amax(dim=1))
        per_image["entropy"].append(torch.special.entr(probs).sum(dim=1))
        per_image["fgsm_wrong"].append(
            _fgsm_wrong(model, images, labels, gradient, epsilons, mean, std)
        )
        if tick is not None:
            tick()
    if not per_image["nll"]:
        raise InputError("--max-images", "the validation set yielded no images to analyse")
    # One copy to the CPU at the end, so the device is never waited on per batch.
    outcome = {key: torch.cat(parts).cpu() for key, parts in per_image.items()}
    return Evaluation(
        nll=float(outcome["nll"].mean()),
        top1_err=100.0 * (1.0 - float(outcome["top1"].double().mean())),
        top5_err=100.0 * (1.0 - float(outcome["top5"].double().mean())),
        fgsm_top1_err=(100.0 * outcome["fgsm_wrong"].double().mean(dim=0)).tolist(),
        confidence=outcome["confidence"],
        correct=outcome["top1"],
        entropy=outcome["entropy"],
    )


def _fgsm_wrong(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    gradient: Tensor,
    epsilons: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """Whether each image is misclassified after an FGSM step of each epsilon, shape (B, E)."""
    import torch

    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    # Normalising divides by a positive std, so the pixel-space gradient has the same sign.
    step = gradient.sign()
    # Clamping the clean pixels first makes epsilon 0 give back the clean input exactly.
    pixels = (images * std_t + mean_t).clamp(0.0, 1.0)
    wrong = []
    with torch.no_grad():
        for epsilon in epsilons:
            moved = (pixels + epsilon * step).clamp(0.0, 1.0)
            wrong.append(model(images + (moved - pixels) / std_t).argmax(dim=1) != labels)
    if not wrong:
        return labels.new_zeros((labels.shape[0], 0), dtype=torch.bool)
    return torch.stack(wrong, dim=1)


def calibration(
    confidence: Tensor, correct: Tensor, bins: int = ECE_BINS
) -> tuple[float, list[dict[str, Any]]]:
    """Expected calibration error in % and reliability-diagram bins over ``bins`` equal-width bins.

    Bin ``b`` holds confidences in ``(b/bins, (b+1)/bins]`` (the first also holds 0); each bin
    reports its edges, count, mean confidence and accuracy (both None when it is empty).
    """
    import torch

    confidence = confidence.double().flatten().cpu()
    correct = correct.double().flatten().cpu()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    index = torch.searchsorted(edges[1:-1], confidence)
    counts = torch.bincount(index, minlength=bins).double()
    filled = counts > 0
    mean_confidence = torch.bincount(index, confidence, minlength=bins) / counts.clamp(min=1)
    accuracy = torch.bincount(index, correct, minlength=bins) / counts.clamp(min=1)
    gaps = counts * (mean_confidence - accuracy).abs()
    ece = 100.0 * float(gaps.sum()) / max(1, confidence.numel())
    table = [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(counts[b]),
            "confidence": float(mean_confidence[b]) if filled[b] else None,
            "accuracy": float(accuracy[b]) if filled[b] else None,
        }
        for b in range(bins)
    ]
    return ece, table


def entropy_summary(entropy: Tensor, correct: Tensor) -> dict[str, Any]:
    """Mean and median predictive entropy over all images, and over correct and incorrect ones."""

    def summary(values: Tensor) -> dict[str, Any]:
        values = values.double()
        if values.numel() == 0:
            return {"count": 0, "mean": None, "median": None}
        # quantile, not median: torch's median returns the lower middle value of an even count
        median = float(values.quantile(0.5))
        return {"count": values.numel(), "mean": float(values.mean()), "median": median}

    correct = correct.bool()
    overall = summary(entropy)
    return {
        "mean": overall["mean"],
        "median": overall["median"],
        "correct": summary(entropy[correct]),
        "incorrect": summary(entropy[~correct]),
    }


def perturbed_weights(model: nn.Module) -> list[nn.Parameter]:
    """The tensors the loss landscape perturbs: each convolution's and linear layer's ``weight``."""
    from torch import nn

    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    unique: dict[int, nn.Parameter] = {}  # a weight shared by two layers moves once
    for module in model.modules():
        if isinstance(module, layers):
            unique.setdefault(id(module.weight), module.weight)
    return list(unique.values())


def _loss_and_error(model: nn.Module, batches: Batches, tick: Tick | None) -> tuple[float, float]:
    import torch.nn.functional as F

    loss, wrong, count = 0.0, 0.0, 0
    for images, labels in batches:
        logits = model(images).float()
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        wrong += float((logits.argmax(dim=1) != labels).sum())
        count += labels.shape[0]
        if tick is not None:
            tick()
    return loss / count, 100.0 * wrong / count


def loss_landscape(
    model: nn.Module,
    batches: Batches,
    sigmas: Sequence[float],
    *,
    directions: int,
    seed: int,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Validation loss and top-1 error at ``weights + sigma * direction``, random Gaussian directions.

    Only ``perturbed_weights(model)`` move, by an absolute (unnormalised) sigma; the trained
    weights are restored exactly afterwards, also when an evaluation fails.
    """
    import torch

    model.eval()
    weights = perturbed_weights(model)
    trained = [w.detach().clone() for w in weights]
    generator = torch.Generator().manual_seed(seed)
    losses = torch.empty(directions, len(sigmas), dtype=torch.float64)
    errors = torch.empty_like(losses)
    try:
        with torch.no_grad():
            for d in range(directions):
                # Drawn on the CPU so that a seed gives the same directions on every device.
                noise = [
                    torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
                    for w in weights
                ]
                for s, sigma in enumerate(sigmas):
                    for weight, original, direction in zip(weights, trained, noise, strict=True):
                        weight.copy_(original).add_(direction, alpha=sigma)
                    losses[d, s], errors[d, s] = _loss_and_error(model, batches, tick)
    finally:
        with torch.no_grad():
            for weight, original in zip(weights, trained, strict=True):
                weight.copy_(original)
    return {
        "sigmas": [float(s) for s in sigmas],
        "loss": [_finite(v) for v in losses.mean(dim=0).tolist()],
        "top1_err": [_finite(v) for v in errors.mean(dim=0).tolist()],
        "loss_per_direction": [[_finite(v) for v in row] for row in losses.tolist()],
        "directions": directions,
        "seed": seed,
        "scale": "absolute: each element of a perturbed weight gets sigma * N(0, 1)",
        "perturbed": "the weight of every Conv and Linear layer; biases and BatchNorm untouched",
    }


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    return run_dir / "checkpoints" / f"{checkpoint}.pt"


def skip_reason(run_dir: Path, checkpoint: str = "last") -> str | None:
    """Why ``run_dir`` cannot be analysed (not finished, no checkpoint or config), or None."""
    results = read_json(run_dir / "results.json")
    if not isinstance(results, dict):
        return "no readable results.json, so the run never started training"
    if results.get("status") != "completed":
        return f"status is {results.get('status')!r}, not 'completed'"
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        return "no .hydra/config.yaml to rebuild the model and data from"
    if not _checkpoint_path(run_dir, checkpoint).is_file():
        hint = " (was trainer.save_best off?)" if checkpoint == "best" else ""
        return f"no checkpoints/{checkpoint}.pt{hint}"
    return None


def _is_run(path: Path) -> bool:
    return (path / "results.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_runs(paths: Iterable[Path | str]) -> list[Path]:
    """Run folders named by ``paths``: each a run folder, or a sweep folder searched for runs."""
    runs: dict[Path, None] = {}  # ordered and without repeats
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            problem = "does not exist" if not path.exists() else "is not a folder"
            raise InputError("PATH", f"{raw} {problem}; give run folders or sweep folders")
        if _is_run(path):
            runs[path] = None
            continue
        found = {p.parent for p in path.rglob("results.json")}
        found |= {p.parent.parent for p in path.rglob("config.yaml") if p.parent.name == ".hydra"}
        if not found:
            raise InputError(
                "PATH",
                f"{raw} holds no run folders (folders with results.json or .hydra/config.yaml)",
            )
        runs.update(dict.fromkeys(sorted(found)))
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


def _settings(
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


def _up_to_date(run_dir: Path, settings: dict[str, Any], checkpoint: str) -> bool:
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


def _load_run(run_dir: Path, checkpoint: str, device: torch.device, batch_size: int | None) -> _Run:
    """The run's model with its checkpoint's weights, and its data, as its config describes them."""
    from omegaconf import OmegaConf

    from dcutmix import checkpoint as ckpt_io
    from dcutmix.config import register
    from dcutmix.data import build_data
    from dcutmix.models import build_model

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
    return _Run(model, data, record)


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

    from dcutmix.progress import Progress

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
    run = _load_run(run_dir, checkpoint, device, batch_size)
    batches = _take(iter(run.data.val.epoch(1)), max_images)
    total = len(batches) * (1 + directions * len(sigmas))
    bar = Progress(total, desc=run_dir.name, every=-(-total // 10), enabled=progress)
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
    ece, bins = calibration(evaluation.confidence, evaluation.correct)
    results = read_json(run_dir / "results.json") or {}
    analysis = {
        "format": ANALYSIS_FORMAT,
        "run_name": results.get("run_name", run_dir.name),
        "mode": ((results.get("config") or {}).get("mixing") or {}).get("mode"),
        "checkpoint": {**run.checkpoint, "stamp": stamp},
        "settings": _settings(checkpoint, max_images, directions, sigmas, seed),
        "images": int(evaluation.correct.numel()),
        "num_classes": run.data.num_classes,
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
            "max": math.log(run.data.num_classes),
        },
        "device": str(device),
        "seconds": time.perf_counter() - started,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(run_dir / ANALYSIS_FILE, analysis)
    return analysis


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


Curve = tuple[list[float], list[float], list[float], int]  # x, mean, standard deviation, runs


def _mean_curve(curves: list[tuple[list[float], list[float | None]]]) -> Curve:
    """The x values all curves share, and the mean and standard deviation over curves at each."""
    points = [dict(zip(xs, ys, strict=True)) for xs, ys in curves]
    shared = sorted(set(points[0]).intersection(*points[1:]))
    columns = [[math.nan if p[x] is None else p[x] for p in points] for x in shared]
    return (
        shared,
        [statistics.fmean(c) for c in columns],
        [statistics.pstdev(c) for c in columns],
        len(curves),
    )


def _runs_label(mode: str, runs: int) -> str:
    return f"{mode} ({runs} run{'s' if runs > 1 else ''})"


def _line_plot(series: Mapping[str, Curve], labels: tuple[str, str, str], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for mode, (xs, mean, spread, runs) in series.items():
        (line,) = axes.plot(xs, mean, marker="o", label=_runs_label(mode, runs))
        if runs > 1:
            low = [m - s for m, s in zip(mean, spread, strict=True)]
            high = [m + s for m, s in zip(mean, spread, strict=True)]
            axes.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
    xlabel, ylabel, title = labels
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=150)
    return path


def _pool_bins(analyses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One reliability table from several runs: counts add, means are weighted by count."""
    pooled = []
    for column in zip(*(a["calibration"]["bins"] for a in analyses), strict=True):
        count = sum(b["count"] for b in column)
        filled = [b for b in column if b["count"]]
        pooled.append(
            {
                "lower": column[0]["lower"],
                "upper": column[0]["upper"],
                "count": count,
                "confidence": sum(b["count"] * b["confidence"] for b in filled) / count
                if count
                else None,
                "accuracy": sum(b["count"] * b["accuracy"] for b in filled) / count
                if count
                else None,
            }
        )
    return pooled


def _reliability_plot(pooled: Mapping[str, tuple[list[dict], float, int]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(4, len(pooled))
    rows = -(-len(pooled) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows))
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat[len(pooled) :]:
        axes.set_visible(False)
    for axes, (mode, (bins, ece, runs)) in zip(grid.flat, pooled.items(), strict=False):
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = bins[0]["upper"] - bins[0]["lower"]
        accuracy = [b["accuracy"] or 0.0 for b in bins]
        gap = [(b["confidence"] or 0.0) - a for b, a in zip(bins, accuracy, strict=True)]
        axes.bar(centres, accuracy, width=width, edgecolor="black", linewidth=0.5, label="accuracy")
        axes.bar(
            centres,
            gap,
            bottom=accuracy,
            width=width,
            color="tab:red",
            alpha=0.3,
            label="gap to confidence",
        )
        axes.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        axes.set_title(f"{_runs_label(mode, runs)}: ECE {ece:.2f}%", fontsize=9)
    grid.flat[0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=150)
    return path


def plot_analyses(runs_by_mode: dict[str, list[Path]], out_dir: Path) -> list[Path]:
    """Draw the loss-landscape, FGSM and reliability plots as PNGs, averaging each mode's runs.

    Runs without analysis.json are left out, and modes without any; returns the files written.
    """
    by_mode = {}
    for mode, runs in runs_by_mode.items():
        analyses = [read_json(Path(run) / ANALYSIS_FILE) for run in runs]
        if found := [a for a in analyses if isinstance(a, dict)]:
            by_mode[mode] = found
    if not by_mode:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    landscape, fgsm, reliability = {}, {}, {}
    for mode, analyses in by_mode.items():
        landscape[mode] = _mean_curve(
            [(a["loss_landscape"]["sigmas"], a["loss_landscape"]["loss"]) for a in analyses]
        )
        # Epsilon 0 is the clean error, so each FGSM curve starts from the unattacked model.
        fgsm[mode] = _mean_curve(
            [
                ([0, *a["fgsm"]["epsilons_255"]], [a["clean"]["top1_err"], *a["fgsm"]["top1_err"]])
                for a in analyses
            ]
        )
        ece = statistics.fmean(a["calibration"]["ece"] for a in analyses)
        reliability[mode] = (_pool_bins(analyses), ece, len(analyses))
    return [
        _line_plot(
            landscape,
            (
                "sigma (absolute, on Conv/Linear weights)",
                "validation loss",
                "Loss under random weight noise",
            ),
            out_dir / PLOT_LOSS_LANDSCAPE,
        ),
        _line_plot(
            fgsm,
            ("FGSM epsilon (/255)", "top-1 error (%)", "FGSM adversarial error"),
            out_dir / PLOT_FGSM,
        ),
        _reliability_plot(reliability, out_dir / PLOT_RELIABILITY),
    ]


class _Parser(argparse.ArgumentParser):
    """Argument errors as one InputError line instead of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse words its own messages; the legacy one-string form keys them on their prefix.
        raise InputError(message)


def _max_images(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; use a whole number >= 1 or all"
        ) from None


def _sigmas(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; give comma-separated numbers, e.g. 0,0.002,0.004"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dcutmix-analyze",
        description="Write analysis.json (clean and FGSM error, calibration, loss landscape, "
        "predictive entropy) into every finished run folder given or found in a sweep folder.",
    )
    add = parser.add_argument
    add("paths", nargs="+", metavar="PATH", help="run folders or sweep folders")
    add("--checkpoint", default="last", help="last (default) or best")
    add(
        "--max-images",
        type=_max_images,
        default=DEFAULT_MAX_IMAGES,
        help=f"validation images used, from the start (default {DEFAULT_MAX_IMAGES}; or all)",
    )
    add(
        "--directions",
        type=int,
        default=DEFAULT_DIRECTIONS,
        help=f"random weight directions (default {DEFAULT_DIRECTIONS})",
    )
    add(
        "--sigmas",
        type=_sigmas,
        default=DEFAULT_SIGMAS,
        help="comma-separated weight noise scales (default 0,0.002,...,0.012)",
    )
    add("--batch-size", type=int, help="images per batch (default: the run's eval batch size)")
    add("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    add("--seed", type=int, default=0, help="seed of the weight directions (default 0)")
    add("--force", action="store_true", help="redo analyses already made with these settings")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``dcutmix-analyze PATH... [options]``; returns the exit code."""
    from dcutmix.config import resolve_device

    try:
        args = _parser().parse_args(argv)
        check_options(
            checkpoint=args.checkpoint,
            max_images=args.max_images,
            directions=args.directions,
            sigmas=args.sigmas,
            batch_size=args.batch_size,
        )
        try:
            device = resolve_device(args.device)
        except InputError as error:  # its message names the training key
            raise InputError("--device", error.message) from None
        runs = find_runs(args.paths)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2

    settings = _settings(args.checkpoint, args.max_images, args.directions, args.sigmas, args.seed)
    analysed, skipped, failed = 0, 0, 0
    for run_dir in runs:
        reason = skip_reason(run_dir, args.checkpoint)
        if reason is not None:
            _log(f"skipping {run_dir}: {reason}")
            skipped += 1
            continue
        if not args.force and _up_to_date(run_dir, settings, args.checkpoint):
            _log(f"{run_dir}: {ANALYSIS_FILE} is up to date for these settings (--force redoes it)")
            analysed += 1
            continue
        try:
            analysis = analyze_run(
                run_dir,
                checkpoint=args.checkpoint,
                max_images=args.max_images,
                directions=args.directions,
                sigmas=args.sigmas,
                seed=args.seed,
                batch_size=args.batch_size,
                device=device,
            )
        except InputError as error:
            _log(f"error: {run_dir}: {error}")
            failed += 1
            continue
        analysed += 1
        _log(_summary_line(run_dir, analysis))
    _log(f"{analysed} run(s) analysed, {skipped} skipped, {failed} failed")
    return 0 if analysed else 1


def _summary_line(run_dir: Path, analysis: dict[str, Any]) -> str:
    clean, fgsm, landscape = analysis["clean"], analysis["fgsm"], analysis["loss_landscape"]
    ends = [
        "diverged" if v is None else f"{v:.4f}"
        for v in (landscape["loss"][0], landscape["loss"][-1])
    ]
    return (
        f"{run_dir}: {analysis['images']} images, top-1 err {clean['top1_err']:.2f}%, "
        f"NLL {clean['nll']:.4f}, ECE {analysis['calibration']['ece']:.2f}%, "
        f"FGSM {fgsm['epsilons_255'][-1]}/255 top-1 err {fgsm['top1_err'][-1]:.2f}%, "
        f"loss {ends[0]} at sigma {landscape['sigmas'][0]:g} to {ends[1]} at "
        f"{landscape['sigmas'][-1]:g}; wrote {ANALYSIS_FILE}"
    )


if __name__ == "__main__":
    sys.exit(main())
