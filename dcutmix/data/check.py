"""Check an image folder before training: its layout, and every image decoded once.

``python -m dcutmix.data.check ROOT`` runs the same check as ``dataset.bad_images=fail``: the
layout (``train/`` and ``val/`` with the same class folders, none of them empty) and then every
image file, naming each one that cannot be decoded. Exit status 0 when all is well, 1 when
damaged images were found, 2 when the folder is no image folder at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from PIL import Image

from dcutmix.errors import InputError

SPLITS = ("train", "val")
# The extensions torchvision's ImageFolder reads; other files are not part of the dataset.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Decoding at a reduced scale reads the whole file (so truncation shows) at a fraction of the cost.
DRAFT_SIZE = (64, 64)


def is_image_file(name: str) -> bool:
    """Whether ImageFolder would read this file, by its extension."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_folders(split: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split) if entry.is_dir())


def _has_image(folder: Path) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(is_image_file(name) for name in files):
            return True
    return False


def check_layout(root: Path, key: str = "dataset.root") -> list[str]:
    """The class names of an image folder; InputError naming the first problem of its layout."""
    classes: dict[str, list[str]] = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            raise InputError(
                key,
                f"{root} has no {split}/ folder; point it at a folder with train/ and "
                f"val/, each holding one folder of images per class",
            )
        classes[split] = _class_folders(root / split)
        if not classes[split]:
            raise InputError(key, f"{root / split} has no class folders, so no images")
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise InputError(
            key,
            f"train/ and val/ under {root} need the same class folders; only in train/: "
            f"{', '.join(only_train) or 'none'}; only in val/: {', '.join(only_val) or 'none'}",
        )
    for split in SPLITS:
        empty = [name for name in classes[split] if not _has_image(root / split / name)]
        if empty:
            raise InputError(
                key,
                f"class folder{'s' if len(empty) > 1 else ''} "
                f"{', '.join(str(root / split / name) for name in empty)} hold no images "
                f"({', '.join(IMAGE_EXTENSIONS)})",
            )
    return classes["train"]


def image_files(root: Path) -> Iterator[Path]:
    """Every image file of every class folder of both splits, in a stable order."""
    for split in SPLITS:
        for name in _class_folders(root / split):
            for folder, _, files in sorted(os.walk(root / split / name, followlinks=True)):
                for file in sorted(files):
                    if is_image_file(file):
                        yield Path(folder) / file


def decode_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the image at ``path`` cannot be decoded, or None when it can."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", DRAFT_SIZE)
            image.load()
    except Exception as error:  # PIL raises many types for damaged data; any of them means skip
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return None


def find_bad_images(
    root: Path, progress: Callable[[int], None] | None = None
) -> list[tuple[Path, str]]:
    """Every image file under ``root`` that cannot be decoded, with the reason."""
    bad = []
    for count, path in enumerate(image_files(root), 1):
        problem = decode_problem(path)
        if problem is not None:
            bad.append((path, problem))
        if progress is not None and count % 10000 == 0:
            progress(count)
    return bad


def refuse_bad_images(root: Path) -> None:
    """InputError naming every damaged image under ``root`` (for ``dataset.bad_images=fail``)."""
    bad = find_bad_images(root)
    if bad:
        listed = "; ".join(f"{path} ({why})" for path, why in bad)
        raise InputError(
            "dataset.bad_images=fail",
            f"{len(bad)} damaged image{'s' if len(bad) > 1 else ''} "
            f"under {root}: {listed}; remove or replace them, or set dataset.bad_images=skip",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Check ROOT's layout and images; print one line per damaged image and a count."""
    parser = argparse.ArgumentParser(
        prog="python -m dcutmix.data.check",
        description="Check an image folder (train/ and val/ class folders) and decode every image.",
    )
    parser.add_argument("root", metavar="ROOT", help="the folder dataset.root would name")
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser()
    try:
        classes = check_layout(root, key="ROOT")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    checked = sum(1 for _ in image_files(root))
    bad = find_bad_images(root, lambda n: print(f"checked {n} of {checked} images", flush=True))
    for path, why in bad:
        print(f"damaged: {path} ({why})")
    print(f"{root}: {len(classes)} classes, {checked} images, {len(bad)} damaged")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
