"""Mixing benchmark: ms per batch of every mode against torchvision's CutMix and a clone."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dcutmix.bench.timing import page_faults, timed_rounds
from dcutmix.mixing import MIXING_MODES, Mixer, build_mixer


def image_mixers(num_classes: int) -> dict[str, Mixer]:
    """Every registered mode that mixes images, with its default settings.

    A mode that cannot be built from its defaults or does not take an image batch (a mixer of
    hidden features, say) is left out, so new image modes join the table by registering.
    """
    # the smallest size the table times, so a default that needs room (cutout's 16-pixel square) fits
    images = torch.rand(2, 3, 32, 32)
    labels = torch.zeros(2, dtype=torch.long)
    mixers = {}
    for mode in MIXING_MODES:
        try:
            mixer = build_mixer(mode, num_classes=num_classes)
            mixer(images, labels)
        except (ValueError, TypeError, NotImplementedError):
            continue
        mixers[mode] = mixer
    return mixers


def _mixing_calls(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, mixers: dict
) -> dict[str, Callable[[int], object]]:
    from torchvision.transforms import v2

    torchvision_cutmix = v2.CutMix(num_classes=100)
    fns: dict[str, Callable[[int], object]] = {
        "clone": lambda _: images.clone(),
        "torchvision_cutmix": lambda _: torchvision_cutmix(images, labels),
    }
    for mode, mixer in mixers.items():
        fns[mode] = lambda _, mixer=mixer: mixer(images, labels, generator=generator)
    return fns


def bench_mixing(
    device: torch.device, rounds: int, sizes: tuple[int, ...] = (32, 224)
) -> list[dict]:
    """ms per batch of every image mode vs torchvision's CutMix and a plain clone."""
    mixers = image_mixers(num_classes=100)
    rows = []
    for batch, size in ((128, 32), (64, 224)):
        if size not in sizes:
            continue
        images = torch.rand(batch, 3, size, size, device=device)
        labels = torch.randint(0, 100, (batch,), device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        fns = _mixing_calls(images, labels, generator, mixers)
        reps = 20 if size == 32 else 2
        ms = {k: v * 1e3 for k, v in timed_rounds(fns, device, rounds, reps).items()}
        faults = {k: page_faults(fn) for k, fn in fns.items()}
        for mode, mixer in mixers.items():
            rows.append(
                {
                    "device": device.type,
                    "batch": batch,
                    "image": f"3x{size}x{size}",
                    "mode": mode,
                    "k": mixer.k,
                    "alpha": mixer.alpha,
                    "ms": ms[mode],
                    "x_torchvision_cutmix": ms[mode] / ms["torchvision_cutmix"],
                    "x_clone": ms[mode] / ms["clone"],
                    "page_faults": faults[mode],
                    "torchvision_cutmix_ms": ms["torchvision_cutmix"],
                    "clone_ms": ms["clone"],
                    "clone_page_faults": faults["clone"],
                }
            )
    return rows


def print_mixing(rows: list[dict]) -> None:
    print(
        "| device | batch | image | mode | K | alpha | ms/batch | x torchvision CutMix | x clone "
        "| page faults/call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        alpha = "" if r["alpha"] is None else f"{r['alpha']:.3g}"
        print(
            f"| {r['device']} | {r['batch']} | {r['image']} | {r['mode']} | {r['k'] or ''} | {alpha} "
            f"| {r['ms']:.3f} | {r['x_torchvision_cutmix']:.2f} | {r['x_clone']:.2f} "
            f"| {r['page_faults']:.0f} |"
        )
    seen = set()
    for r in rows:
        key = (r["device"], r["image"])
        if key not in seen:
            seen.add(key)
            print(
                f"baseline {r['device']} B={r['batch']} {r['image']}: torchvision CutMix "
                f"{r['torchvision_cutmix_ms']:.3f} ms, clone {r['clone_ms']:.3f} ms "
                f"({r['clone_page_faults']:.0f} page faults/call)"
            )
