"""Damaged files and broken layouts in image folders: skipped with a warning, or refused up front."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcutmix.data import build_data
from dcutmix.errors import ConfigError
from tests.conftest import cli

CPU = torch.device("cpu")
CLASSES = ["cat", "dog"]


def write_folder(root: Path, per_class: int = 4, fmt: str = "JPEG") -> Path:
    """A real image folder: train/ and val/, one folder of decodable images per class."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
                suffix = "jpg" if fmt == "JPEG" else "png"
                Image.fromarray(pixels).save(root / split / name / f"{i}.{suffix}", fmt)
    return root


def damage(root: Path) -> tuple[Path, Path]:
    """A .jpg that is no image at all, and a real JPEG cut off halfway; returns both paths."""
    not_an_image = root / "train" / "cat" / "notes.jpg"
    not_an_image.write_text("this is not a JPEG\n")
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 24, 3), 90, dtype=np.uint8)).save(buffer, "JPEG")
    truncated = root / "val" / "dog" / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return not_an_image, truncated


def folder_config(root: Path, **extra: object) -> dict:
    return {"name": "imagefolder", "root": str(root), "image_size": 16, "resize": 18, **extra}


def labels_of(loader, epoch: int) -> list[int]:
    return [label for _, labels in loader.epoch(epoch) for label in labels.tolist()]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_damaged_images_are_skipped_and_named_once(tmp_path, capfd, num_workers):
    root = write_folder(tmp_path / "images")
    not_an_image, truncated = damage(root)
    config = folder_config(root, drop_last=False)
    data = build_data(config, batch_size=3, device=CPU, seed=0, num_workers=num_workers)
    assert data.bad_images == 0
    for epoch in (1, 2):
        assert sorted(labels_of(data.train, epoch)) == [0] * 4 + [1] * 4
        assert sorted(labels_of(data.val, epoch)) == [0] * 4 + [1] * 4
    assert data.bad_images == 2
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "warning: skipping damaged image" in line]
    assert len(warnings) == 2, err
    assert str(not_an_image) in warnings[0] and "UnidentifiedImageError" in warnings[0]
    assert str(truncated) in warnings[1] and "truncated" in warnings[1].lower()
    # Every pass says how many it skipped: train and val, two epochs each.
    counts = [line for line in err.splitlines() if "skipped 1 damaged image of the" in line]
    assert len(counts) == 4, err


def test_bad_images_fail_names_every_damaged_file_before_training(tmp_path):
    root = write_folder(tmp_path / "images")
    not_an_image, truncated = damage(root)
    with pytest.raises(ConfigError) as caught:
        build_data(folder_config(root, bad_images="fail"), batch_size=2, device=CPU, seed=0)
    message = str(caught.value)
    assert message.startswith(f"dataset.bad_images=fail: 2 damaged images under {root}: ")
    assert str(not_an_image) in message and str(truncated) in message and "\n" not in message
    clean = write_folder(tmp_path / "clean")
    data = build_data(folder_config(clean, bad_images="fail"), batch_size=2, device=CPU, seed=0)
    assert data.num_classes == 2
    with pytest.raises(ConfigError, match=r"^dataset\.bad_images: 'ignore' is not a choice"):
        build_data(folder_config(clean, bad_images="ignore"), batch_size=2, device=CPU, seed=0)


def test_broken_layouts_are_one_line_errors(tmp_path):
    empty = write_folder(tmp_path / "empty_class")
    for image in (empty / "val" / "dog").iterdir():
        image.unlink()
    no_images = tmp_path / "no_images"
    (no_images / "train").mkdir(parents=True)
    (no_images / "val").mkdir()
    differ = write_folder(tmp_path / "differ")
    (differ / "val" / "dog").rename(differ / "val" / "owl")
    cases = {
        empty: f"^dataset\\.root: class folder {empty / 'val' / 'dog'} hold no images",
        no_images: f"^dataset\\.root: {no_images / 'train'} has no class folders, so no images$",
        differ: "^dataset\\.root: train/ and val/ under .* need the same class folders; "
        "only in train/: dog; only in val/: owl$",
    }
    for root, pattern in cases.items():
        with pytest.raises(ConfigError, match=pattern) as caught:
            build_data(folder_config(root), batch_size=2, device=CPU, seed=0)
        assert "\n" not in str(caught.value)


def run_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dcutmix.data.check", str(root)], capture_output=True, text=True
    )


@pytest.mark.slow
def test_check_command_names_damaged_files_and_counts(tmp_path):
    root = write_folder(tmp_path / "images", fmt="PNG")
    clean = run_check(root)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.splitlines() == [f"{root}: 2 classes, 16 images, 0 damaged"]
    not_an_image, truncated = damage(root)
    found = run_check(root)
    assert found.returncode == 1
    lines = found.stdout.splitlines()
    assert lines[0].startswith(f"damaged: {not_an_image} (UnidentifiedImageError")
    assert lines[1].startswith(f"damaged: {truncated} (")
    assert lines[2] == f"{root}: 2 classes, 18 images, 2 damaged"
    broken = run_check(tmp_path / "nowhere")
    assert broken.returncode == 2
    assert broken.stderr.strip() == (
        f"error: ROOT: {tmp_path / 'nowhere'} has no train/ folder; point it at a folder with "
        "train/ and val/, each holding one folder of images per class"
    )


TRAIN = ["model=tiny", "logger=none", "trainer.device=cpu", "run_name=test", "trainer.epochs=2"]


@pytest.mark.slow
def test_training_skips_a_damaged_jpg_and_counts_it_in_results(tmp_path):
    root = write_folder(tmp_path / "images", per_class=6)
    not_an_image, _ = damage(root)
    folder = [
        "dataset=imagefolder",
        f"dataset.root={root}",
        "dataset.image_size=16",
        "dataset.resize=18",
        "trainer.batch_size=4",
        "trainer.num_workers=1",
    ]
    run_dir = tmp_path / "run"
    done = cli([*TRAIN, *folder, f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["status"], results["bad_images"]) == ("completed", 2)
    assert done.stderr.count(f"skipping damaged image {not_an_image}") == 1
    assert "Traceback" not in done.stderr

    refused_dir = tmp_path / "refused"
    refused = cli([*TRAIN, *folder, "dataset.bad_images=fail", f"hydra.run.dir={refused_dir}"])
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(not_an_image) in errors[0], refused.stderr
    assert not (refused_dir / "metrics.jsonl").exists()
