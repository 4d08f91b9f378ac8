"""Benchmarks that print figures: ``python -m dcutmix.bench {mixing,data,train,report} [--json]``.

Each compares against a baseline measured in the same process, interleaved round by round, so a
busy machine slows both sides alike and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping

import torch

from dcutmix.mixing import MIXING_MODES, Mixer, build_mixer


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


def image_mixers(num_classes: int) -> dict[str, Mixer]:
    """Every registered mode that mixes images, with its default settings.

    A mode that cannot be built from its defaults or does not take an image batch (a mixer of
    hidden features, say) is left out, so new image modes join the table by registering.
    """
    # the smallest size the table times, so a default that needs room (cutout's 16-pixel square) fits
    images = torch.rand(2, 3, 32, 32)
    labels = torch.zeros(2, dtype=torch.long)
    mixers = {}
    for mode in MIXING_MODES:
        try:
            mixer = build_mixer(mode, num_classes=num_classes)
            mixer(images, labels)
        except (ValueError, TypeError, NotImplementedError):
            continue
        mixers[mode] = mixer
    return mixers


def _mixing_calls(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, mixers: dict
) -> dict[str, Callable[[int], object]]:
    from torchvision.transforms import v2

    torchvision_cutmix = v2.CutMix(num_classes=100)
    fns: dict[str, Callable[[int], object]] = {
        "clone": lambda _: images.clone(),
        "torchvision_cutmix": lambda _: torchvision_cutmix(images, labels),
    }
    for mode, mixer in mixers.items():
        fns[mode] = lambda _, mixer=mixer: mixer(images, labels, generator=generator)
    return fns


def bench_mixing(
    device: torch.device, rounds: int, sizes: tuple[int, ...] = (32, 224)
) -> list[dict]:
    """ms per batch of every image mode vs torchvision's CutMix and a plain clone."""
    mixers = image_mixers(num_classes=100)
    rows = []
    for batch, size in ((128, 32), (64, 224)):
        if size not in sizes:
            continue
        images = torch.rand(batch, 3, size, size, device=device)
        labels = torch.randint(0, 100, (batch,), device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        fns = _mixing_calls(images, labels, generator, mixers)
        reps = 20 if size == 32 else 2
        ms = {k: v * 1e3 for k, v in timed_rounds(fns, device, rounds, reps).items()}
        faults = {k: page_faults(fn) for k, fn in fns.items()}
        for mode, mixer in mixers.items():
            rows.append(
                {
                    "device": device.type,
                    "batch": batch,
                    "image": f"3x{size}x{size}",
                    "mode": mode,
                    "k": mixer.k,
                    "alpha": mixer.alpha,
                    "ms": ms[mode],
                    "x_torchvision_cutmix": ms[mode] / ms["torchvision_cutmix"],
                    "x_clone": ms[mode] / ms["clone"],
                    "page_faults": faults[mode],
                    "torchvision_cutmix_ms": ms["torchvision_cutmix"],
                    "clone_ms": ms["clone"],
                    "clone_page_faults": faults["clone"],
                }
            )
    return rows


def _print_mixing(rows: list[dict]) -> None:
    print(
        "| device | batch | image | mode | K | alpha | ms/batch | x torchvision CutMix | x clone "
        "| page faults/call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        alpha = "" if r["alpha"] is None else f"{r['alpha']:.3g}"
        print(
            f"| {r['device']} | {r['batch']} | {r['image']} | {r['mode']} | {r['k'] or ''} | {alpha} "
            f"| {r['ms']:.3f} | {r['x_torchvision_cutmix']:.2f} | {r['x_clone']:.2f} "
            f"| {r['page_faults']:.0f} |"
        )
    seen = set()
    for r in rows:
        key = (r["device"], r["image"])
        if key not in seen:
            seen.add(key)
            print(
                f"baseline {r['device']} B={r['batch']} {r['image']}: torchvision CutMix "
                f"{r['torchvision_cutmix_ms']:.3f} ms, clone {r['clone_ms']:.3f} ms "
                f"({r['clone_page_faults']:.0f} page faults/call)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcutmix.bench", description=__doc__)
    parser.add_argument("what", choices=("mixing", "data", "train", "report"))
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument(
        "--device", default="all", help="cpu, cuda, or all (cpu and, when present, cuda)"
    )
    parser.add_argument(
        "--size", choices=("32", "224", "all"), default="all", help="mixing: image sizes to time"
    )
    parser.add_argument(
        "--allocator",
        choices=("default", "warm"),
        default="default",
        help="warm: glibc keeps freed large blocks, so no call pays for mapping fresh pages",
    )
    args = parser.parse_args(argv)
    if args.allocator == "warm":
        warm_allocator()
    if args.device == "all":
        devices = [torch.device("cpu")] + (
            [torch.device("cuda")] if torch.cuda.is_available() else []
        )
    else:
        devices = [torch.device(args.device)]

    if args.what == "mixing":
        sizes = (32, 224) if args.size == "all" else (int(args.size),)
        rows = [row for device in devices for row in bench_mixing(device, args.rounds, sizes)]
        if args.json:
            print(
                json.dumps(
                    {
                        "mixing": rows,
                        "torch": torch.__version__,
                        "threads": torch.get_num_threads(),
                        "allocator": args.allocator,
                    }
                )
            )
        else:
            _print_mixing(rows)
        return 0
    if args.what == "data":
        from dcutmix.bench_data import run_data_benchmark

        result = run_data_benchmark(device=str(devices[-1]))
    elif args.what == "report":
        from dcutmix.bench_report import run_report_benchmark

        result = run_report_benchmark()
    else:
        from dcutmix.bench_train import run_train_benchmark

        result = run_train_benchmark(device=str(devices[-1]), rounds=args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
