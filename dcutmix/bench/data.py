"""Data benchmark: the device-resident loader against the classic torchvision CIFAR DataLoader.

Both read the same CIFAR-shaped uint8 images and produce the same kind of batch (random crop with
4 pixels of zero padding, horizontal flip, float32, normalised) on the same device. Epochs of the
two alternate round by round, so a busy machine slows both alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dcutmix.bench.timing import timed_rounds
from dcutmix.data import DeviceLoader, classic_cifar_loader
from dcutmix.data.settings import CIFAR_MEAN, CIFAR_STD


def _loaders(images: torch.Tensor, labels: torch.Tensor, batch_size: int, workers: int, dev):
    device_loader = DeviceLoader(
        images,
        labels,
        batch_size=batch_size,
        device=dev,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        shuffle=True,
        crop_padding=4,
        hflip=True,
        drop_last=True,
    )
    classic = classic_cifar_loader(
        images.permute(0, 2, 3, 1).numpy(),
        labels.tolist(),
        batch_size=batch_size,
        num_workers=workers,
    )
    return device_loader, classic


def run_data_benchmark(
    num_images: int = 10_000,
    batch_size: int = 128,
    workers: int = 2,
    device: str = "cpu",
    rounds: int = 5,
) -> dict:
    """Images/s of one training epoch with each loader, and their ratio (device / classic)."""
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 100, (num_images,), generator=generator)
    device_loader, classic = _loaders(images, labels, batch_size, workers, dev)

    def device_epoch(epoch: int) -> None:
        for _ in device_loader.epoch(epoch):
            pass

    def classic_epoch(epoch: int) -> None:
        for batch_images, batch_labels in classic:
            batch_images.to(dev, non_blocking=True)
            batch_labels.to(dev, non_blocking=True)

    # round 0, the warm-up, also starts the classic loader's persistent workers
    epochs: dict[str, Callable[[int], None]] = {"device": device_epoch, "classic": classic_epoch}
    seconds = timed_rounds(epochs, dev, rounds)
    per_epoch = len(device_loader) * batch_size
    rate = {name: per_epoch / value for name, value in seconds.items()}
    return {
        "device": dev.type,
        "num_images": num_images,
        "batch_size": batch_size,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "images_per_second_device": rate["device"],
        "images_per_second_classic": rate["classic"],
        "ratio": rate["device"] / rate["classic"],
    }
