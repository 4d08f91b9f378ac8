"""Training-step benchmark: the framework's engine against a minimal hand-written loop.

Both train the same model on the same device-resident data with the same mixer; the difference
is what the framework adds per step (learning-rate schedule, per-step generators, loss
bookkeeping, progress). A third measurement runs only the loader and the mixer, to show the share
of a step that goes to data and mixing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dcutmix.bench.timing import timed_rounds
from dcutmix.data import build_data
from dcutmix.mixing import build_mixer
from dcutmix.models import build_model
from dcutmix.run.engine import Engine, EpochState, LRSchedule
from dcutmix.run.losses import soft_target_cross_entropy


def _fake_data(dev: torch.device, batch_size: int, steps: int, image_size: int):
    return build_data(
        {
            "name": "fake",
            "num_train": batch_size * steps,
            "num_val": batch_size,
            "num_classes": 10,
            "image_size": image_size,
            "channels": 3,
            "loader": "device",
        },
        batch_size=batch_size,
        device=dev,
        seed=0,
    )


def _fresh(model_name: str, num_classes: int, dev: torch.device):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=num_classes, in_channels=3).to(dev)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)


def _hand_written_epoch(model, optimizer, data, mixer, dev, amp_dtype) -> Callable[[int], None]:
    """The minimal loop a user would write by hand around the same loader and mixer."""

    def run(epoch: int) -> None:
        generator = torch.Generator(device=dev).manual_seed(epoch)
        for images, labels in data.train.epoch(epoch):
            mixed, targets = mixer(images, labels, generator=generator)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(mixed)
            loss = soft_target_cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def run_train_benchmark(
    device: str = "cpu",
    model_name: str = "tiny",
    batch_size: int = 64,
    steps: int = 20,
    rounds: int = 5,
    mode: str = "dcutmix",
    image_size: int = 32,
    amp: bool | None = None,
) -> dict:
    """Images/s of the engine vs a hand-written loop, and the data+mixing share of a step."""
    dev = torch.device(device)
    data = _fake_data(dev, batch_size, steps, image_size)
    mixer = build_mixer(mode, num_classes=data.num_classes)
    amp_dtype = torch.bfloat16 if (amp if amp is not None else dev.type == "cuda") else None
    hand_written = _hand_written_epoch(
        *_fresh(model_name, data.num_classes, dev), data, mixer, dev, amp_dtype
    )
    model, optimizer = _fresh(model_name, data.num_classes, dev)
    engine = Engine(
        model=model,
        optimizer=optimizer,
        schedule=LRSchedule(0.05, steps, 1000, "constant"),
        mixer=mixer,
        device=dev,
        seed=0,
        amp_dtype=amp_dtype,
        progress=False,
        log_every=50,
    )

    def framework(epoch: int) -> None:
        engine.train_epoch(data.train.epoch(epoch), epoch, steps, EpochState())

    def data_and_mixing(epoch: int) -> None:
        generator = torch.Generator(device=dev).manual_seed(epoch)
        for images, labels in data.train.epoch(epoch):
            mixer(images, labels, generator=generator)

    fns = {"hand_written": hand_written, "framework": framework, "data_and_mixing": data_and_mixing}
    # epochs from 1: round 0 (the warm-up) trains epoch 1, round r epoch r + 1
    seconds = timed_rounds(
        {name: lambda r, fn=fn: fn(r + 1) for name, fn in fns.items()}, dev, rounds
    )
    images = data.train.num_samples
    return {
        "device": dev.type,
        "model": model_name,
        "mode": mode,
        "batch_size": batch_size,
        "steps": steps,
        "images_per_second_hand_written": images / seconds["hand_written"],
        "images_per_second_framework": images / seconds["framework"],
        "framework_overhead_pct": 100.0 * (seconds["framework"] / seconds["hand_written"] - 1.0),
        "data_and_mixing_share_pct": 100.0 * seconds["data_and_mixing"] / seconds["framework"],
    }
