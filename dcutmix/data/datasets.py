"""Datasets read into train and val loaders: digits, CIFAR-10/100, the MNIST family, image
folders, fake."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dcutmix.data.loaders import (
    ArrayImageDataset,
    DeviceLoader,
    Loader,
    TorchLoader,
    pil_transform,
)
from dcutmix.data.settings import DatasetSettings, parse_dataset
from dcutmix.data.subsets import SUBSET_FILE, SubsetChoice, choose_subset
from dcutmix.errors import InputError

DIGITS_SPLIT_SEED = 0
FAKE_DATA_SEED = 0


@dataclass
class DataBundle:
    """The train and val loaders of one dataset and the facts a model and an analysis need."""

    train: Loader
    val: Loader
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: each training image's index in its dataset's training split (None: image folders)
    train_index: Tensor | None = None
    #: the chosen subset (dataset.subset) the train loader draws from, or None for all images
    subset: SubsetChoice | None = None

    def subset_file(self) -> tuple[str, dict[str, Any]]:
        """A subset run's file (name, content): the record and the chosen images as indices of
        the dataset's training split."""
        assert self.subset is not None and self.train_index is not None
        return SUBSET_FILE, {**self.subset.record, "indices": [int(i) for i in self.train_index]}

    def recorded_subset(self) -> dict[str, Any]:
        """What results.json's config records of the subset (a subset run is another
        configuration than a full one): ``{"subset": record}``, or nothing."""
        return {} if self.subset is None else {"subset": self.subset.record}

    def images_per_epoch(self, limit_batches: int | None) -> int:
        """Training images one epoch draws, with at most ``limit_batches`` batches."""
        train = self.train
        if limit_batches is None:
            return train.num_samples
        return min(len(train), limit_batches) * train.batch_size

    @property
    def bad_images(self) -> int:
        """How many damaged image files the loaders have skipped so far (train and val)."""
        found = {**getattr(self.train, "bad_files", {}), **getattr(self.val, "bad_files", {})}
        return len(found)


class _InMemory(NamedTuple):
    """A whole dataset as uint8 (N, C, H, W) images and int64 labels, ready for either loader."""

    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    num_classes: int
    train_index: Tensor | None = None  # None: 0, 1, ... N - 1


def _digits(settings: DatasetSettings) -> _InMemory:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    scaled = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().float().unsqueeze(1)
    resized = F.interpolate(scaled, size=(32, 32), mode="bilinear", align_corners=False)
    images = resized.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target).long()
    # The split belongs to the dataset, not to the run: the same for every run seed.
    train_idx, val_idx = train_test_split(
        range(len(labels)),
        test_size=settings.val_fraction,
        stratify=bunch.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    train_idx, val_idx = torch.tensor(train_idx), torch.tensor(val_idx)
    return _InMemory(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx], 10)


