"""Atomic checkpoint writes, safe loading, and fallback to the previous good checkpoint."""

from __future__ import annotations

import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcutmix.errors import InputError
from dcutmix.store.files import atomic_torch_save

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: Path, keep_previous: bool = True) -> None:
    """Write ``obj`` to ``path`` so that a reader sees the old file or the new one, never a part.

    The previous file, if any, is kept as ``<name>.prev.pt``: if ``path`` is later found damaged
    (a disk fault, a copy cut short), ``load_latest`` falls back to it.
    """
    path = Path(path)
    atomic_torch_save(obj, path, keep_previous=previous_path(path) if keep_previous else None)


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def load_file(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a damaged or unsafe file raises InputError."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError("ckpt", f"{path} does not exist") from None
    except pickle.UnpicklingError as error:
        text = str(error)
        if "GLOBAL" in text or "Unsupported global" in text:
            raise InputError(
                "ckpt",
                f"{path} carries pickled Python objects, which are refused for safety "
                "(only tensors and plain containers load); re-save it as a state dict",
            ) from None
        detail = next(
            (line.strip() for line in text.splitlines() if "Unsupported" in line),
            "not a checkpoint",
        )
        raise InputError("ckpt", f"{path} is damaged or not a checkpoint ({detail})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError("ckpt", f"{path} is damaged or not a checkpoint ({message})") from None
    if not isinstance(obj, dict):
        raise InputError("ckpt", f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def load_latest(path: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest loadable training checkpoint at ``path`` (or its ``.prev`` sibling), or None.

    A damaged newest file is reported with a warning and the previous good one is used.
    """
    path = Path(path)
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            state = load_file(candidate, map_location)
        except InputError as error:
            warnings.warn(f"{error}; trying the previous checkpoint", stacklevel=2)
            continue
        if state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
            warnings.warn(
                f"ckpt: {candidate} is not a dcutmix training checkpoint; skipping it", stacklevel=2
            )
            continue
        if candidate != path:
            warnings.warn(f"resuming from the previous good checkpoint {candidate}", stacklevel=2)
        return state
    return None


def capture_rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states, in a weights_only-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def extract_model_state(obj: dict) -> dict[str, torch.Tensor]:
    """Model weights from one of ours (``model``), the authors' format (``net``, DataParallel
    ``module.`` prefixes) or a bare state dict."""
    if "model" in obj and isinstance(obj["model"], dict):
        state = obj["model"]
    elif "net" in obj and isinstance(obj["net"], dict):
        state = obj["net"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
    else:
        state = obj
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            "ckpt", "no model weights found (expected a 'model', 'net' or 'state_dict' entry)"
        )
    return {
        key.removeprefix("module.").removeprefix("_orig_mod."): value
        for key, value in state.items()
    }


def build_checkpoint(
    model: torch.nn.Module,
    epoch: int,
    run_config: dict,
    *,
    val_top1_err: float | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict a checkpoint file holds: ``best.pt`` (weights and the error that made them best)
    or, given ``training`` (what resuming needs), ``last.pt``.

    ``training`` holds ``optimizer``, ``scaler``, ``scheduler``, ``epoch_state``, ``history``,
    ``best``, ``rng`` and ``wall_seconds``; the keys are written in the order of earlier files.
    """
    if training is None:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "epoch": epoch,
            "run_config": run_config,
            "val_top1_err": val_top1_err,
        }
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": training["optimizer"],
        "scaler": training["scaler"],
        "scheduler": training["scheduler"],
        "epoch": epoch,
        "epoch_state": training["epoch_state"],
        "history": training["history"],
        "best": training["best"],
        "rng": training["rng"],
        "wall_seconds": training["wall_seconds"],
        "run_config": run_config,
    }
