"""Seeds: the whole process's at the start of a run, and derived ones for each random draw."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of its integer parts (seed, epoch, step, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; deterministic kernels only when asked (they cost speed)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True