def _local_cifar(name: str) -> type:
    """torchvision's CIFAR class that trusts the files on disk; a download is still MD5-checked.

    Built on first use, so that importing the package does not import torchvision.
    """
    from torchvision import datasets

    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    return type(
        f"_Local{base.__name__}",
        (base,),
        {
            "train_list": [[file, None] for file, _ in base.train_list],
            "test_list": [[file, None] for file, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def _cifar(settings: DatasetSettings) -> _InMemory:
    cls = _local_cifar(settings.name)
    root = settings.root
    if root is None:
        raise InputError(
            "dataset.root", f"not set; point it at the folder that holds {cls.base_folder}"
        )
    expected = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [name for name in expected if not (root / cls.base_folder / name).is_file()]
    if missing and not settings.download:
        raise InputError(
            "dataset.root",
            f"{root.absolute()} does not hold {cls.base_folder}/ (missing {', '.join(missing)}); "
            f"set dataset.download=true to fetch it there, or point dataset.root at the folder "
            f"that holds {cls.base_folder}",
        )
    train = cls(str(root), train=True, download=settings.download)
    test = cls(str(root), train=False)

    def tensors(split: Any) -> tuple[Tensor, Tensor]:
        images = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(split.targets)

    return _InMemory(*tensors(train), *tensors(test), len(train.classes))


def _fake(settings: DatasetSettings) -> _InMemory:
    generator = torch.Generator().manual_seed(FAKE_DATA_SEED)
    n, shape = settings.num_train + settings.num_val, (settings.channels, *settings.image_size)
    images = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, settings.num_classes, (n,), generator=generator)
    cut = settings.num_train
    return _InMemory(images[:cut], labels[:cut], images[cut:], labels[cut:], settings.num_classes)


def _mnist_format(settings: DatasetSettings) -> _InMemory:
    """Fashion-MNIST, MNIST or KMNIST (val is the 10k test set), optionally a balanced subset."""
    from dcutmix.data import mnist

    *arrays, num_classes = mnist.load(settings.name, settings.root, settings.download)
    train_images, train_labels, val_images, val_labels = arrays
    train_index = torch.arange(len(train_labels))
    if settings.train_subset is not None:
        train_index = mnist.balanced_subset(train_labels, settings.train_subset)
        train_images, train_labels = train_images[train_index], train_labels[train_index]
    if settings.val_subset is not None:
        keep = mnist.balanced_subset(val_labels, settings.val_subset)
        val_images, val_labels = val_images[keep], val_labels[keep]
    return _InMemory(train_images, train_labels, val_images, val_labels, num_classes, train_index)


_IN_MEMORY = {
    "digits": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "fashion_mnist": _mnist_format,
    "mnist": _mnist_format,
    "kmnist": _mnist_format,
    "fake": _fake,
}


def check_data_files(settings: DatasetSettings) -> None:
    """Check a dataset's files before a run starts, where that is cheap (the MNIST format's).

    Every failure is one InputError naming the root or the file; other datasets are checked
    when they are read.
    """
    from dcutmix.data.settings import MNIST_FORMAT

    if settings.name in MNIST_FORMAT:
        from dcutmix.data import mnist

        mnist.check_files(settings.name, settings.root, settings.download)


def build_data(
    cfg: Mapping[str, Any],
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    num_workers: int = 0,
    eval_batch_size: int | None = None,
    channels_last: bool = False,
) -> DataBundle:
    """Train and val loaders for the ``dataset`` config (a plain dict) on ``device``."""
    settings = parse_dataset(cfg)
    eval_batch_size = eval_batch_size or batch_size
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value < 1:
            raise InputError(f"trainer.{key}", f"{value} must be at least 1")
    common = {"device": device, "seed": seed, "channels_last": channels_last}
    if settings.name == "imagefolder":
        return _folder_bundle(settings, batch_size, eval_batch_size, num_workers, common)
    data = _IN_MEMORY[settings.name](settings)
    data, subset = _chosen(data, settings, dict(cfg), seed, batch_size)
    _check_train_size(settings, len(data.train_labels), batch_size)
    padding = settings.crop_padding if settings.augment else 0
    hflip = settings.hflip and settings.augment
    train_options = {"batch_size": batch_size, "shuffle": True, "drop_last": settings.drop_last}
    val_options = {"batch_size": eval_batch_size, "shuffle": False}
    _, channels, height, width = data.train_images.shape
    if settings.loader == "torch":

        def pil_dataset(
            images: Tensor, labels: Tensor, padding: int, hflip: bool
        ) -> ArrayImageDataset:
            transform = pil_transform((height, width), settings.mean, settings.std, padding, hflip)
            return ArrayImageDataset(images.permute(0, 2, 3, 1).numpy(), labels.tolist(), transform)

        common["num_workers"] = num_workers
        train_set = pil_dataset(data.train_images, data.train_labels, padding, hflip)
        train = TorchLoader(train_set, **train_options, **common)
        val = TorchLoader(
            pil_dataset(data.val_images, data.val_labels, 0, False), **val_options, **common
        )
    else:
        common.update(mean=settings.mean, std=settings.std)
        train = DeviceLoader(
            data.train_images,
            data.train_labels,
            crop_padding=padding,
            hflip=hflip,
            **train_options,
            **common,
        )
        val = DeviceLoader(data.val_images, data.val_labels, **val_options, **common)
    index = (
        data.train_index if data.train_index is not None else torch.arange(len(data.train_labels))
    )
    return DataBundle(
        train, val, data.num_classes, channels, (height, width), settings.mean, settings.std,
        index, subset,
    )  # fmt: skip


def _chosen(
    data: _InMemory, settings: DatasetSettings, cfg: dict, seed: int, batch_size: int
) -> tuple[_InMemory, SubsetChoice | None]:
    """The in-memory set cut to ``dataset.subset`` when one is set (dcutmix.data.subsets)."""
    if not settings.subset.active:
        return data, None
    choice = choose_subset(
        settings.subset, data.train_labels.numpy(), seed=seed, dataset=cfg, batch_size=batch_size
    )
    keep = torch.from_numpy(choice.positions)
    index = (
        data.train_index if data.train_index is not None else torch.arange(len(data.train_labels))
    )
    cut = data._replace(
        train_images=data.train_images[keep],
        train_labels=data.train_labels[keep],
        train_index=index[keep],
    )
    return cut, choice


def _check_train_size(settings: DatasetSettings, size: int, batch_size: int) -> None:
    if settings.drop_last and size < batch_size:
        raise InputError(
            "trainer.batch_size",
            f"{batch_size} is more than the {size} training images of "
            f"{settings.name}, so drop_last leaves no batch; lower it or set dataset.drop_last=false",
        )


def _folder_transforms(settings: DatasetSettings) -> tuple[Any, Any]:
    from torchvision import transforms

    finish = [transforms.ToTensor(), transforms.Normalize(settings.mean, settings.std)]
    resize_crop = [transforms.Resize(settings.resize), transforms.CenterCrop(settings.image_size)]
    train = (
        [transforms.RandomResizedCrop(settings.image_size)]
        if settings.augment
        else list(resize_crop)
    )
    if settings.augment and settings.hflip:
        train.append(transforms.RandomHorizontalFlip())
    return transforms.Compose(train + finish), transforms.Compose(resize_crop + finish)


def _folder_bundle(
    settings: DatasetSettings,
    batch_size: int,
    eval_batch_size: int,
    num_workers: int,
    common: dict[str, Any],
) -> DataBundle:
    from dcutmix.data.check import check_layout, refuse_bad_images

    root = settings.root
    check_layout(root)
    if settings.bad_images == "fail":
        refuse_bad_images(root)
    train_transform, val_transform = _folder_transforms(settings)
    from dcutmix.data.folders import SkippingImageFolder

    train = SkippingImageFolder(str(root / "train"), train_transform)
    val = SkippingImageFolder(str(root / "val"), val_transform)
    _check_train_size(settings, len(train), batch_size)
    common["num_workers"] = num_workers
    return DataBundle(
        TorchLoader(
            train, batch_size=batch_size, shuffle=True, drop_last=settings.drop_last, **common
        ),
        TorchLoader(val, batch_size=eval_batch_size, shuffle=False, **common),
        len(train.classes),
        3,
        settings.image_size,
        settings.mean,
        settings.std,
    )
