"""Crash-safe file writes: every file a run, a report or an analysis writes goes through here.

A reader (or a run resumed after a kill) sees the old file or the new one, never a part: the
bytes go to a temporary file in the same folder, are flushed to disk, and are renamed over the
target. Temporaries are named ``.<name>.<random>.tmp`` so that a run folder can recognise and
remove those a kill left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

# mkstemp makes owner-only files; written files should get the permissions any new file would.
_UMASK = os.umask(0)
os.umask(_UMASK)
TEMPORARY_GLOB = ".*.tmp"


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable; filesystems that refuse this are left as they are."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], None],
    keep_previous: Path | None = None,
) -> None:
    """Replace ``path`` with what ``write`` puts into a binary file, atomically.

    With ``keep_previous``, the file being replaced is first moved there (a fallback copy).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(fd, 0o666 & ~_UMASK)
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so that readers see the old file or the new."""
    data = text.encode("utf-8")
    write_atomic(path, lambda file: file.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON, atomically."""
    # Serialise first, so an unserialisable object never touches the disk.
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save_figure(figure: Any, path: str | os.PathLike[str], **savefig: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (``savefig`` options: format, dpi, ...)."""
    savefig.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    write_atomic(path, lambda file: figure.savefig(file, **savefig))


def atomic_torch_save(
    obj: Any, path: str | os.PathLike[str], keep_previous: Path | None = None
) -> None:
    """``torch.save`` to ``path`` atomically, optionally keeping the replaced file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda file: torch.save(obj, file), keep_previous=keep_previous)


def append_jsonl(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> None:
    """Append ``obj`` as one JSON line to ``path`` and make it durable before returning."""
    line = json.dumps(obj) + "\n"
    with open(path, "a", encoding="utf-8") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON value stored in ``path``, or None when the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
