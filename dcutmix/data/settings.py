"""The ``dataset`` config group: every dataset's keys, their defaults, and one checked reading of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcutmix.data.subsets import SUBSET_DEFAULTS, SubsetSettings, parse_subset
from dcutmix.errors import InputError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the paper's normalisation, for CIFAR-10 and CIFAR-100 alike
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# From the digits train split (val_fraction 0.2) at 32x32; tests recompute them.
DIGITS_MEAN = (0.3054, 0.3054, 0.3054)
DIGITS_STD = (0.3236, 0.3236, 0.3236)
# Fashion-MNIST's own figures, from its 60,000 training images; tests recompute them from the files.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
# MNIST's usual figures (its train split), which Random Erasing's and FMix's Fashion-MNIST code
# also normalises with; the presets that follow those recipes set them.
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
# KMNIST's as commonly quoted (the mean 0.1918 agrees across sources; the std 0.3483 is the more
# common of two figures quoted): not recomputed here, as the files were not at hand.
KMNIST_MEAN = (0.1918,)
KMNIST_STD = (0.3483,)
LOADER_CHOICES = ("auto", "device", "torch")
# Datasets of the MNIST format (dcutmix.data.mnist): 28x28, one channel, 60,000 + 10,000 images.
MNIST_FORMAT = ("fashion_mnist", "mnist", "kmnist")

_AUGMENT = {"augment": True, "crop_padding": 4, "hflip": True, "drop_last": True}
_CIFAR = {
    "root": "data",
    "download": False,
    "loader": "auto",
    **_AUGMENT,
    "mean": CIFAR_MEAN,
    "std": CIFAR_STD,
}


def _mnist_format(hflip: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    return {
        "root": None,
        "download": False,
        "loader": "auto",
        **_AUGMENT,
        "hflip": hflip,
        "train_subset": None,
        "val_subset": None,
        "mean": mean,
        "std": std,
    }


DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {
        "loader": "auto",
        "val_fraction": 0.2,
        # a mirrored digit is another glyph (or none): crop only
        **_AUGMENT,
        "hflip": False,
        "mean": DIGITS_MEAN,
        "std": DIGITS_STD,
    },
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    # Random Erasing's Fashion-MNIST augmentation: crop with 4-pixel padding and flip
    "fashion_mnist": _mnist_format(True, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    # the same crop; a mirrored digit or character is another glyph (or none), so no flip
    "mnist": _mnist_format(False, MNIST_MEAN, MNIST_STD),
    "kmnist": _mnist_format(False, KMNIST_MEAN, KMNIST_STD),
    "imagefolder": {
        "root": None,
        "image_size": 224,
        "resize": 256,
        "loader": "auto",
        "augment": True,
        "hflip": True,
        "drop_last": True,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "bad_images": "skip",
    },
    "fake": {
        "num_train": 1024,
        "num_val": 256,
        "num_classes": 10,
        "image_size": 32,
        "channels": 3,
        "loader": "auto",
        **_AUGMENT,
        "mean": 0.5,
        "std": 0.29,
    },
}
"""Every dataset's keys and their defaults; conf/dataset/<name>.yaml lists the same."""
for _defaults in DATASET_DEFAULTS.values():
    _defaults["subset"] = dict(SUBSET_DEFAULTS)


@dataclass(frozen=True)
class DatasetSettings:
    """A dataset config after checking; keys a dataset does not have keep these defaults."""

    name: str
    loader: str
    augment: bool
    hflip: bool
    drop_last: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    val_fraction: float = 0.0
    root: Path | None = None
    download: bool = False
    image_size: tuple[int, int] = (32, 32)
    resize: int = 0
    num_train: int = 0
    num_val: int = 0
    num_classes: int = 0
    channels: int = 3
    bad_images: str = "skip"
    train_subset: int | None = None
    val_subset: int | None = None
    subset: SubsetSettings = field(default_factory=SubsetSettings)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"dataset.{key}", f"{value!r} must be true or false")
    return value


def _whole(minimum: int) -> Callable[[str, Any], int]:
    def read(key: str, value: Any) -> int:
        if not _is_whole(value) or value < minimum:
            raise InputError(f"dataset.{key}", f"{value!r} must be a whole number >= {minimum}")
        return value

    return read


def _fraction(key: str, value: Any) -> float:
    if not _is_number(value) or not 0 < value < 1:
        raise InputError(f"dataset.{key}", f"{value!r} must be a number strictly between 0 and 1")
    return float(value)


def _loader(key: str, value: Any) -> str:
    if value not in LOADER_CHOICES:
        raise InputError(f"dataset.{key}", f"{value!r} is not one of {', '.join(LOADER_CHOICES)}")
    return value


