"""Constants and small types the analyses share: file names, defaults, batch types."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


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


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged figure is written as null."""
    return value if math.isfinite(value) else None
