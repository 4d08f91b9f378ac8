"""``dcutmix-analyze uncertainty RUN``: a score per training image from K-image mixing.

The project's own reading of the paper's sample-wise uncertainty (its method text is not
available). A network trained with DCutMix learns to predict, for a mixed image, each class's
share of the pixels. Show it an image in M DCutMix views (the image as the anchor of K-image
mix with K - 1 partners from its batch, Dirichlet(alpha) shares, one draw per view) and compare
the predicted probability of the image's class with that class's share of the view's pixels
(the mixer's own soft target for that class):

    uncertainty_i = (1 / M) * sum_m | p_m(y_i) - t_m(y_i) |

the mean absolute gap, in [0, 1]. The absolute gap counts over- and under-reading alike (an
image the network sees where it is not, or misses where it is); the mean over views averages
out how much of the image a single view happens to show. A typical, easy image's share is read
back closely (a small score); an ambiguous, atypical or mislabelled one's is not.

For comparison the clean image's predictive ``entropy`` (nats) and its ``margin``, the
probability of its class minus the largest other class's (in [-1, 1]; negative when it is
misclassified), are written too. Everything runs in float32 under ``torch.inference_mode`` on
the given device, batch by batch (no per-image loop), with the views drawn from one generator
seeded with ``--seed``: the same seed and device give the same scores.

Files written atomically into the run folder: ``uncertainty.csv`` (one row per training image:
its index in the dataset's training split, its label and the three scores), ``uncertainty.json``
(what was scored and how, and the cost), and ``plot_uncertainty.png`` (the scores' histograms).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcutmix.analyze.runs import load_run, skip_reason
from dcutmix.data.subsets import SCORE_COLUMNS, SCORES_FILE, SCORES_META
from dcutmix.errors import InputError
from dcutmix.store.files import atomic_save_figure, atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

DEFAULT_VIEWS = 8
DEFAULT_BATCH = 500
PLOT_UNCERTAINTY = "plot_uncertainty.png"


@dataclass(frozen=True)
class Scores:
    """Per-image scores, float64 on the CPU, in training-set order."""

    uncertainty: Tensor
    entropy: Tensor
    margin: Tensor


def check_uncertainty_options(
    views: int, k: int | None, alpha: float | None, batch_size: int | None
) -> None:
    """Raise InputError, naming the option, for a setting the scoring cannot use."""
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise InputError("--views", f"{views} is not valid; use a whole number >= 1 (M)")
    if k is not None and not 2 <= k <= 64:
        raise InputError("--k", f"{k} is not valid; use a whole number in [2, 64]")
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise InputError("--alpha", f"{alpha} is not valid; use a finite number > 0")
    if batch_size is not None and batch_size < 2:
        raise InputError("--batch-size", f"{batch_size} is not valid; use a whole number >= 2")


def score_images(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    normalise: tuple[Tensor, Tensor],
    mixer: Any,
    views: int,
    generator: torch.Generator,
    batch_size: int,
) -> Scores:
    """The three scores of every image: uint8 ``images`` normalised as ``x * scale + shift``."""
    import torch

    scale, shift = normalise
    model.eval()
    gaps, entropies, margins = [], [], []
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            x = images[start : start + batch_size].float() * scale + shift
            y = labels[start : start + batch_size]
            log_p = torch.log_softmax(model(x).float(), dim=1)
            p = log_p.exp()
            entropies.append(-(p * log_p).sum(dim=1))
            own = p.gather(1, y[:, None]).squeeze(1)
            margins.append(own - p.scatter(1, y[:, None], -1.0).max(dim=1).values)
            gap = torch.zeros_like(own)
            for _ in range(views):
                mixed, targets = mixer(x, y, generator=generator)
                p_mixed = torch.softmax(model(mixed).float(), dim=1)
                gap += (p_mixed - targets).gather(1, y[:, None]).squeeze(1).abs()
            gaps.append(gap / views)
    return Scores(*(torch.cat(parts).double().cpu() for parts in (gaps, entropies, margins)))


def _mixing(run_dir: Path, k: int | None, alpha: float | None) -> tuple[int, float]:
    """K and alpha of the views: given, or the run's own."""
    mixing = ((read_json(run_dir / "results.json") or {}).get("config") or {}).get("mixing") or {}
    k = k if k is not None else mixing.get("k")
    alpha = alpha if alpha is not None else mixing.get("alpha")
    if not isinstance(k, int) or k < 2 or alpha is None:
        raise InputError(
            "--k",
            f"the run's mixing ({mixing.get('mode')}) mixes no K images; give --k and --alpha",
        )
    return k, float(alpha)


