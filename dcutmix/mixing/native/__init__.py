"""The mixers' CPU kernels (``_native.c``), built on first use with the system's C compiler.

On the CPU, DCutMix's nested boxes, the pixel copies of every box mode, the blends, Cutout's
squares, ResizeMix's resample and the soft targets are cheaper as a few loops over raw memory than
as tensor ops (the tensor route reads one index per pixel, or makes a pass per source). The file is
plain C99 (no Python or torch headers) and builds in well under a second; the library is kept in
a cache folder, named by a hash of the source and the compiler, and shared by every process on the
machine. Where it cannot be built (no compiler, a read-only home and temp), the mixers use their
tensor code, which gives the same results, and warn once.

``DCUTMIX_NATIVE=0`` turns the kernels off; ``DCUTMIX_NATIVE_DIR`` names the cache folder
(default ``$XDG_CACHE_HOME/dcutmix``, else ``~/.cache/dcutmix``, else the temp folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from dcutmix.mixing.native import build

#: a batch smaller than this many bytes is copied on one thread: at 32x32 (1.5 MB) a second
#: thread made the copy slower on the project's 2-core machine, at 224x224 faster
THREAD_BYTES = 1 << 21

_ERRORS = {
    -1: "a source index is outside the batch",
    -2: "a level is outside the plan",
    -3: "a box falls outside the image",
    -4: "out of memory",
    -5: "a class index is outside [0, num_classes)",
    -6: "the depth profiles are not nested boxes",
    -7: "the images are neither float32 nor float64",
}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
_enabled = True


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they are turned off or cannot be built (warned once).

    ``DCUTMIX_NATIVE`` is read when the kernels are first needed.
    """
    if not _tried:
        _first_use()
    return _library if _enabled else None


def _first_use() -> None:
    global _library, _tried
    with _lock:
        if _tried:
            return
        if os.environ.get("DCUTMIX_NATIVE", "1") != "0":
            try:
                _library = build.load()
            except OSError as error:
                warnings.warn(
                    f"dcutmix: the C kernels of the mixers could not be built ({error}); "
                    "the CPU uses their tensor code, which is slower",
                    RuntimeWarning,
                    stacklevel=4,
                )
        _tried = True


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block the mixers use their tensor code (for comparing the two routes)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def available(device: torch.device) -> bool:
    """Whether the kernels serve tensors on ``device``: the CPU, outside torch.compile, built."""
    return device.type == "cpu" and not torch.compiler.is_compiling() and library() is not None


def usable(images: Tensor) -> bool:
    """Whether the kernels can copy this batch: dense NCHW or channels-last, no autograd."""
    return (
        not images.requires_grad
        and (images.is_contiguous() or images.is_contiguous(memory_format=torch.channels_last))
        and available(images.device)
    )


def _loaded() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(
            "dcutmix.mixing.native: the C kernels are turned off or could not be built"
        )
    return lib


def _draws(size: int, batch: int) -> int:
    """How many rows a per-image or shared draw should have: B when it has B, else 1."""
    return batch if size == batch else 1


def _threads(images: Tensor) -> int:
    return torch.get_num_threads() if images.nbytes >= THREAD_BYTES else 1


def _shape(name: str, tensor: Tensor, *expected: int) -> None:
    """The kernels trust their buffers' sizes: a tensor of another shape is refused here."""
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(tensor.shape)}")


def _check(status: int, what: str) -> None:
    if status:
        raise RuntimeError(f"{what}: {_ERRORS.get(status, f'error {status}')}")


