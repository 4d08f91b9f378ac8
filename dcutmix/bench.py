"""Benchmarks that print figures: ``python -m dcutmix.bench {mixing,data,train} [--json]``.

Each compares against a baseline measured in the same process, interleaved round by round, so a
busy machine slows both sides alike and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, rounds: int, reps: int
) -> dict[str, float]:
    """Median milliseconds per call of each function, measured in alternating rounds."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: allocator, lazy init
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - start) / reps * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def _mixing_calls(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> dict:
    from torchvision.transforms import v2

    from dcutmix.mixing import MIXING_MODES, build_mixer

    torchvision_cutmix = v2.CutMix(num_classes=100)
    fns: dict[str, Callable[[], object]] = {
        "clone": images.clone,
        "torchvision_cutmix": lambda: torchvision_cutmix(images, labels),
    }
    for mode in MIXING_MODES:
        mixer = build_mixer(mode, num_classes=100)
        fns[mode] = lambda mixer=mixer: mixer(images, labels, generator=generator)
    return fns


def bench_mixing(device: torch.device, rounds: int) -> list[dict]:
    """ms per batch of every mode vs torchvision's CutMix and a plain clone."""
    from dcutmix.mixing import MIXING_MODES, build_mixer

    rows = []
    for batch, size in ((128, 32), (64, 224)):
        images = torch.rand(batch, 3, size, size, device=device)
        labels = torch.randint(0, 100, (batch,), device=device)
        fns = _mixing_calls(images, labels, torch.Generator(device=device).manual_seed(0))
        reps = 20 if size == 32 else 2
        ms = time_interleaved(fns, device, rounds=rounds, reps=reps)
        for mode in MIXING_MODES:
            mixer = build_mixer(mode, num_classes=100)
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
                    "torchvision_cutmix_ms": ms["torchvision_cutmix"],
                    "clone_ms": ms["clone"],
                }
            )
    return rows


def _print_mixing(rows: list[dict]) -> None:
    print(
        "| device | batch | image | mode | K | alpha | ms/batch | x torchvision CutMix | x clone |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        alpha = "" if r["alpha"] is None else f"{r['alpha']:.3g}"
        print(
            f"| {r['device']} | {r['batch']} | {r['image']} | {r['mode']} | {r['k'] or ''} | {alpha} "
            f"| {r['ms']:.3f} | {r['x_torchvision_cutmix']:.2f} | {r['x_clone']:.2f} |"
        )
    seen = set()
    for r in rows:
        key = (r["device"], r["image"])
        if key not in seen:
            seen.add(key)
            print(
                f"baseline {r['device']} B={r['batch']} {r['image']}: torchvision CutMix "
                f"{r['torchvision_cutmix_ms']:.3f} ms, clone {r['clone_ms']:.3f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcutmix.bench", description=__doc__)
    parser.add_argument("what", choices=("mixing", "data", "train"))
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument(
        "--device", default="all", help="cpu, cuda, or all (cpu and, when present, cuda)"
    )
    args = parser.parse_args(argv)
    if args.device == "all":
        devices = [torch.device("cpu")] + (
            [torch.device("cuda")] if torch.cuda.is_available() else []
        )
    else:
        devices = [torch.device(args.device)]

    if args.what == "mixing":
        rows = [row for device in devices for row in bench_mixing(device, args.rounds)]
        if args.json:
            print(
                json.dumps(
                    {"mixing": rows, "torch": torch.__version__, "threads": torch.get_num_threads()}
                )
            )
        else:
            _print_mixing(rows)
        return 0
    if args.what == "data":
        from dcutmix.bench_data import run_data_benchmark

        result = run_data_benchmark(device=str(devices[-1]))
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
