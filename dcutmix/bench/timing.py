"""The one timing helper of every benchmark: interleaved rounds, device sync, page faults."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rounds(
    fns: Mapping[str, Callable[[int], object]], device: torch.device, rounds: int, reps: int = 1
) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternating rounds.

    The one timing loop of every benchmark: each function first runs once as a warm-up
    (allocator, lazy initialisation, workers) with argument 0, then in round r (1..rounds) each
    runs ``reps`` times with argument r, one function after another, so a busy machine slows
    all of them alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(0)
    for round_number in range(1, rounds + 1):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                fn(round_number)
            sync(device)
            samples[name].append((time.perf_counter() - start) / reps)
    return {name: statistics.median(values) for name, values in samples.items()}


def page_faults(fn: Callable[[int], object], calls: int = 3) -> float:
    """Minor page faults per call of ``fn``: fresh pages the kernel maps for its new tensors.

    On a machine where mapping a page is dear (a VM), they decide large-image timings: a 38 MB
    clone costs 3 ms when its pages are reused and 12 to 28 ms when all ~9,400 are fresh.
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn(0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def warm_allocator() -> None:
    """Have glibc keep freed large blocks for reuse instead of returning them to the kernel.

    By default a block of 32 MiB or more is mapped fresh on every allocation and unmapped when
    freed, so each call of a mode that returns a new 224x224 batch pays the kernel for mapping
    its pages; whether it does also depends on the kernel's huge-page promotion. With this, after
    the warm-up no call pays it, and the timings measure the mixers' own work.
    """
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    # mallopt(M_MMAP_THRESHOLD = -3, 1 GiB), mallopt(M_TRIM_THRESHOLD = -1, 2 GiB - 1)
    if mallopt is None or not (mallopt(-3, 1 << 30) and mallopt(-1, (1 << 31) - 1)):
        raise SystemExit(
            "--allocator: 'warm' needs glibc's mallopt, which this C library lacks; use 'default'"
        )