def nested_boxes(
    shrink: Tensor, offsets: Tensor, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor]:
    """DCutMix's boxes from its draws: (rows (n, H) int32, cols (n, W) int32, visible (n, K)).

    ``shrink`` (K - 1, n) and ``offsets`` (K - 1, 2, n) are float32 as DCutMix._plan draws them;
    the result equals its tensor code's, bit for bit (tests/test_native.py). Like the other
    kernels here, for where ``available`` holds; elsewhere they raise RuntimeError.
    """
    steps, n = shrink.shape
    _shape("offsets", offsets, steps, 2, n)
    shrink, offsets = shrink.to(torch.float32).contiguous(), offsets.to(torch.float32).contiguous()
    rows = torch.empty((n, height), dtype=torch.int32)
    cols = torch.empty((n, width), dtype=torch.int32)
    visible = torch.empty((n, steps + 1), dtype=torch.float32)
    status = _loaded().dcutmix_nested_boxes(
        n, steps, height, width, shrink.data_ptr(), offsets.data_ptr(),
        rows.data_ptr(), cols.data_ptr(), visible.data_ptr(),
    )  # fmt: skip
    _check(status, "dcutmix native nested_boxes")
    return rows, cols, visible


def _layout(images: Tensor) -> tuple[int, int, int, int, int]:
    """(planes, sample, plane, row, pixel) of a dense NCHW or channels-last batch, in bytes."""
    _, channels, height, width = images.shape
    item = images.element_size()
    if images.is_contiguous():
        return channels, channels * height * width * item, height * width * item, width * item, item
    # channels-last: one plane whose pixels are a run of all their channels' bytes
    return 1, channels * height * width * item, 0, width * channels * item, channels * item


def cutout(images: Tensor, start: Tensor, length: int) -> Tensor:
    """Each image with a ``length`` square of zeros whose first row and column are ``start``
    (2, n), clipped at the borders: Cutout's ``masked_fill`` (``usable(images)`` must hold)."""
    batch, _, height, width = images.shape
    out = torch.empty_like(images)
    planes, sample, plane, row, pixel = _layout(images)
    _shape("start", start, 2, _draws(start.shape[-1], batch))
    start = start.to(torch.float32).contiguous()
    threads = _threads(images)
    status = _loaded().dcutmix_cutout(
        images.data_ptr(), out.data_ptr(), batch, planes, height, width, sample, plane, row,
        pixel, start.data_ptr(), start.shape[1], length, threads,
    )  # fmt: skip
    _check(status, "dcutmix native cutout")
    return out


def paste(
    images: Tensor,
    partners: Tensor,
    rows: Tensor | None = None,
    cols: Tensor | None = None,
    level: Tensor | None = None,
) -> Tensor:
    """Every pixel from the sample its level names (``usable(images)`` must hold).

    Level 0 is the image itself, level l >= 1 shows sample ``partners[l - 1, b]`` (a (levels - 1,
    B) tensor, the plan's permutations). The level of a pixel
    is min(rows[y], cols[x]) of the image's (or, with one row, the shared) nested-box profiles,
    or ``level[y, x]`` of an (n, H, W) map, n = B or 1.
    """
    batch, _, height, width = images.shape
    out = torch.empty_like(images)
    planes, sample, plane_stride, row, pixel = _layout(images)
    _shape("partners", partners, partners.shape[0], batch)
    partners = partners.to(torch.int64).contiguous()
    if rows is not None:
        shared = _draws(rows.shape[0], batch)
        _shape("rows", rows, shared, height)
        _shape("cols", cols, shared, width)
        rows = rows.to(torch.int32).contiguous()
        cols = cols.to(torch.int32).contiguous()
        shared, level_ptr, maps = rows.shape[0], None, 0
        rows_ptr, cols_ptr = rows.data_ptr(), cols.data_ptr()
    else:
        _shape("level", level, _draws(level.shape[0], batch), height, width)
        level = level.to(torch.int64).contiguous()
        shared, rows_ptr, cols_ptr = 0, None, None
        level_ptr, maps = level.data_ptr(), level.shape[0]
    threads = _threads(images)
    status = _loaded().dcutmix_paste(
        images.data_ptr(), out.data_ptr(), batch, planes, height, width,
        sample, plane_stride, row, pixel, partners.data_ptr(), partners.shape[0] + 1, rows_ptr, cols_ptr, shared,
        level_ptr, maps, threads,
    )  # fmt: skip
    _check(status, "dcutmix native paste")
    return out


