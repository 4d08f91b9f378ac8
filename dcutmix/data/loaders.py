"""Batch loaders whose every epoch is a pure function of (seed, epoch), so a run resumes mid-epoch.

``DeviceLoader`` keeps a uint8 dataset on the training device and crops, flips and normalises
whole batches with a few tensor ops. ``TorchLoader`` wraps a classic ``DataLoader`` with PIL
transforms and workers, for data that does not fit in memory. Both yield
``(images float32 (B, C, H, W), labels int64 (B,))`` on the training device.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from dcutmix.run.seeding import derived_seed

Batch = tuple[Tensor, Tensor]


class Loader(Protocol):
    """What training and evaluation need from a loader."""

    batch_size: int
    num_samples: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]: ...


class BadSample(NamedTuple):
    """What a dataset returns for a file it cannot decode, in place of an (image, label) pair."""

    path: str
    reason: str


def _collate_skipping_bad(items: list[Any]) -> tuple[Any, list[BadSample]]:
    """The batch of the samples that decoded (None when none did), and the ones that did not."""
    bad = [item for item in items if isinstance(item, BadSample)]
    good = [item for item in items if not isinstance(item, BadSample)]
    return (default_collate(good) if good else None), bad


class _EpochBatches:
    """Batch arithmetic shared by both loaders: drop_last drops the incomplete final batch."""

    def __init__(self, size: int, batch_size: int, drop_last: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} must be at least 1")
        self.size = size
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.size // self.batch_size
        return -(-self.size // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images yielded per epoch: every image, less the dropped tail when drop_last is set."""
        return len(self) * self.batch_size if self.drop_last else self.size

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches start_step, start_step + 1, ... of this epoch (checked now, not at the first batch)."""
        if not 0 <= start_step <= len(self):
            raise ValueError(
                f"start_step: {start_step} is outside 0..{len(self)} (batches per epoch)"
            )
        return self._batches(epoch, start_step)

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        raise NotImplementedError


def crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Per-sample crops of the zero-padded batch at (top, left), mirrored where ``flip``; one gather."""
    b, c, h, w = images.shape
    padded_w = w + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)).reshape(b, c, -1)
    rows = top[:, None] + torch.arange(h, device=images.device)
    cols = left[:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    # A single gather on the flattened padded image was the fastest of the batched forms on CPU.
    flat = (rows[:, :, None] * padded_w + cols[:, None, :]).reshape(b, 1, h * w)
    return padded.gather(2, flat.expand(b, c, h * w)).reshape(b, c, h, w)


class DeviceLoader(_EpochBatches):
    """A uint8 (N, C, H, W) dataset held on the device once; batches augmented in a few tensor ops.

    Per epoch: a seeded permutation (when ``shuffle``), and per position a crop offset in
    [0, 2 * crop_padding] on each axis and a flip bit. Every image appears exactly once per epoch,
    except that ``drop_last`` leaves out the final ``N % batch_size`` images of that epoch's order.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool,
        seed: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images: expected a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        super().__init__(images.shape[0], batch_size, drop_last)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.shuffle = shuffle
        self.seed = seed
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.channels_last = channels_last
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add on the float copy
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @property
    def augments(self) -> bool:
        """Whether batches are cropped or flipped."""
        return self.crop_padding > 0 or self.hflip

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        order, augment = self._plan(epoch)
        for step in range(start_step, len(self)):
            window = slice(step * self.batch_size, min((step + 1) * self.batch_size, self.size))
            # indexing (not slicing) copies, so no caller can write into the stored dataset
            index = order[window]
            images = self.images[index]
            if augment is not None:
                top, left, flip = augment[:, window]
                images = crop_flip(images, top, left, flip.bool(), self.crop_padding)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images.float().mul_(self._scale).add_(self._shift), self.labels[index]

    def _plan(self, epoch: int) -> tuple[Tensor, Tensor | None]:
        """The epoch's order, and per position (top, left, flip) as one (3, N) tensor when augmenting."""
        generator = torch.Generator(device=self.device).manual_seed(derived_seed(self.seed, epoch))
        draw = {"generator": generator, "device": self.device}
        if self.shuffle:
            order = torch.randperm(self.size, **draw)
        else:
            order = torch.arange(self.size, device=self.device)
        if not self.augments:
            return order, None
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (2, self.size), **draw)
        flips = torch.randint(0, 2 if self.hflip else 1, (1, self.size), **draw)
        return order, torch.cat([offsets, flips])


