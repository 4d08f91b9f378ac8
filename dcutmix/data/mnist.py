"""MNIST, Fashion-MNIST and KMNIST: the four official IDX files, found, checked and loaded.

The files are read through torchvision's dataset classes (``MNIST``, ``FashionMNIST``,
``KMNIST``: their downloader, their class lists) with a reader that checks every field
(``dcutmix.data.idx``) and takes the files plain or gzip-compressed. ``dataset.root`` may hold
either layout:

- torchvision's: ``root/FashionMNIST/raw/train-images-idx3-ubyte`` and the other three files,
  as ``dataset.download=true`` leaves them;
- flat: the four files in ``root`` itself, each ``*-ubyte`` or ``*-ubyte.gz``, as the Debian
  package ``dataset-fashion-mnist`` ships them in ``/usr/share/datasets/fashion-mnist``.

With ``root: null`` the search is ``./data`` (either layout), then the distribution's folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dcutmix.data.idx import check_labels, inspect_idx, read_idx
from dcutmix.errors import InputError

IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10
SPLITS = {"train": 60_000, "test": 10_000}
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILE_NAMES = tuple(name for pair in FILES.values() for name in pair)
# Where a run looks when dataset.root is null (relative to the working directory, as CIFAR's).
DEFAULT_ROOT = Path("data")


@dataclass(frozen=True)
class Family:
    """One dataset of the MNIST format: its name in print and in torchvision, where it is installed."""

    title: str
    torchvision_name: str
    system_folders: tuple[Path, ...] = ()
    package: str | None = None


FAMILIES = {
    "fashion_mnist": Family(
        "Fashion-MNIST",
        "FashionMNIST",
        (Path("/usr/share/datasets/fashion-mnist"),),
        "dataset-fashion-mnist",
    ),
    "mnist": Family("MNIST", "MNIST"),
    "kmnist": Family("KMNIST", "KMNIST"),
}


def _file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or, failing that, ``folder/name.gz``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _folders(family: Family, root: Path | None) -> list[Path]:
    """The folders searched, in order: torchvision's layout then flat, under each root."""
    roots = [root] if root is not None else [DEFAULT_ROOT]
    folders = [folder for r in roots for folder in (r / family.torchvision_name / "raw", r)]
    return folders + ([] if root is not None else list(family.system_folders))


def _complete(folder: Path) -> dict[str, Path] | None:
    files = {name: _file(folder, name) for name in FILE_NAMES}
    return files if all(files.values()) else None  # type: ignore[return-value]


def _not_found(family: Family, root: Path | None, folders: Sequence[Path]) -> InputError:
    where = f"{root.absolute()}" if root is not None else ", ".join(str(f) for f in folders)
    partial = [
        f"{folder} lacks {', '.join(n for n in FILE_NAMES if _file(folder, n) is None)}"
        for folder in folders
        if any(_file(folder, name) for name in FILE_NAMES)
    ]
    ways = f"set dataset.download=true to fetch them into {root or DEFAULT_ROOT}"
    if family.package:
        ways += (
            f", or install the distribution package (apt-get install {family.package}, "
            f"which puts them in {family.system_folders[0]}) and leave dataset.root null"
        )
    looked = (
        f"no {family.title} files in {where}: looked for {', '.join(FILE_NAMES)} (each plain or "
        f".gz), flat or under {family.torchvision_name}/raw/"
    )
    return InputError(
        "dataset.root", f"{looked}{' (' + '; '.join(partial) + ')' if partial else ''}; {ways}"
    )


def locate(name: str, root: Path | None) -> dict[str, Path] | None:
    """The four files of dataset ``name`` (file name -> path), or None when no folder has them."""
    for folder in _folders(FAMILIES[name], root):
        found = _complete(folder)
        if found:
            return found
    return None


def _located(name: str, root: Path | None) -> dict[str, Path]:
    found = locate(name, root)
    if found is None:
        family = FAMILIES[name]
        raise _not_found(family, root, _folders(family, root))
    return found


def _check_pair(files: dict[str, Path], split: str, counts: tuple[int, int]) -> None:
    """Images and labels of a split agree in length, and that length is the official one."""
    images_name, labels_name = FILES[split]
    images, labels = counts
    if images != labels:
        raise InputError(
            str(files[labels_name]),
            f"holds {labels} labels but {files[images_name].name} holds {images} images; "
            "the two files of a split must come from the same release",
        )
    if images != SPLITS[split]:
        raise InputError(
            str(files[images_name]),
            f"holds {images} images; the official {split} split has {SPLITS[split]}",
        )


def check_files(name: str, root: Path | None, download: bool) -> None:
    """Find and check the four files without reading the images (cheap: before a run starts).

    Nothing to check yet when they are missing and ``download`` will fetch them.
    """
    if download and locate(name, root) is None:
        return
    files = _located(name, root)
    for split, (images_name, labels_name) in FILES.items():
        images = inspect_idx(files[images_name], "images", IMAGE_SIZE)
        labels = read_idx(files[labels_name], "labels")
        check_labels(files[labels_name], labels, NUM_CLASSES)
        _check_pair(files, split, (images, len(labels)))


def read_split(files: dict[str, Path], split: str) -> tuple[Tensor, Tensor]:
    """uint8 (N, 28, 28) images and int64 (N,) labels of one split, every field checked."""
    images_name, labels_name = FILES[split]
    images = read_idx(files[images_name], "images", IMAGE_SIZE)
    labels = read_idx(files[labels_name], "labels")
    check_labels(files[labels_name], labels, NUM_CLASSES)
    _check_pair(files, split, (len(images), len(labels)))
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _torchvision_class(family: Family, files: dict[str, Path] | None) -> type:
    """torchvision's class for ``family`` reading ``files`` through ``read_split``.

    Without files it only downloads (torchvision's own mirrors and checksums, into
    ``root/<Name>/raw``) and reads nothing. Built on first use, so that importing the package
    does not import torchvision.
    """
    from torchvision import datasets

    base = getattr(datasets, family.torchvision_name)

    def load_data(self: Any) -> tuple[Tensor, Tensor]:
        split = "train" if self.train else "test"
        if files is None:
            return torch.empty(0, *IMAGE_SIZE, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
        return read_split(files, split)

    members: dict[str, object] = {
        # torchvision's cache of its own earlier format would bypass the checks
        "_check_legacy_exist": lambda self: False,
        "_load_data": load_data,
    }
    if files is not None:
        members["_check_exists"] = lambda self: True
    # the same name as torchvision's class: its raw_folder is root/<class name>/raw
    return type(base.__name__, (base,), members)


def load(
    name: str, root: Path | None, download: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """Train images, train labels, test images, test labels and class count of dataset ``name``.

    Images are uint8 (N, 1, 28, 28), labels int64. Downloads first when ``download`` is set and
    no folder holds the files.
    """
    family = FAMILIES[name]
    if download and locate(name, root) is None:
        _torchvision_class(family, None)(str(root or DEFAULT_ROOT), train=True, download=True)
    files = _located(name, root)
    cls = _torchvision_class(family, files)
    train, test = cls(str(root or DEFAULT_ROOT), train=True), cls(str(root or DEFAULT_ROOT), False)
    images = (train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets)
    return (*images, len(cls.classes))


def balanced_subset(labels: Tensor, count: int) -> Tensor:
    """Indices (in file order) of ``count`` images spread evenly over the classes.

    Image i of class c is taken before image i + 1 of any class, so the classes' counts differ by
    at most one; no random draw, so the subset is the same for every run seed.
    """
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - starts
    pick = torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)[:count]
    return pick.sort().values
