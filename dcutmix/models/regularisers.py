"""Stochastic depth (Huang et al., 2016) and DropBlock (Ghiasi et al., 2018) for the CIFAR networks.

Both act only in training mode and are the identity at evaluation. Their randomness comes from
torch's global generator on the activations' device, which the trainer seeds and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcutmix.errors import ConfigError

__all__ = [
    "DROPBLOCK_DEFAULTS",
    "DropBlock",
    "check_dropblock",
    "check_stochastic_depth",
    "drop_block",
    "drop_block_with",
    "drop_branch",
    "dropblock_gamma",
    "set_survival",
    "survival_probabilities",
]

# The paper's table gives no DropBlock setting for CIFAR. keep_prob 0.9 is Ghiasi et al.'s final
# value; block_size 4 is the project's reading for CIFAR's 16x16 and 8x8 maps (their 7 fits
# ImageNet's 28x28 and 14x14 maps, and would cover most of an 8x8 one).
DROPBLOCK_DEFAULTS: dict[str, Any] = {"keep_prob": 0.9, "block_size": 4}


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def check_stochastic_depth(value: object) -> float | None:
    """The last block's survival probability p_L in [0, 1), or None (off); else a ConfigError."""
    if value is None:
        return None
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ConfigError(
            f"model.stochastic_depth: {value!r} is not valid; use the last block's survival "
            "probability in [0, 1) (0.5 as Huang et al.) or null for none"
        )
    return float(value)


def check_dropblock(value: object) -> dict[str, Any] | None:
    """DropBlock settings with defaults filled in, or None (off); else a ConfigError naming the key."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"model.dropblock: {value!r} is not valid; use null or "
            "{keep_prob: 0.9, block_size: 4} (either key may be left out)"
        )
    unknown = sorted(set(value) - set(DROPBLOCK_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"model.dropblock.{unknown[0]}: unknown key; valid keys: keep_prob, block_size"
        )
    settings = {**DROPBLOCK_DEFAULTS, **value}
    keep_prob, block_size = settings["keep_prob"], settings["block_size"]
    if not _is_number(keep_prob) or not 0.0 < keep_prob <= 1.0:
        raise ConfigError(
            f"model.dropblock.keep_prob: {keep_prob!r} is not valid; use a number in (0, 1]"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(
            f"model.dropblock.block_size: {block_size!r} is not valid; use a positive integer"
        )
    return {"keep_prob": float(keep_prob), "block_size": block_size}


def survival_probabilities(blocks: int, last: float | None) -> list[float]:
    """Huang et al.'s linear decay: block l of L survives with 1 - (l / L)(1 - p_L)."""
    if last is None:
        return [1.0] * blocks
    return [1.0 - (index / blocks) * (1.0 - last) for index in range(1, blocks + 1)]


def set_survival(blocks: list, last: float | None) -> None:
    """Give each residual block, in order, its ``survival`` by ``survival_probabilities``."""
    for block, survival in zip(blocks, survival_probabilities(len(blocks), last), strict=True):
        block.survival = survival


def drop_branch(branch: Tensor, survival: float, training: bool) -> Tensor:
    """Drop a residual branch with probability 1 - ``survival``, scaling the survivors by 1/survival.

    One coin per sample (the project's reading: Huang et al. drop a branch for the whole
    mini-batch; per sample has the same expectation, a lower-variance gradient, and draws on the
    device without a host synchronisation). Scaling during training ("inverted") keeps the
    evaluation network the plain one.
    """
    if not training or survival >= 1.0:
        return branch
    shape = (branch.shape[0],) + (1,) * (branch.dim() - 1)
    keep = torch.empty(shape, device=branch.device, dtype=branch.dtype).bernoulli_(survival)
    return branch * (keep / survival)


class DropBlock(nn.Module):
    """Drop block_size x block_size squares of each feature map; the identity at evaluation.

    Block positions are drawn only where the whole block fits (Ghiasi et al.'s valid region), one
    mask per sample and channel, with their rate gamma = (1 - keep_prob) / block_size^2 *
    (H W) / ((H - block_size + 1)(W - block_size + 1)), so that about 1 - keep_prob of the units
    are dropped (overlapping blocks make it slightly less). The kept units are rescaled by the
    number of units over the number kept. A map smaller than the block passes unchanged.
    """

    def __init__(self, *, keep_prob: float = 0.9, block_size: int = 4) -> None:
        super().__init__()
        self.keep_prob = keep_prob
        self.block_size = block_size

    def extra_repr(self) -> str:
        return f"keep_prob={self.keep_prob}, block_size={self.block_size}"

    def forward(self, x: Tensor) -> Tensor:
        """``x`` with blocks dropped and the rest rescaled (training), else ``x`` itself."""
        return drop_block(x, self.keep_prob, self.block_size, self.training)


def dropblock_gamma(keep_prob: float, block_size: int, height: int, width: int) -> float:
    """Ghiasi et al.'s Bernoulli rate of block positions for an ``height`` x ``width`` map."""
    valid = (height - block_size + 1) * (width - block_size + 1)
    return (1.0 - keep_prob) / block_size**2 * (height * width) / valid


def drop_block(x: Tensor, keep_prob: float, block_size: int, training: bool) -> Tensor:
    """DropBlock as a function (see ``DropBlock``); ``x`` itself unless ``training``."""
    height, width = x.shape[-2:]
    size = block_size
    if not training or keep_prob >= 1.0 or size > min(height, width):
        return x
    seeds_shape = (*x.shape[:-2], height - size + 1, width - size + 1)
    seeds = torch.empty(seeds_shape, device=x.device, dtype=torch.float32)
    seeds.bernoulli_(min(1.0, dropblock_gamma(keep_prob, size, height, width)))
    # Padding by size - 1 on every side and a stride-1 max-pool of the block's size marks
    # every unit whose block (top-left corner at a seed) covers it.
    dropped = F.max_pool2d(F.pad(seeds, (size - 1,) * 4), size, stride=1)
    keep = 1.0 - dropped
    # no host synchronisation: the count stays on the device
    scale = keep.numel() / keep.sum().clamp_min(1.0)
    return x * (keep * scale).to(x.dtype)


def drop_block_with(x: Tensor, settings: Mapping[str, Any] | None, training: bool) -> Tensor:
    """DropBlock with checked settings (``check_dropblock``), or ``x`` itself when they are None."""
    if settings is None:
        return x
    return drop_block(x, settings["keep_prob"], settings["block_size"], training)
