"""Building and loading the kernels' library: a cache folder shared by every process, each file
checked against its record (size and SHA-256) before it is mapped, so a damaged file is built again
instead of crashing the process."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dcutmix.store.files import write_atomic

SOURCE = Path(__file__).with_name("_native.c")
FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-pthread", "-ffp-contract=off")

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


def _cache_dirs() -> list[Path]:
    if os.environ.get("DCUTMIX_NATIVE_DIR"):
        return [Path(os.environ["DCUTMIX_NATIVE_DIR"])]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return [Path(base) / "dcutmix", Path(tempfile.gettempdir()) / f"dcutmix-{uid}"]


def find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _fingerprint(data: bytes) -> str:
    """What a library file's record holds: its size and SHA-256."""
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


def _record_of(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _intact(target: Path) -> bool:
    """Whether the cached library is the file its builder recorded (size and hash).

    A truncated or overwritten file would crash the process that maps it (a bus error, no
    message), so a file that does not match its record is never loaded but built again.
    """
    try:
        return _record_of(target).read_text() == _fingerprint(target.read_bytes())
    except OSError:
        return False


def _build(compiler: str, rebuild: bool = False) -> Path:
    """The library's path, compiled there unless a process already did (renamed into place).

    A cached file that does not match its record, or any file when ``rebuild``, is compiled
    again; the record is written after the library, so a reader never trusts a half-written pair.
    """
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [source, compiler.encode(), " ".join(FLAGS).encode(), platform.machine().encode()]
        )
    ).hexdigest()[:16]
    errors = []
    for folder in _cache_dirs():
        target = folder / f"dcutmix_native-{key}.so"
        if not rebuild and _intact(target):
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                built = Path(scratch) / target.name
                done = subprocess.run(
                    [compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if done.returncode != 0:
                    raise OSError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
                # a process that finds the file finds all of it
                library_bytes = built.read_bytes()
                write_atomic(target, lambda file, data=library_bytes: file.write(data))
                record = _fingerprint(library_bytes).encode()
                write_atomic(_record_of(target), lambda file, data=record: file.write(data))
            return target
        except (OSError, subprocess.SubprocessError) as error:
            errors.append(f"{folder}: {error}")
    raise OSError("; ".join(errors))


def load() -> ctypes.CDLL | None:
    if sys.platform == "win32":
        raise OSError("the kernels are built for POSIX systems only")
    compiler = find_compiler()
    if compiler is None:
        raise OSError("no C compiler (cc, gcc or clang; or $CC) on PATH")
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except OSError:
        # a file that matches its record but cannot be loaded here (another machine's libc)
        library = ctypes.CDLL(str(_build(compiler, rebuild=True)))
    library.dcutmix_nested_boxes.argtypes = [_I64] * 4 + [_PTR] * 5
    library.dcutmix_paste.argtypes = [_PTR, _PTR] + [_I64] * 8 + [_PTR, _I64, _PTR, _PTR, _I64]
    library.dcutmix_paste.argtypes += [_PTR, _I64, _I64]
    library.dcutmix_targets.argtypes = [_I64] * 3 + [_PTR] * 3 + [_I64, _PTR]
    library.dcutmix_resize_paste.argtypes = [_PTR, _PTR] + [_I64] * 5 + [_PTR] * 3
    library.dcutmix_resize_paste.argtypes += [_I64, _PTR, _I64]
    library.dcutmix_blend.argtypes = [_PTR, _PTR] + [_I64] * 3 + [_PTR, _I64, _PTR, _I64, _I64]
    library.dcutmix_cutout.argtypes = [_PTR, _PTR] + [_I64] * 8 + [_PTR] + [_I64] * 3
    for function in (
        library.dcutmix_blend,
        library.dcutmix_cutout,
        library.dcutmix_nested_boxes,
        library.dcutmix_paste,
        library.dcutmix_targets,
        library.dcutmix_resize_paste,
    ):
        function.restype = _I64
    return library
