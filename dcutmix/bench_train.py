"""Training-step benchmark: the framework's engine against a minimal hand-written loop.

Both train the same model on the same device-resident data with the same mixer; the difference
is what the framework adds per step (learning-rate schedule, per-step generators, loss
bookkeeping, progress). A third measurement runs only the loader and the mixer, to show the share
of a step that goes to data and mixing.
"""

from __future__ import annotations

import statistics
import time

import torch

from dcutmix.data import build_data
from dcutmix.engine import Engine, EpochState, LRSchedule
from dcutmix.losses import soft_target_cross_entropy
from dcutmix.mixing import build_mixer
from dcutmix.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    num_train = batch_size * steps
    data = build_data(
        {
            "name": "fake",
            "num_train": num_train,
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
    mixer = build_mixer(mode, num_classes=data.num_classes)
    amp_dtype = torch.bfloat16 if (amp if amp is not None else dev.type == "cuda") else None

    def fresh():
        torch.manual_seed(0)
        model = build_model(model_name, num_classes=data.num_classes, in_channels=3).to(dev)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def hand_written(epoch: int) -> None:
        generator = torch.Generator(device=dev).manual_seed(epoch)
        for images, labels in data.train.epoch(epoch):
            mixed, targets = mixer(images, labels, generator=generator)
            with autocast():
                logits = hand_model(mixed)
            loss = soft_target_cross_entropy(logits, targets)
            hand_opt.zero_grad(set_to_none=True)
            loss.backward()
            hand_opt.step()

    def framework(epoch: int) -> None:
        engine.train_epoch(data.train.epoch(epoch), epoch, steps, EpochState())

    def data_and_mixing(epoch: int) -> None:
        generator = torch.Generator(device=dev).manual_seed(epoch)
        for images, labels in data.train.epoch(epoch):
            mixer(images, labels, generator=generator)

    hand_model, hand_opt = fresh()
    model, optimizer = fresh()
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
    fns = {"hand_written": hand_written, "framework": framework, "data_and_mixing": data_and_mixing}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(1)  # warm-up
    for r in range(rounds):
        for name, fn in fns.items():
            _sync(dev)
            start = time.perf_counter()
            fn(r + 2)
            _sync(dev)
            samples[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in samples.items()}
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
