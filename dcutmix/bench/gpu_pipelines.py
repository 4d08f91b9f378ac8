"""The training pipelines that ``dcutmix.bench.gpu_check`` times against each other.

``framework_pipeline``: this project's engine, device-resident loader and batched DCutMix with its
CUDA defaults (bf16 autocast, channels_last), optionally compiled. ``authors_pipeline``: the way
the CutMix/DCutMix authors' code trains, written here from its description: a torchvision
DataLoader with PIL crop/flip/ToTensor in worker processes, fp32, and DCutMix drawn per sample in
a Python loop on the CPU (NumPy Dirichlet and stick-breaking for each image).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dcutmix.models import build_model
from dcutmix.run.engine import Engine, EpochState, LRSchedule
from dcutmix.run.losses import soft_target_cross_entropy

NUM_CLASSES = 100
K, ALPHA = 5, 0.2


def _fake_images(num: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return images, torch.randint(0, NUM_CLASSES, (num,), generator=generator)


def _model(name: str, device: torch.device, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, in_channels=3).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)


def _timed(timer, name: str):
    return contextlib.nullcontext() if timer is None else timer.span(name)


@dataclass
class FrameworkPipeline:
    """The engine's own step on the device loader; data fetch and mixing are timed as "data"."""

    batch: int
    engine: Engine
    loader: Any
    epoch: int = 0
    losses: list[float] = field(default_factory=list)

    def run(self, steps: int, timer=None) -> None:
        self.epoch += 1
        mixer = self.engine.mixer

        def timed_mixer(images, labels, generator):
            with _timed(timer, "data"):
                return mixer(images, labels, generator=generator)

        def timed_batches():
            batches = iter(self.loader.epoch(self.epoch))
            while True:
                with _timed(timer, "data"):
                    batch = next(batches, None)
                if batch is None:
                    return
                yield batch

        self.engine.mixer = timed_mixer
        try:
            state = self.engine.train_epoch(timed_batches(), self.epoch, steps, EpochState())
        finally:
            self.engine.mixer = mixer
        self.losses.append(state.loss_sum / max(1, state.samples))


def framework_pipeline(
    num_train: int, device: torch.device, batch: int, model_name: str, compile_model: bool
) -> FrameworkPipeline:
    """This framework with its defaults on ``device`` (bf16 and channels_last on CUDA)."""
    from dcutmix.data import DeviceLoader
    from dcutmix.data.settings import CIFAR_MEAN, CIFAR_STD
    from dcutmix.mixing import build_mixer

    cuda = device.type == "cuda"
    images, labels = _fake_images(num_train)
    loader = DeviceLoader(
        images,
        labels,
        batch_size=batch,
        device=device,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        shuffle=True,
        crop_padding=4,
        hflip=True,
        drop_last=True,
        channels_last=cuda,
    )
    model = _model(model_name, device, channels_last=cuda)
    engine = Engine(
        model=torch.compile(model) if compile_model else model,
        optimizer=_sgd(model),
        schedule=LRSchedule(0.05, len(loader), 1000, "constant"),
        mixer=build_mixer("dcutmix", num_classes=NUM_CLASSES, k=K, alpha=ALPHA),
        device=device,
        seed=0,
        amp_dtype=torch.bfloat16 if cuda else None,
        progress=False,
        log_every=10**9,
    )
    return FrameworkPipeline(batch, engine, loader)


def authors_style_dcutmix(
    images: Tensor, targets: Tensor, rng: np.random.Generator, k: int = K, alpha: float = ALPHA
) -> tuple[Tensor, Tensor]:
    """DCutMix one image at a time on the CPU, the way a per-sample Python implementation does."""
    batch, _, height, width = images.shape
    mixed, mixed_targets = images.clone(), torch.empty_like(targets)
    partners = [rng.permutation(batch) for _ in range(k - 1)]
    for i in range(batch):
        phi = rng.dirichlet([alpha] * k)
        top, left, h, w, remaining = 0, 0, height, width, 1.0
        areas, sources = [height * width], [i]
        for j in range(1, k):
            v = phi[j - 1] / remaining if remaining > 0 else 1.0
            remaining -= phi[j - 1]
            child_h = round(h * float(np.sqrt(max(0.0, 1.0 - v))))
            child_w = round(w * float(np.sqrt(max(0.0, 1.0 - v))))
            top += int(rng.integers(0, h - child_h + 1))
            left += int(rng.integers(0, w - child_w + 1))
            h, w = child_h, child_w
            src = int(partners[j - 1][i])
            mixed[i, :, top : top + h, left : left + w] = images[
                src, :, top : top + h, left : left + w
            ]
            areas.append(h * w)
            sources.append(src)
        areas.append(0)
        mixed_targets[i] = sum(
            (areas[j] - areas[j + 1]) / (height * width) * targets[sources[j]] for j in range(k)
        )
    return mixed, mixed_targets


@dataclass
class AuthorsPipeline:
    """PIL DataLoader, per-sample CPU DCutMix, fp32 step; loading and mixing are timed as "data"."""

    batch: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    device: torch.device
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    losses: list[float] = field(default_factory=list)

    def run(self, steps: int, timer=None) -> None:
        self.model.train()
        batches = iter(self.loader)
        total = torch.zeros((), device=self.device)
        for _ in range(steps):
            with _timed(timer, "data"):
                images, labels = next(batches)
                onehot = torch.nn.functional.one_hot(labels, NUM_CLASSES).float()
                images, targets = authors_style_dcutmix(images, onehot, self.rng)
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
            loss = soft_target_cross_entropy(self.model(images), targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        self.losses.append(float(total) / steps)


def authors_pipeline(
    num_train: int, device: torch.device, batch: int, model_name: str, workers: int
) -> AuthorsPipeline:
    """The authors'-style pipeline on ``device``: fp32, contiguous, no compile."""
    from dcutmix.data import classic_cifar_loader

    images, labels = _fake_images(num_train)
    loader = classic_cifar_loader(
        images.permute(0, 2, 3, 1).numpy(), labels.tolist(), batch_size=batch, num_workers=workers
    )
    model = _model(model_name, device, channels_last=False)
    return AuthorsPipeline(batch, model, _sgd(model), loader, device)