def mix_targets(labels: Tensor, partners: Tensor, weights: Tensor, num_classes: int) -> Tensor:
    """(B, num_classes) float32 targets: each level's weight added into its source's class.

    Level 0 is the image itself, level l >= 1 sample ``partners[l - 1, b]``; ``weights`` is (n, K)
    with n = B or 1. The same sums, in the same order, as mixing.py's scatter_add_ (CPU tensors).
    """
    batch = labels.shape[0]
    _shape("labels", labels, batch)
    _shape("partners", partners, partners.shape[0], batch)
    _shape("weights", weights, _draws(weights.shape[0], batch), partners.shape[0] + 1)
    labels = labels.to(torch.int64).contiguous()
    partners = partners.to(torch.int64).contiguous()
    weights = weights.to(torch.float32).contiguous()
    targets = torch.empty((batch, num_classes), dtype=torch.float32)
    status = _loaded().dcutmix_targets(
        batch, weights.shape[1], num_classes, labels.data_ptr(), partners.data_ptr(),
        weights.data_ptr(), weights.shape[0], targets.data_ptr(),
    )  # fmt: skip
    _check(status, "dcutmix native mix_targets")
    return targets


def resize_paste(
    images: Tensor, partners: Tensor, rows: Tensor, cols: Tensor, box: Tensor
) -> Tensor:
    """ResizeMix's paste: image b with ``images[partners[b]]`` area-resampled into its patch.

    ``images`` contiguous NCHW float32 or float64 (``usable`` must hold); ``rows`` (n, H, H) and
    ``cols`` (n, W, W) are mixing._resize_matrix's matrices in the images' dtype; ``box`` (4, n)
    holds each patch's top, left, height and width (n = B, or 1 for a shared patch). Equals the
    two matrix products up to the order of the sums (tests/test_native.py).
    """
    batch, channels, height, width = images.shape
    n = _draws(box.shape[-1], batch)
    _shape("partners", partners, batch)
    _shape("rows", rows, n, height, height)
    _shape("cols", cols, n, width, width)
    _shape("box", box, 4, n)
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    partners = partners.to(torch.int64).contiguous()
    rows = rows.to(images.dtype).contiguous()
    cols = cols.to(images.dtype).contiguous()
    box = box.to(torch.int64).contiguous()
    threads = _threads(images)
    status = _loaded().dcutmix_resize_paste(
        images.data_ptr(), out.data_ptr(), batch, channels, height, width,
        images.element_size(), partners.data_ptr(), rows.data_ptr(), cols.data_ptr(),
        rows.shape[0], box.data_ptr(), threads,
    )  # fmt: skip
    _check(status, "dcutmix native resize_paste")
    return out


def blend(images: Tensor, partners: Tensor, weights: Tensor) -> Tensor:
    """The blend modes' batch: ``weights[b, 0]`` of image b plus ``weights[b, l]`` of image
    ``partners[l - 1, b]`` for each l >= 1, rounded step by step as mixing._apply_blend does.

    ``images`` float32 or float64 (``usable`` must hold); ``weights`` (n, K), n = B or 1.
    """
    batch = images.shape[0]
    _shape("partners", partners, partners.shape[0], batch)
    _shape("weights", weights, _draws(weights.shape[0], batch), partners.shape[0] + 1)
    out = torch.empty_like(images)
    partners = partners.to(torch.int64).contiguous()
    weights = weights.to(images.dtype).contiguous()
    threads = _threads(images)
    status = _loaded().dcutmix_blend(
        images.data_ptr(), out.data_ptr(), images.shape[0], images[0].numel(),
        images.element_size(), partners.data_ptr(), weights.shape[1], weights.data_ptr(),
        weights.shape[0], threads,
    )  # fmt: skip
    _check(status, "dcutmix native blend")
    return out
