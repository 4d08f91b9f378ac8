"""Clean error and one-step FGSM error, with the per-image outcomes the other analyses use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dcutmix.analyze.common import Tick
from dcutmix.errors import InputError

if TYPE_CHECKING:
    from torch import Tensor, nn


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
