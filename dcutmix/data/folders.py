"""Image folders whose damaged files are skipped (``dataset.bad_images=skip``) instead of fatal."""

from __future__ import annotations

from typing import Any

from PIL import Image
from torchvision import datasets

from dcutmix.data.loaders import BadSample

# What PIL and the transforms raise for a file that is not the image its name says.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class SkippingImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, returning a ``BadSample`` for a file that cannot be decoded."""

    def __getitem__(self, index: int) -> Any:
        try:
            return super().__getitem__(index)
        except DECODE_ERRORS as error:
            text = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
            return BadSample(self.samples[index][0], reason)