def _check_dataset(run_dir: Path, dataset: str | None) -> dict[str, Any]:
    config = (read_json(run_dir / "results.json") or {}).get("config") or {}
    if dataset is not None and config.get("dataset") != dataset:
        raise InputError(
            "--dataset", f"{run_dir} was trained on {config.get('dataset')}, not {dataset}"
        )
    return config


def score_run(
    run_dir: Path,
    *,
    views: int = DEFAULT_VIEWS,
    k: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
    dataset: str | None = None,
    checkpoint: str = "last",
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Score every training image of a finished run; write the files; return uncertainty.json."""
    import torch

    from dcutmix.mixing import build_mixer

    check_uncertainty_options(views, k, alpha, batch_size)
    run_dir = Path(run_dir)
    reason = skip_reason(run_dir, checkpoint)
    if reason is not None:
        raise InputError("RUN", f"{run_dir} cannot be scored: {reason}")
    config = _check_dataset(run_dir, dataset)
    k, alpha = _mixing(run_dir, k, alpha)
    device = torch.device(device)
    run = load_run(run_dir, checkpoint, device, batch_size, whole_training_set=True)
    train = run.data.train
    if not hasattr(train, "images"):
        raise InputError("dataset.loader", "scoring needs the in-memory (device) loader")
    mixer = build_mixer("dcutmix", num_classes=run.data.num_classes, k=k, alpha=alpha)
    mixer.per_sample = True  # every view its own draw
    generator = torch.Generator(device).manual_seed(seed)
    started = time.perf_counter()
    scores = score_images(
        run.model, train.images, train.labels, normalise=(train._scale, train._shift),
        mixer=mixer, views=views, generator=generator, batch_size=batch_size or DEFAULT_BATCH,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    meta = _meta(run_dir, config, run, (views, k, alpha, seed), seconds, device)
    _write(run_dir, run.data.train_index, train.labels.cpu(), scores, meta)
    return meta


def _meta(run_dir, config, run, how, seconds, device) -> dict[str, Any]:
    views, k, alpha, seed = how
    results = read_json(run_dir / "results.json") or {}
    epochs = results.get("epochs_completed") or 0
    epoch_seconds = results.get("wall_seconds", 0.0) / epochs if epochs else None
    return {
        "dataset": config.get("dataset"),
        "train_subset": run.dataset.get("train_subset"),
        "images": len(run.data.train.labels),
        "views": views,
        "k": k,
        "alpha": alpha,
        "seed": seed,
        "checkpoint": run.checkpoint,
        "score": "mean over views of |p(y) - share of y|; entropy and margin of the clean image",
        "seconds": seconds,
        "training_seconds_per_epoch": epoch_seconds,
        "cost_in_training_epochs": seconds / epoch_seconds if epoch_seconds else None,
        "device": str(device),
    }


def _write(run_dir: Path, index: Tensor, labels: Tensor, scores: Scores, meta: dict) -> None:
    lines = [",".join(SCORE_COLUMNS)]
    columns = (index.tolist(), labels.tolist(), *(s.tolist() for s in _columns(scores)))
    lines += [f"{i},{y},{u!r},{e!r},{m!r}" for i, y, u, e, m in zip(*columns, strict=True)]
    atomic_write_text(run_dir / SCORES_FILE, "\n".join(lines) + "\n")
    atomic_write_json(run_dir / SCORES_META, meta)
    _plot(run_dir / PLOT_UNCERTAINTY, scores, meta)


def _columns(scores: Scores) -> tuple[Tensor, Tensor, Tensor]:
    return scores.uncertainty, scores.entropy, scores.margin


def _plot(path: Path, scores: Scores, meta: dict[str, Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 3.2))
    FigureCanvasAgg(figure)
    titles = (
        f"uncertainty (M={meta['views']}, K={meta['k']}, alpha={meta['alpha']:g})",
        "predictive entropy (nats)",
        "margin p(y) - max other",
    )
    for axes, values, title in zip(figure.subplots(1, 3), _columns(scores), titles, strict=True):
        axes.hist(values.numpy(), bins=50)
        axes.set_title(title, fontsize=9)
        axes.set_yscale("log")
    axes.figure.suptitle(f"{meta['dataset']}: {meta['images']} training images", fontsize=10)
    figure.tight_layout()
    atomic_save_figure(figure, path, format="png", dpi=100)