def _size(key: str, value: Any) -> tuple[int, int]:
    pair = [value, value] if _is_whole(value) else value
    if not (
        isinstance(pair, Sequence) and len(pair) == 2 and all(_is_whole(v) and v > 0 for v in pair)
    ):
        raise InputError(
            f"dataset.{key}", f"{value!r} must be a positive whole number or a [height, width] pair"
        )
    return int(pair[0]), int(pair[1])


BAD_IMAGES_CHOICES = ("skip", "fail")


def _bad_images(key: str, value: Any) -> str:
    if value not in BAD_IMAGES_CHOICES:
        raise InputError(
            f"dataset.{key}",
            f"{value!r} is not a choice; use skip (warn and leave damaged images "
            "out) or fail (check every image first and refuse to train when one is damaged)",
        )
    return value


def _root(key: str, value: Any) -> Path | None:
    if value is not None and not isinstance(value, (str, Path)):
        raise InputError(f"dataset.{key}", f"{value!r} must be a folder path")
    return Path(value).expanduser() if value else None


def _subset(key: str, value: Any) -> int | None:
    if value is None:
        return None
    return _whole(1)(key, value)


_READERS: dict[str, Callable[[str, Any], Any]] = {
    "loader": _loader,
    "augment": _flag,
    "hflip": _flag,
    "drop_last": _flag,
    "download": _flag,
    "crop_padding": _whole(0),
    "val_fraction": _fraction,
    "root": _root,
    "image_size": _size,
    "resize": _whole(1),
    "num_train": _whole(1),
    "num_val": _whole(1),
    "num_classes": _whole(1),
    "channels": _whole(1),
    "bad_images": _bad_images,
    "train_subset": _subset,
    "val_subset": _subset,
    "subset": lambda key, value: parse_subset(value),
}


def _stats(key: str, value: Any, channels: int) -> tuple[float, ...]:
    numbers = [value] * channels if _is_number(value) else value
    if not (
        isinstance(numbers, Sequence) and len(numbers) == channels and all(map(_is_number, numbers))
    ):
        raise InputError(
            f"dataset.{key}",
            f"{value!r} must be one number or a list of {channels} (one per channel)",
        )
    if key == "std" and min(numbers) <= 0:
        raise InputError(f"dataset.{key}", f"{value!r} must be positive")
    return tuple(float(v) for v in numbers)


def _mnist_format_facts(values: dict[str, Any]) -> dict[str, Any]:
    """The fixed shape of the MNIST-format datasets, after checking the subsets fit in them."""
    from dcutmix.data.mnist import IMAGE_SIZE, SPLITS

    for key, split in (("train_subset", "train"), ("val_subset", "test")):
        if values[key] is not None and values[key] > SPLITS[split]:
            raise InputError(
                f"dataset.{key}",
                f"{values[key]} is more than the {SPLITS[split]} images of the {split} split; "
                "lower it or set null for all of them",
            )
    return {"channels": 1, "image_size": IMAGE_SIZE}


def parse_dataset(cfg: Mapping[str, Any]) -> DatasetSettings:
    """Check the ``dataset`` config without reading any data; errors name ``dataset.<key>``."""
    name = cfg.get("name")
    if name not in DATASET_DEFAULTS:
        raise InputError(
            "dataset.name", f"{name!r} is unknown; choose one of {', '.join(DATASET_DEFAULTS)}"
        )
    defaults = DATASET_DEFAULTS[name]
    unknown = sorted(set(cfg) - set(defaults) - {"name"})
    if unknown:
        raise InputError(
            f"dataset.{unknown[0]}",
            f"not a setting of dataset {name}; valid: {', '.join(defaults)}",
        )
    raw = {**defaults, **cfg}
    values = {key: _READERS[key](key, raw[key]) for key in defaults if key not in ("mean", "std")}
    if name in MNIST_FORMAT:
        values.update(_mnist_format_facts(values))
    channels = values.get("channels", 3)
    settings = DatasetSettings(
        name=name,
        mean=_stats("mean", raw["mean"], channels),
        std=_stats("std", raw["std"], channels),
        **values,
    )
    if name == "imagefolder":
        if settings.root is None:
            raise InputError(
                "dataset.root", "not set; point it at a folder with train/ and val/ class folders"
            )
        if settings.loader == "device":
            raise InputError(
                "dataset.loader",
                "device needs an in-memory dataset; imagefolder takes auto or torch",
            )
        if settings.subset.active:
            raise InputError("dataset.subset.fraction", "subsets need an in-memory dataset")
    if settings.loader == "torch" and channels not in (1, 3):
        raise InputError(
            "dataset.loader",
            f"torch needs 1 or 3 channels (PIL images), not {channels}; use device",
        )
    return settings
