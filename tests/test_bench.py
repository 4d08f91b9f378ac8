"""The benchmarks' shared timing loop and the mixing table's choice of modes."""

from __future__ import annotations

import mmap

import pytest
import torch

from dcutmix.bench.mixing import bench_mixing, image_mixers
from dcutmix.bench.timing import page_faults, timed_rounds
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


PAGE = mmap.PAGESIZE


def _touch_fresh_pages(pages: int) -> None:
    """Map ``pages`` new anonymous pages and write one byte to each: one minor fault per page."""
    memory = mmap.mmap(-1, pages * PAGE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)  # one fault per 4 KiB page, not per huge page
    for page in range(pages):
        memory[page * PAGE] = 1
    memory.close()


@pytest.mark.parametrize("pages", [64, 256])
def test_page_faults_counts_the_fresh_pages_one_call_touches(pages):
    # Each call maps and touches ``pages`` new pages; the count is per call, not for all three,
    # and counts this process's minor faults (a wrong counter reads 0 or three times as many).
    faults = page_faults(lambda _: _touch_fresh_pages(pages), calls=3)
    assert pages <= faults <= pages + 32, faults


def test_page_faults_of_a_call_that_maps_nothing_are_near_zero():
    kept = bytearray(64 * PAGE)
    assert page_faults(lambda _: kept.__setitem__(0, 1), calls=3) < 8


def test_mixing_rows_carry_the_page_faults_of_each_mode_and_of_the_clone():
    rows = bench_mixing(torch.device("cpu"), rounds=1, sizes=(32,))
    assert all(isinstance(r["page_faults"], float) for r in rows)
    assert len({r["clone_page_faults"] for r in rows}) == 1  # one clone measured per table


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
