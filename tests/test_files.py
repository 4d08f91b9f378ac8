"""Crash-safe writes (dcutmix.store.files): whole files or nothing, permissions, no temporaries left."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from dcutmix.store.files import (
    append_jsonl,
    atomic_save_figure,
    atomic_torch_save,
    atomic_write_json,
    read_json,
)


def test_atomic_write_json_replaces_the_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    atomic_write_json(path, {"status": "running"})
    atomic_write_json(path, {"status": "completed", "top1_err_last": 4.2})

    assert json.loads(path.read_text()) == {"status": "completed", "top1_err_last": 4.2}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_json_of_an_unserialisable_object_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    atomic_write_json(path, {"status": "running"})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"status": object()})

    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_atomic_write_json_is_never_seen_half_written(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    atomic_write_json(path, {"n": 0, "pad": "x" * 200_000})
    seen, failures, stop = [], [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads(path.read_text())["n"])
            except (json.JSONDecodeError, OSError) as error:
                failures.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 60):
            atomic_write_json(path, {"n": n, "pad": "x" * 200_000})
    finally:
        stop.set()
        thread.join()

    assert failures == []
    assert len(seen) > 1
    assert seen == sorted(seen)


def test_append_jsonl_appends_one_line_per_object(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1, "val_top1_err": 10.0})
    append_jsonl(path, {"epoch": 2, "val_top1_err": None})

    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"epoch": 1, "val_top1_err": 10.0},
        {"epoch": 2, "val_top1_err": None},
    ]


def test_read_json_is_none_for_a_missing_or_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "cut.json").write_text('{"status": "runn')
    assert read_json(tmp_path / "missing.json") is None
    assert read_json(tmp_path / "cut.json") is None
    atomic_write_json(tmp_path / "ok.json", [1, 2])
    assert read_json(tmp_path / "ok.json") == [1, 2]


class _Unsaveable:
    def __reduce__(self):
        raise RuntimeError("cannot be saved")


def test_torch_save_keeps_the_replaced_file_when_asked(tmp_path: Path) -> None:
    path, previous = tmp_path / "ckpt" / "last.pt", tmp_path / "ckpt" / "last.prev.pt"
    atomic_torch_save({"epoch": 1}, path, keep_previous=previous)
    atomic_torch_save({"epoch": 2}, path, keep_previous=previous)

    assert torch.load(path, weights_only=True) == {"epoch": 2}
    assert torch.load(previous, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.prev.pt", "last.pt"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, path)
    with pytest.raises(RuntimeError, match="cannot be saved"):
        atomic_torch_save({"epoch": _Unsaveable()}, path)

    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_figure_is_saved_whole_as_png(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    atomic_save_figure(figure, tmp_path / "curve.png", dpi=50)

    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]
