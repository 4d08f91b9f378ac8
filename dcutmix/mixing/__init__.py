"""Batched image-mixing augmentations: none, Mixup, CutMix, their naive K-image expansions, DMixup,
DCutMix, and the field's baselines Cutout, Random Erasing, FMix, ResizeMix and Manifold Mixup.

Tensor code (torch only, no I/O), usable in any training loop::

    mixer = build_mixer("dcutmix", num_classes=100, k=5, alpha=0.2)
    images, targets = mixer(images, labels, generator=g)

Every mixer returns the mixed batch (same shape, dtype and device) and float32 soft targets of shape
(B, num_classes) whose rows sum to 1. Each class docstring specifies its mode; README.md ("The
mixers") tabulates them, and tests/test_mixing.py checks every claim by counting pixels.

How it is vectorised: each mode first draws a *plan* for the batch (``plan``: K source
permutations, the K weights of every sample, and for the box modes which source is visible at each
pixel), and one shared step applies it (``apply``). No Python loop runs over the batch, nothing
synchronises with the host, and all randomness comes from the optional ``torch.Generator`` on the
images' device. On the CPU the plan's geometry, the pixel copies, the blends and the soft targets
run in small C kernels (``native``, built on first use with the system's compiler): from the same
draws they give the same boxes, pixels and targets as the tensor code (blends to the last bits),
which accelerators, ``torch.compile``, autograd and machines without a compiler run instead.

The files: ``plan`` (the plan and its draws), ``apply`` (gate, copies, blends, targets), ``base``
(``Mixer`` and its checks), one file per family (``two_image``, ``k_image``, ``cutout``,
``random_erasing``, ``fmix``, ``resizemix``, ``manifold``), ``registry`` (the one list of modes
and ``build_mixer``) and ``native`` (the C kernels and their loader).

May import: torch, and of this project only ``dcutmix.errors`` and (for the kernels' cache)
``dcutmix.store.files``. Bad arguments raise ``InputError`` (a ``ValueError``) whose ``key`` names
the argument.
"""

from dcutmix.mixing.base import MAX_K, Mixer
from dcutmix.mixing.cutout import Cutout
from dcutmix.mixing.fmix import FMix
from dcutmix.mixing.k_image import DCutMix, DMixup, NaiveCutMix, NaiveMixup
from dcutmix.mixing.manifold import HiddenBlend, ManifoldMixup
from dcutmix.mixing.random_erasing import RandomErasing
from dcutmix.mixing.registry import (
    MIXING_MODES,
    MODE_OPTIONS,
    build_mixer,
    compile_mixer,
    mode_settings,
)
from dcutmix.mixing.resizemix import ResizeMix
from dcutmix.mixing.two_image import CutMix, Mixup, NoMix

__all__ = [
    "MAX_K",
    "MIXING_MODES",
    "MODE_OPTIONS",
    "CutMix",
    "Cutout",
    "DCutMix",
    "DMixup",
    "FMix",
    "HiddenBlend",
    "ManifoldMixup",
    "Mixer",
    "Mixup",
    "NaiveCutMix",
    "NaiveMixup",
    "NoMix",
    "RandomErasing",
    "ResizeMix",
    "build_mixer",
    "compile_mixer",
    "mode_settings",
]
