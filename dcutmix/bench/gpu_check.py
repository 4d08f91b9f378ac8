"""Every GPU question in one short run: ``python -m dcutmix.bench.gpu_check [--quick] [--cpu-dry-run]``.

Steps: the CUDA tests (``pytest -m gpu``), training throughput of PyramidNet-110 with DCutMix
(this framework with and without ``torch.compile`` against an authors'-style pipeline in the same
process), the share of a step spent on data and mixing, peak GPU memory, and a PyramidNet-200
slice. It writes one JSON file and prints a short table. Without CUDA it says so and exits 3;
``--cpu-dry-run`` runs every step's CPU fallback at tiny sizes, which is how CI tests this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

EXIT_NO_GPU = 3
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the full check, its 60-second subset, or the CPU dry run."""

    name: str
    num_train: int
    batches: tuple[int, ...]
    steps: int
    warmup: int
    compile: bool
    pyramidnet200: bool
    model: str
    big_model: str
    workers: int
    pytest_files: str  # "gpu": every file with a gpu-marked test; "quick": the mixers' only


SIZES = {
    "full": Sizes(
        "full", 50_000, (64, 128), 60, 10, True, True, "pyramidnet110", "pyramidnet200", 8, "gpu"
    ),
    "quick": Sizes(
        "quick", 50_000, (64,), 30, 5, False, False, "pyramidnet110", "pyramidnet200", 8, "quick"
    ),
    # the same code paths with the tiny model: PyramidNet steps take tens of seconds on a CPU
    "dry-run": Sizes("dry-run", 64, (16,), 2, 1, False, True, "tiny", "tiny", 0, "quick"),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dcutmix.bench.gpu_check", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 60-second subset")
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="every step's CPU fallback at tiny sizes"
    )
    parser.add_argument("--out", type=Path, help="the JSON file (default: outputs/gpu_check/...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # Without an NVIDIA device node there is no need to import torch (seconds on a busy machine)
    # to know the answer.
    if not args.cpu_dry_run and not _nvidia_device_present():
        return _no_gpu("this machine has no NVIDIA device")
    _ensure_dependencies(argv if argv is not None else sys.argv[1:])
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        return _no_gpu(f"torch {torch.__version__} sees no CUDA device")
    sizes = SIZES["dry-run" if args.cpu_dry_run else "quick" if args.quick else "full"]
    device = torch.device("cpu" if args.cpu_dry_run else "cuda")
    out = args.out or _default_out()
    report = {"check": sizes.name, "environment": _environment(device), "sizes": asdict(sizes)}
    started = time.perf_counter()
    steps: dict[str, Callable[[], dict]] = {
        "pytest_gpu": lambda: run_pytest(sizes),
        "throughput": lambda: run_throughput(sizes, device),
    }
    if sizes.pyramidnet200:
        steps["pyramidnet200"] = lambda: run_pyramidnet200(sizes, device)
    report["steps"] = {}
    for name, step in steps.items():
        report["steps"][name] = _guarded(step)
        _write_json(out, report)  # after every step: a run cut short keeps what it measured
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = all(s.get("ok", False) for s in report["steps"].values())
    _write_json(out, report)
    print_summary(report)
    print(f"gpu-check: wrote {out}")
    return 0 if report["ok"] else 1


def _nvidia_device_present() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*")) or any(Path("/proc/driver/nvidia/gpus").glob("*"))


def _ensure_dependencies(argv: list[str]) -> None:
    """On a bare machine (no hydra-core), install the wheels in .whl/ into a temporary folder and
    start again with it on the path, so the pytest child process finds them too."""
    if importlib.util.find_spec("hydra") is not None:
        return
    wheels = sorted(str(p) for p in (REPO_ROOT / ".whl").glob("*.whl"))
    if not wheels:
        print(
            "gpu-check: hydra-core is not installed and .whl/ holds no wheels; "
            "run `make gpu-wheels` where pip works and carry .whl",
            file=sys.stderr,
        )
        raise SystemExit(2)
    site = tempfile.mkdtemp(prefix="dcutmix-gpu-check-site-")
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    install += ["--no-compile", "--no-cache-dir", "--target", site, *wheels]
    subprocess.run(install, check=True)
    path = os.pathsep.join(p for p in (site, str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    os.execve(sys.executable, [sys.executable, "-m", "dcutmix.bench.gpu_check", *argv], env)


def _no_gpu(reason: str) -> int:
    print(
        f"gpu-check: needs a CUDA GPU; {reason} (--cpu-dry-run runs every step on the CPU)",
        file=sys.stderr,
    )
    return EXIT_NO_GPU


def _default_out() -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    return Path("outputs") / "gpu_check" / stamp / "gpu_check.json"


def _environment(device) -> dict:
    import torch
    import torchvision

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device.type,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
        env["cuda"] = torch.version.cuda
    return env


def _guarded(step: Callable[[], dict]) -> dict:
    """Run one step; a failure is recorded in one line and the next step still runs."""
    started = time.perf_counter()
    try:
        result = step()
    except Exception as error:  # every failure belongs in the report
        message = str(error).strip().splitlines()
        result = {"ok": False, "error": f"{type(error).__name__}: {message[0] if message else ''}"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _write_json(path: Path, obj: dict) -> None:
    from dcutmix.store.files import atomic_write_json  # standard library only, like this module

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


# --- pytest -m gpu -----------------------------------------------------------------------------


def gpu_test_files(which: str) -> list[str]:
    """Test files holding gpu-marked tests ("gpu"), or the mixers' and this check's ("quick")."""
    tests = REPO_ROOT / "tests"
    if which == "quick":
        return [str(tests / "test_mixing.py"), str(tests / "test_gpu.py")]
    return sorted(
        str(p) for p in tests.glob("test_*.py") if "pytest.mark.gpu" in p.read_text("utf-8")
    )


def run_pytest(sizes: Sizes) -> dict:
    """``pytest -m gpu`` in a child process; its counts of passed, failed and skipped tests."""
    files = gpu_test_files(sizes.pytest_files)
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    if sizes.pytest_files == "quick":
        command += ["-k", "not compile"]  # compiling takes a minute per run
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=420, check=False
    )
    lines = proc.stdout.strip().splitlines()
    counts = (
        {
            word: int(n)
            for n, word in re.findall(
                r"(\d+) (passed|failed|skipped|errors?|deselected)", lines[-1]
            )
        }
        if lines
        else {}
    )
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    ok = proc.returncode in (0, 5) and not failures  # 5: nothing collected
    return {"ok": ok, "exit_code": proc.returncode, "counts": counts, "failures": failures[:20]}


# --- throughput ----------------------------------------------------------------------------------


def run_throughput(sizes: Sizes, device) -> dict:
    """Images/s of three pipelines for each batch size, their ratios and the data+mixing share."""
    from dcutmix.bench.gpu_pipelines import authors_pipeline, framework_pipeline

    rows = []
    for batch in sizes.batches:
        args = (sizes.num_train, device, batch, sizes.model)
        configs = {"framework": lambda args=args: framework_pipeline(*args, False)}
        if sizes.compile:
            configs["framework_compiled"] = lambda args=args: framework_pipeline(*args, True)
        configs["authors_style"] = lambda args=args: authors_pipeline(*args, sizes.workers)
        # one pipeline at a time: each frees its model and data before the next is built
        measured = {name: measure(make(), sizes, device) for name, make in configs.items()}
        row = {"batch": batch, "model": sizes.model, **measured}
        base = measured["authors_style"]["images_per_s"]
        for name in configs:
            if name != "authors_style":
                row[f"ratio_{name}_vs_authors"] = round(measured[name]["images_per_s"] / base, 2)
        rows.append(row)
    ok = all(m["loss_finite"] for row in rows for m in row.values() if isinstance(m, dict))
    return {"ok": ok, "rows": rows}


def run_pyramidnet200(sizes: Sizes, device) -> dict:
    """One epoch slice of PyramidNet-200 at batch 64 with the defaults (tiny in the dry run)."""
    from dcutmix.bench.gpu_pipelines import framework_pipeline

    batch = 64 if device.type == "cuda" else sizes.batches[0]
    run = framework_pipeline(sizes.num_train, device, batch, sizes.big_model, False)
    result = measure(run, sizes, device)
    return {"ok": result["loss_finite"], "model": sizes.big_model, "batch": batch, **result}


def measure(pipeline, sizes: Sizes, device) -> dict:
    """Warm up, then time ``sizes.steps`` steps: images/s, data+mixing share, peak memory."""
    import torch

    pipeline.run(sizes.warmup)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    timer = StepTimer(device)
    with timer.span("total"):
        pipeline.run(sizes.steps, timer)
    total_s = timer.seconds("total")
    loss = pipeline.losses[-1]
    result = {
        "images_per_s": round(pipeline.batch * sizes.steps / total_s, 1),
        "data_and_mixing_share_pct": round(100.0 * timer.seconds("data") / total_s, 2),
        "loss": round(loss, 4),
        "loss_finite": math.isfinite(loss),
        "peak_memory_mib": None,
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    del pipeline
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


class StepTimer:
    """Named spans timed with CUDA events on a GPU (no sync inside a span), else wall clock."""

    def __init__(self, device) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self._torch = torch
        self._spans: dict[str, list[tuple]] = {}

    def span(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = timer._mark()

            def __exit__(self, *exc):
                timer._spans.setdefault(name, []).append((self.start, timer._mark()))

        return _Span()

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, name: str) -> float:
        spans = self._spans.get(name, [])
        if self.cuda:
            self._torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in spans) / 1e3
        return sum(b - a for a, b in spans)


def print_summary(report: dict) -> None:
    """The short table: one line per step and one per measured pipeline."""
    env = report["environment"]
    print(f"gpu-check {report['check']}: torch {env['torch']} on {env.get('gpu', env['device'])}")
    for name, step in report["steps"].items():
        status = "ok" if step.get("ok") else "FAILED"
        detail = step.get("error") or step.get("counts") or ""
        print(f"  {name:14s} {status:6s} {step['seconds']:7.1f} s  {detail}")
    for row in report["steps"].get("throughput", {}).get("rows", []):
        for name, m in row.items():
            if isinstance(m, dict):
                print(
                    f"  B={row['batch']:<4d} {name:20s} {m['images_per_s']:10.1f} img/s  "
                    f"data+mixing {m['data_and_mixing_share_pct']:5.1f}%  "
                    f"peak {m['peak_memory_mib']} MiB"
                )
        ratios = {k: v for k, v in row.items() if k.startswith("ratio_")}
        print(f"  B={row['batch']:<4d} {ratios}")


if __name__ == "__main__":
    sys.exit(main())
