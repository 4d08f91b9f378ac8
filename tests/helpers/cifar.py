"""Tiny CIFAR-10 / CIFAR-100 datasets written in the official python-pickle layout, for tests."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@dataclass
class TinyCifar:
    """What was written: images as uint8 (N, 32, 32, 3), labels as int64 (N,), in file order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


def _images(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)


def _dump(path: Path, entry: dict) -> None:
    # The official files are Python 2 pickles with str keys; protocol 2 with str keys reads the same.
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)


def _batch(images: np.ndarray, labels: np.ndarray, label_key: str, batch_label: str) -> dict:
    # Rows are the R, G and B planes, 1024 values each, as in the official files.
    return {
        "batch_label": batch_label,
        label_key: [int(v) for v in labels],
        "data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
        "filenames": [f"image_{i:05d}.png" for i in range(len(images))],
    }


def write_cifar10(root: Path, per_batch: int = 20, num_test: int = 10, seed: int = 0) -> TinyCifar:
    """Write root/cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = _images(rng, 5 * per_batch), rng.integers(0, 10, 5 * per_batch)
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        _dump(
            folder / f"data_batch_{b + 1}",
            _batch(
                train_images[part], train_labels[part], "labels", f"training batch {b + 1} of 5"
            ),
        )
    test_images, test_labels = _images(rng, num_test), rng.integers(0, 10, num_test)
    _dump(folder / "test_batch", _batch(test_images, test_labels, "labels", "testing batch 1 of 1"))
    _dump(
        folder / "batches.meta",
        {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072},
    )
    return TinyCifar(train_images, train_labels, test_images, test_labels, 10)


def write_cifar100(
    root: Path, num_train: int = 100, num_test: int = 10, seed: int = 0
) -> TinyCifar:
    """Write root/cifar-100-python (train, test, meta) with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, count in (("train", num_train), ("test", num_test)):
        images, fine = _images(rng, count), rng.integers(0, 100, count)
        entry = _batch(images, fine, "fine_labels", name)
        entry["coarse_labels"] = [int(v) // 5 for v in fine]
        _dump(folder / name, entry)
        splits[name] = (images, fine)
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
        },
    )
    return TinyCifar(*splits["train"], *splits["test"], 100)
