"""Loss and error under random absolute Gaussian noise on the Conv/Linear weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dcutmix.analyze.common import Batches, Tick, _finite

if TYPE_CHECKING:
    from torch import nn


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
