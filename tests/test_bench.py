"""The benchmarks' shared timing loop and the mixing table's choice of modes."""

from __future__ import annotations

import pytest
import torch

from dcutmix.bench.mixing import bench_mixing, image_mixers
from dcutmix.bench.timing import timed_rounds
from dcutmix.mixing import MIXING_MODES


def test_timed_rounds_warms_up_then_interleaves_the_rounds():
    calls = []
    fns = {name: (lambda r, name=name: calls.append((name, r))) for name in ("a", "b")}
    seconds = timed_rounds(fns, torch.device("cpu"), rounds=2, reps=2)
    warm_up = [("a", 0), ("b", 0)]
    rounds = [(name, r) for r in (1, 2) for name in ("a", "b") for _ in range(2)]
    assert calls == warm_up + rounds
    assert set(seconds) == {"a", "b"} and all(v >= 0 for v in seconds.values())


def test_mixing_table_has_every_registered_image_mode_with_its_defaults():
    mixers = image_mixers(num_classes=100)
    assert list(mixers) == list(MIXING_MODES)
    rows = bench_mixing(torch.device("cpu"), rounds=1, sizes=(32,))
    assert [r["mode"] for r in rows] == list(MIXING_MODES)
    dcutmix = next(r for r in rows if r["mode"] == "dcutmix")
    assert (dcutmix["k"], dcutmix["alpha"], dcutmix["image"]) == (5, 0.2, "3x32x32")
    assert all(r["ms"] > 0 and r["x_clone"] > 0 for r in rows)


def test_mixing_rows_count_page_faults():
    rows = bench_mixing(torch.device("cpu"), rounds=1, sizes=(32,))
    assert all(r["page_faults"] >= 0 and r["clone_page_faults"] >= 0 for r in rows)


@pytest.mark.slow
def test_warm_allocator_run_prints_json_without_page_faults():
    # In its own process: the warm allocator changes glibc's settings for the whole process.
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "dcutmix.bench", "mixing", "--size", "224", "--rounds", "1",
         "--allocator", "warm", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["allocator"] == "warm"
    faults = {r["mode"]: r["page_faults"] for r in report["mixing"]}
    assert set(faults) == set(MIXING_MODES)
    # After the warm-up, freed batches are reused: no mode maps a fresh 38 MB batch (9,409 pages)
    # on every call, as each does with the allocator as it comes. A heap that still grows once
    # for a larger temporary (ResizeMix's patch varies) stays under half a batch per call.
    batch_pages = 64 * 3 * 224 * 224 * 4 // 4096
    assert all(f < batch_pages / 2 for f in faults.values()), faults
    assert report["mixing"][0]["clone_page_faults"] < batch_pages / 2