class _SeededSamples(Dataset):
    """Reads ``(index, seed)`` items and runs the transforms under that seed, whichever worker runs it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        # torchvision's PIL transforms draw from the global generator; fork it so that a
        # worker-less loader leaves the training process's own random state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class _SeededOrder(Sampler):
    """``(index, seed)`` items of one epoch from a position on, converted a chunk at a time."""

    def __init__(self, order: Tensor, seeds: Tensor) -> None:
        self.order = order
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Python ints for a whole ImageNet epoch would cost ~100 MB; a chunk at a time costs little.
        for start in range(0, len(self.order), 4096):
            chunk = slice(start, start + 4096)
            yield from zip(self.order[chunk].tolist(), self.seeds[chunk].tolist(), strict=True)


class TorchLoader(_EpochBatches):
    """A torch ``DataLoader`` (workers, pinned memory on CUDA) with seeded, resumable epochs.

    Each epoch's order and every sample's transform seed come from (seed, epoch), so the batches
    do not depend on the number of workers, and start_step skips batches of that order.
    ``drop_last`` leaves out the final ``N % batch_size`` images of the epoch's order.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__(len(dataset), batch_size, drop_last)
        self.dataset = dataset
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.channels_last = channels_last
        # Damaged files met so far, with why; each is named once, however often it is met.
        self.bad_files: dict[str, str] = {}

    def _note_bad(self, bad: list[BadSample]) -> None:
        for sample in bad:
            if sample.path not in self.bad_files:
                self.bad_files[sample.path] = sample.reason
                print(
                    f"[dcutmix] warning: skipping damaged image {sample.path} ({sample.reason})",
                    file=sys.stderr,
                    flush=True,
                )

    def _batches(self, epoch: int, start_step: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        if self.shuffle:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        sample_seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        start = start_step * self.batch_size
        loader = DataLoader(
            _SeededSamples(self.dataset),
            batch_size=self.batch_size,
            sampler=_SeededOrder(order[start:], sample_seeds[start:]),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            # DataLoader draws its workers' base seed from this, not from the global generator
            generator=torch.Generator().manual_seed(0),
            collate_fn=_collate_skipping_bad,
        )
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        skipped = 0
        for batch, bad in loader:
            self._note_bad(bad)
            skipped += len(bad)
            if batch is None:
                continue
            images, labels = batch
            images = images.to(self.device, non_blocking=True, memory_format=memory_format)
            yield images, labels.to(self.device, non_blocking=True)
        if skipped:
            print(
                f"[dcutmix] epoch {epoch}: skipped {skipped} damaged image"
                f"{'s' if skipped > 1 else ''} of the {self.size - start} read",
                file=sys.stderr,
                flush=True,
            )


class ArrayImageDataset(Dataset):
    """PIL images from a uint8 (N, H, W, C) array with C in (1, 3), and their labels."""

    def __init__(
        self, images: np.ndarray, labels: Sequence[int], transform: Callable[[Image.Image], Any]
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
            raise ValueError(
                f"images: expected a uint8 (N, H, W, 1 or 3) array, got {images.dtype} {images.shape}"
            )
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        return self.transform(pil), int(self.labels[index])


def pil_transform(
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 0,
    hflip: bool = False,
) -> Any:
    """The classic CIFAR pipeline: RandomCrop with zero padding, horizontal flip, ToTensor, Normalize."""
    from torchvision import transforms

    steps: list[Callable] = []
    if crop_padding > 0:
        steps.append(transforms.RandomCrop(size, padding=crop_padding))
    if hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def classic_cifar_loader(
    images: np.ndarray,
    labels: Sequence[int],
    *,
    batch_size: int = 128,
    num_workers: int = 2,
    mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
    std: Sequence[float] = (0.2023, 0.1994, 0.2010),
    crop_padding: int = 4,
    hflip: bool = True,
    seed: int = 0,
) -> DataLoader:
    """The usual torchvision CIFAR loader over uint8 (N, H, W, C) images: the benchmark's baseline."""
    size = (images.shape[1], images.shape[2])
    dataset = ArrayImageDataset(images, labels, pil_transform(size, mean, std, crop_padding, hflip))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
