"""IDX files written and read independently of the code under test (numpy, struct and gzip)."""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60_000, "test": 10_000}
# Where Debian's dataset-fashion-mnist puts the four files (dpkg -L dataset-fashion-mnist).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file's bytes for a uint8 array: magic 0x0000080N, big-endian sizes, the data."""
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, **kwargs) -> Path:
    data = idx_bytes(array, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb", compresslevel=1) as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
    return path


def decode_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (plain or .gz), decoded here with numpy alone."""
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@dataclass
class IdxSet:
    """A full-size MNIST-format set: images uint8 (N, 28, 28) and labels uint8 (N,) per split."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def write(self, folder: Path, *, gz: bool = False) -> Path:
        """The four files in ``folder`` (flat), plain or gzip-compressed."""
        for split, (images_name, labels_name) in NAMES.items():
            write_idx(folder / images_name, self.images[split], gz=gz)
            write_idx(folder / labels_name, self.labels[split], gz=gz)
        return folder


def synthetic_set(seed: int = 0) -> IdxSet:
    """60,000 + 10,000 images of a few grey levels (quick to compress), labels 0-9."""
    rng = np.random.default_rng(seed)
    images = {s: rng.integers(0, 4, (n, 28, 28), dtype=np.uint8) * 85 for s, n in COUNTS.items()}
    labels = {s: rng.integers(0, 10, n, dtype=np.uint8) for s, n in COUNTS.items()}
    return IdxSet(images, labels)
