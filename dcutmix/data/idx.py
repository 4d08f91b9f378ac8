"""The IDX files of MNIST, Fashion-MNIST and KMNIST, read with every field checked.

An IDX file is a 4-byte magic number (two zero bytes, a type code, 0x08 for unsigned bytes, and
the number of dimensions), one big-endian 32-bit size per dimension, then the data. The files
come plain (``*-ubyte``, torchvision's layout after a download) or gzip-compressed
(``*-ubyte.gz``, as published and as the distribution packages ship them).

Every failure is one ``InputError`` whose key is the file's path: bad magic number, wrong image
size, a file shorter or longer than its header says, a count other than the split's, labels out
of range, or images and labels that disagree in length.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from dcutmix.errors import InputError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: (count, rows, columns)
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: (count,)
_MAGIC = {"images": IMAGES_MAGIC, "labels": LABELS_MAGIC}
_WHAT = {"images": "uint8 images, 3 dimensions", "labels": "uint8 labels, 1 dimension"}


def _fail(path: Path, message: str) -> InputError:
    return InputError(str(path), message)


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The file's (decompressed) bytes, or its first ``limit`` of them."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                return stream.read() if limit is None else stream.read(limit)
        with path.open("rb") as stream:
            return stream.read() if limit is None else stream.read(limit)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise _fail(path, f"is not a complete gzip file ({error}); fetch it again") from None
    except OSError as error:
        raise _fail(path, f"cannot be read ({error.strerror or error})") from None


def _header(path: Path, data: bytes, kind: str) -> tuple[int, ...]:
    """The dimensions the header declares, after checking the magic number."""
    if len(data) < 4:
        raise _fail(path, f"is too short to be an IDX file ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != _MAGIC[kind]:
        raise _fail(
            path,
            f"has magic number 0x{magic:08x}, not 0x{_MAGIC[kind]:08x} (IDX {_WHAT[kind]}); "
            "is it the right file?",
        )
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise _fail(path, f"is truncated inside its header ({len(data)} bytes)")
    return struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])


def _check_shape(path: Path, dims: tuple[int, ...], stored: int, size: tuple[int, int]) -> int:
    """The item count, after checking the image size and that the data has the declared length."""
    if len(dims) == 3 and tuple(dims[1:]) != size:
        raise _fail(path, f"holds {dims[1]}x{dims[2]} images, not {size[0]}x{size[1]}")
    expected = int(np.prod(dims))
    if stored < expected:
        raise _fail(
            path,
            f"is truncated: its header promises {' x '.join(map(str, dims))} = {expected} bytes "
            f"of data, it holds {stored}; fetch it again",
        )
    if stored > expected:
        raise _fail(
            path,
            f"holds {stored - expected} bytes more than its header's "
            f"{' x '.join(map(str, dims))} = {expected}; is it the right file?",
        )
    return dims[0]


def _stored_size(path: Path, header_bytes: int) -> int:
    """Bytes of data after the header, without decompressing when the gzip trailer tells."""
    if not path.name.endswith(".gz"):
        return path.stat().st_size - header_bytes
    # A single-member gzip file ends with its uncompressed size modulo 2**32; these files are far
    # smaller than that. A truncated or multi-member file may disagree: then read it all.
    with path.open("rb") as stream:
        stream.seek(-4, 2)
        (trailer,) = struct.unpack("<I", stream.read(4))
    return trailer - header_bytes


def check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    """Every label is a class index: 0 .. num_classes - 1."""
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        first = int(bad[0])
        raise _fail(
            path,
            f"holds label {int(labels[first])} at index {first} ({bad.size} out of range); "
            f"labels must be 0-{num_classes - 1}",
        )


def inspect_idx(path: Path, kind: str, size: tuple[int, int] = (28, 28)) -> int:
    """The item count of an IDX file, checked from its header and length without reading it all.

    Cheap enough for a check before a run: a few bytes of each file, and the whole file only
    when a gzip trailer disagrees with the header (a damaged or unusual file).
    """
    dims = _header(path, _read_bytes(path, 16), kind)
    header_bytes = 4 + 4 * len(dims)
    stored = _stored_size(path, header_bytes)
    if stored != int(np.prod(dims)) and path.name.endswith(".gz"):
        stored = len(_read_bytes(path)) - header_bytes
    return _check_shape(path, dims, stored, size)


def read_idx(path: Path, kind: str, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """The whole array of an IDX file: uint8 (N, H, W) images or uint8 (N,) labels, checked."""
    data = _read_bytes(path)
    dims = _header(path, data, kind)
    header_bytes = 4 + 4 * len(dims)
    _check_shape(path, dims, len(data) - header_bytes, size)
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(dims).copy()
