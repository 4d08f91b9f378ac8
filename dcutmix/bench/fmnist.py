"""Fashion-MNIST benchmark: the loaders on the real images, and the reference models' epoch time.

``loaders``: the device-resident loader against a torchvision ``DataLoader`` with PIL transforms
(``RandomCrop(28, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``: Random
Erasing's Fashion-MNIST pipeline) over the same uint8 training images, epochs alternating round
by round. ``models``: seconds per training step (batch 128, 1x28x28, forward, soft-target loss,
backward, SGD step) of each model, interleaved, and the epoch of 60,000 images they add up to.

Reads the real files (``dataset.root`` null: ./data, then the distribution's folder).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dcutmix.bench.timing import timed_rounds
from dcutmix.data import DeviceLoader, classic_cifar_loader
from dcutmix.data.mnist import SPLITS, load
from dcutmix.data.settings import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from dcutmix.models import build_model
from dcutmix.run.losses import soft_target_cross_entropy

MODELS = ("tiny", "resnet20", "preactresnet18")


def _train_images(num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels, *_ = load("fashion_mnist", None, download=False)
    return images[:num_images], labels[:num_images]


def run_loader_benchmark(
    num_images: int = 20_000, batch_size: int = 128, workers: int = 2, rounds: int = 5
) -> dict:
    """Images/s of one training epoch with each loader on the CPU, and their ratio."""
    dev = torch.device("cpu")
    images, labels = _train_images(num_images)
    common = {"mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD, "crop_padding": 4}
    device_loader = DeviceLoader(
        images, labels, batch_size=batch_size, device=dev, shuffle=True, hflip=True,
        drop_last=True, **common,
    )  # fmt: skip
    classic = classic_cifar_loader(
        images.permute(0, 2, 3, 1).numpy(),
        labels.tolist(),
        batch_size=batch_size,
        num_workers=workers,
        **common,
    )

    def device_epoch(epoch: int) -> None:
        for _ in device_loader.epoch(epoch):
            pass

    def classic_epoch(epoch: int) -> None:
        for _ in classic:
            pass

    epochs: dict[str, Callable[[int], None]] = {"device": device_epoch, "classic": classic_epoch}
    seconds = timed_rounds(epochs, dev, rounds)
    per_epoch = len(device_loader) * batch_size
    rate = {name: per_epoch / value for name, value in seconds.items()}
    return {
        "num_images": num_images,
        "batch_size": batch_size,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "images_per_second_device": rate["device"],
        "images_per_second_classic": rate["classic"],
        "ratio": rate["device"] / rate["classic"],
    }


def _step(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> Callable[[int], None]:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images, labels = batch
    targets = torch.nn.functional.one_hot(labels, 10).float()

    def step(_: int) -> None:
        loss = soft_target_cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def run_model_benchmark(
    batch_size: int = 128, rounds: int = 3, models: tuple[str, ...] = MODELS
) -> dict:
    """Training images/s of each model on a real batch, and the 60,000-image epoch in minutes."""
    images, labels = _train_images(batch_size)
    loader = DeviceLoader(
        images, labels, batch_size=batch_size, device=torch.device("cpu"), shuffle=False,
        mean=(0.1307,), std=(0.3081,),
    )  # fmt: skip
    batch = next(loader.epoch(0))
    seconds = timed_rounds(
        {name: _step(name, batch) for name in MODELS}, torch.device("cpu"), rounds
    )
    steps = SPLITS["train"] // batch_size
    result: dict = {"batch_size": batch_size, "threads": torch.get_num_threads()}
    for name in models:
        result[f"{name}_images_per_second"] = batch_size / seconds[name]
        result[f"{name}_epoch_minutes"] = steps * seconds[name] / 60
    return result
