"""Benchmarks that print figures:
``python -m dcutmix.bench {mixing,data,train,report,plan,fmnist-loaders,fmnist-models} [--json]``.

Each compares against a baseline measured in the same process, interleaved round by round, so a
busy machine slows both sides alike and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from dcutmix.bench.mixing import bench_mixing, print_mixing
from dcutmix.bench.timing import warm_allocator


def _run_benchmark(what: str, device: torch.device, rounds: int) -> dict:
    """One of the benchmarks that print a flat dict of figures (all but mixing)."""
    if what == "data":
        from dcutmix.bench.data import run_data_benchmark

        return run_data_benchmark(device=str(device))
    if what == "fmnist-loaders":
        from dcutmix.bench.fmnist import run_loader_benchmark

        return run_loader_benchmark(rounds=rounds)
    if what == "fmnist-models":
        from dcutmix.bench.fmnist import run_model_benchmark

        return run_model_benchmark(rounds=rounds)
    if what == "plan":
        from dcutmix.bench.plan import run_plan_benchmark

        return run_plan_benchmark()
    if what == "report":
        from dcutmix.bench.report import run_report_benchmark

        return run_report_benchmark()
    from dcutmix.bench.train import run_train_benchmark

    return run_train_benchmark(device=str(device), rounds=rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcutmix.bench", description=__doc__)
    parser.add_argument(
        "what",
        choices=("mixing", "data", "train", "report", "plan", "fmnist-loaders", "fmnist-models"),
    )
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
            print_mixing(rows)
        return 0
    result = _run_benchmark(args.what, devices[-1], args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
