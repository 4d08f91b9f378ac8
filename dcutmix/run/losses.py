"""Losses for soft (mixed) targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_target_cross_entropy(
    logits: Tensor, targets: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy between logits (B, N) and probability targets (B, N), in float32.

    With ``label_smoothing`` s the targets become (1 - s) * targets + s / N, as in
    ``torch.nn.functional.cross_entropy``. The computation is done in float32 even under autocast,
    because a bf16 log-softmax loses the small probabilities that mixed targets depend on.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(
            f"targets: expected the logits' shape (B, num_classes) {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = F.log_softmax(logits.float(), dim=1)
        targets = targets.float()
        if label_smoothing > 0.0:
            targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]
        return -(targets * log_probs).sum(dim=1).mean()
