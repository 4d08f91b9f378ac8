"""The typed config schema, checked while Hydra composes, and the semantic checks run before training.

The schema is registered with Hydra's ConfigStore as ``train_schema`` and sits first in
``conf/train.yaml``'s defaults list, so a misspelled key or a value of the wrong type fails at
composition, naming the key. ``validate`` then checks what types cannot express (ranges, files,
devices), each failure one ``InputError`` line.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dcutmix.errors import InputError
from dcutmix.mixing import MIXING_MODES, Mixer, build_mixer
from dcutmix.store.results import OBJECTIVES

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("multistep", "cosine", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")


# The schema declares keys and types only. Every value lives in one place, the YAML of conf/ (each
# option of a group sets every key of its group); tests/test_defaults.py checks both halves.


@dataclass
class MixingConfig:
    mode: str = MISSING
    k: int | None = MISSING
    alpha: float | None = MISSING
    prob: float = MISSING
    per_sample: bool | None = MISSING
    compile: bool = MISSING  # torch.compile the mixer (dcutmix.mixing.compile_mixer)
    # Settings of single modes (null in every other mode's YAML): cutout's square side in pixels,
    # random_erasing's [low, high] area fractions, smallest aspect ratio, fill (random, mean or a
    # number) and attempts, fmix's spectral decay power, resizemix's [low, high] range of the
    # patch's side scale, manifold_mixup's hidden layers to mix at (0 = the input).
    length: int | None = MISSING
    area: list[float] | None = MISSING
    aspect: float | None = MISSING
    fill: Any = MISSING
    attempts: int | None = MISSING
    decay: float | None = MISSING
    scale: list[float] | None = MISSING
    layers: list[int] | None = MISSING


def mixer_settings(mixing: Any) -> dict[str, Any]:
    """build_mixer's keyword arguments from the ``mixing`` config (all but mode and num_classes)."""
    keys = ("k", "alpha", "prob", "per_sample", "length", "decay", "scale", "layers")
    keys += ("area", "aspect", "fill", "attempts")
    settings = {key: mixing.get(key) for key in keys}
    for key in ("scale", "layers", "area"):
        if settings[key] is not None:
            settings[key] = list(settings[key])
    return settings


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    weight_decay: float = MISSING
    betas: list[float] = MISSING


@dataclass
class SchedulerConfig:
    name: str = MISSING
    # Fractions of the run (0 < m < 1) or absolute epochs (whole numbers >= 1).
    milestones: list[float] = MISSING
    gamma: float = MISSING
    warmup_epochs: float = MISSING
    min_lr: float = MISSING


@dataclass
class LoggerConfig:
    name: str = MISSING
    project: str = MISSING
    entity: str | None = MISSING
    mode: str | None = MISSING
    tags: list[str] = MISSING


@dataclass
class TrainerConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int | None = MISSING
    eval_every: int = MISSING
    device: str = MISSING
    seed: int = MISSING
    deterministic: bool = MISSING
    num_workers: int = MISSING
    amp: str = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    limit_train_batches: int | None = MISSING
    limit_val_batches: int | None = MISSING
    log_every: int = MISSING
    label_smoothing: float = MISSING
    on_nonfinite: str = MISSING
    save_best: bool = MISSING


@dataclass
class TrialConfig:
    # Set by the searching sweeper (hydra/sweeper=dcutmix_optuna) for each trial's job; null
    # outside a search. See dcutmix.run.trial.
    number: int | None = MISSING
    journal: str | None = MISSING
    study: str | None = MISSING


@dataclass
class TrainConfig:
    dataset: dict[str, Any] = MISSING
    model: dict[str, Any] = MISSING
    mixing: MixingConfig = field(default_factory=MixingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    eval_only: bool = MISSING
    ckpt: str | None = MISSING
    sweep_name: str = MISSING
    # What a run returns to a searching sweeper (lower is better): dcutmix.store.results.OBJECTIVES.
    objective: str = MISSING
    experiment_name: str | None = MISSING
    run_name: str = MISSING


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        if math.isclose(value, round(value, 4)):
            return f"{round(value, 4):g}"
        return f"{value:.4g}"
    return str(value)


# Overrides already spelled out by the name's fixed parts, or that name the sweep itself. Every
# other override goes into the name, so that two jobs of one sweep never share a folder.
_NAME_SKIP = {"mixing", "mixing.k", "mixing.alpha", "trainer.seed", "experiment", "+experiment"}
_NAME_SKIP_PREFIXES = ("hydra.", "hydra/", "sweep", "+sweep", "sweep_name", "logger", "trial.")


def _top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside braces and brackets (a dict or list value's stay)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"{": 1, "[": 1, "}": -1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return [*items, text[start:]]


def run_name(
    mode: str, k: Any, alpha: Any, seed: Any, experiment: Any = None, overrides: Any = ""
) -> str:
    """A readable job name from what the run computes, e.g. ``dcutmix-k5-a0.2-s1``."""
    parts = [str(experiment) if experiment not in (None, "None", "null") else str(mode)]
    if mode not in ("none",) and experiment in (None, "None", "null"):
        if k not in (None, "None", "null") and mode not in ("mixup", "cutmix"):
            parts.append(f"k{k}")
        if alpha not in (None, "None", "null"):
            parts.append(f"a{_format_number(float(alpha))}")
    for item in _top_level_items(str(overrides or "")):
        key, _, value = item.partition("=")
        if key == "trial.number" and value:
            parts.append(f"trial{value}")  # a search's trial: two trials never share a folder
        if not value or key in _NAME_SKIP or key.startswith(_NAME_SKIP_PREFIXES):
            continue
        # a dict value ({fraction:0.5,by:random}) becomes fraction0.5_byrandom
        value = value.strip("{}").replace(":", "").replace(",", "_")
        parts.append(f"{key.split('.')[-1]}{value}".replace("/", "_").strip("_"))
    parts.append(f"s{seed}")
    return "-".join(parts)


def _token() -> str:
    """A short random tag that keeps folders started in the same second apart.

    The processes of one torchrun launch share its run id, so they agree on their folder.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id:
        return hashlib.sha1(run_id.encode()).hexdigest()[:6]
    return secrets.token_hex(3)


def register() -> None:
    """Register the schema and the resolvers the YAML files use (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    OmegaConf.register_new_resolver("dcutmix.run_name", run_name, replace=True)
    # One token per process and sweep: cached, and copied by Hydra into every job's config.
    OmegaConf.register_new_resolver("dcutmix.token", _token, use_cache=True, replace=True)


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; anything else must name an available device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(
            "trainer.device", f"{requested!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "trainer.device",
                "cuda was requested but CUDA is not available here; use auto or cpu",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                "trainer.device",
                f"{requested} does not exist; this machine has {torch.cuda.device_count()} GPU(s)",
            )
    elif device.type not in ("cpu", "mps"):
        raise InputError(
            "trainer.device", f"{requested!r} is not supported; use auto, cpu, cuda or cuda:N"
        )
    return device


def resolve_milestones(milestones: list[float], epochs: int) -> list[int]:
    """Milestones as epochs: fractions of the run (0 < m < 1) or absolute epochs (whole numbers)."""
    resolved = []
    for m in milestones:
        if 0 < m < 1:
            resolved.append(max(1, round(m * epochs)))
        elif m >= 1 and float(m).is_integer():
            resolved.append(int(m))
        else:
            raise InputError(
                "scheduler.milestones",
                f"{m} is neither a fraction in (0, 1) nor a whole epoch >= 1",
            )
    for epoch in resolved:
        if epoch > epochs:
            raise InputError(
                "scheduler.milestones",
                f"epoch {epoch} is after the run's last epoch ({epochs}); "
                "use fractions such as 0.75 or epochs <= trainer.epochs",
            )
    return sorted(resolved)


def check_model_and_mixer(cfg: DictConfig, mixer: object) -> None:
    """The model group's knobs (without building it), and the mixer's layers against the model."""
    from dcutmix.models import check_model_config

    check_model_config(OmegaConf.to_container(cfg.model, resolve=True))
    check_mixer_fits_model(mixer, cfg.model.name)


def check_mixer_fits_model(mixer: object, model_name: str) -> None:
    """A hidden-state mixer's layers must be layers of the model; InputError naming mixing.layers."""
    from dcutmix.models import MODEL_NAMES, hidden_layers

    layers = getattr(mixer, "layers", None)
    if layers is None or model_name not in MODEL_NAMES:
        return  # model.name itself is checked when the model is built
    valid = hidden_layers(model_name)
    for layer in layers:
        if layer not in valid:
            raise InputError(
                "mixing.layers",
                f"{model_name} has no hidden layer {layer}; "
                f"valid: {', '.join(map(str, valid))} (0 = the input)",
            )


def validate(cfg: DictConfig) -> Mixer:
    """Check what the schema's types cannot, one check per config group; raise InputError naming
    the first bad key. Returns the run's mixer, built once here (its classes are set when the
    data is known), so the mixer that was checked is the one that trains and is recorded."""
    _validate_trainer(cfg.trainer)
    mixer = _validate_mixing(cfg)
    _validate_optimizer(cfg.optimizer)
    _validate_scheduler(cfg.scheduler, cfg.trainer.epochs)
    _validate_dataset(cfg.dataset, mixer)
    _validate_logger(cfg.logger)
    _validate_run(cfg)
    return mixer


def _validate_trainer(t: DictConfig) -> None:
    if t.epochs < 1:
        raise InputError("trainer.epochs", f"must be >= 1, got {t.epochs}")
    if t.batch_size < 1:
        raise InputError("trainer.batch_size", f"must be >= 1, got {t.batch_size}")
    for key in ("eval_batch_size", "limit_train_batches", "limit_val_batches"):
        value = t[key]
        if value is not None and value < 1:
            raise InputError(f"trainer.{key}", f"must be >= 1 or null, got {value}")
    for key in ("eval_every", "log_every"):
        if t[key] < 1:
            raise InputError(f"trainer.{key}", f"must be >= 1, got {t[key]}")
    if t.num_workers < 0:
        raise InputError("trainer.num_workers", f"must be >= 0, got {t.num_workers}")
    if t.amp not in AMP_MODES:
        raise InputError("trainer.amp", f"{t.amp!r} is not one of {', '.join(AMP_MODES)}")
    if t.on_nonfinite not in NONFINITE_POLICIES:
        raise InputError(
            "trainer.on_nonfinite",
            f"{t.on_nonfinite!r} is not one of {', '.join(NONFINITE_POLICIES)}",
        )
    if not 0.0 <= t.label_smoothing < 1.0:
        raise InputError("trainer.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    device = resolve_device(t.device)
    if t.amp == "fp16" and device.type != "cuda":
        raise InputError("trainer.amp", "fp16 needs a CUDA device; use auto, off or bf16")


def build_checked_mixer(mixing: DictConfig) -> Mixer:
    """The ``mixing`` group's mixer, without classes yet; InputError naming ``mixing.<key>``."""
    if mixing.mode not in MIXING_MODES:
        raise InputError("mixing.mode", f"{mixing.mode!r} is not one of {', '.join(MIXING_MODES)}")
    try:
        return build_mixer(mixing.mode, **mixer_settings(mixing))
    except InputError as error:
        raise InputError(f"mixing.{error.key}", error.message) from None


def _validate_mixing(cfg: DictConfig) -> Mixer:
    mixer = build_checked_mixer(cfg.mixing)
    check_model_and_mixer(cfg, mixer)
    return mixer


def _validate_optimizer(o: DictConfig) -> None:
    if o.name not in OPTIMIZERS:
        raise InputError("optimizer.name", f"{o.name!r} is not one of {', '.join(OPTIMIZERS)}")
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise InputError("optimizer.lr", f"must be a finite number > 0, got {o.lr}")
    if o.weight_decay < 0:
        raise InputError("optimizer.weight_decay", f"must be >= 0, got {o.weight_decay}")
    if not 0 <= o.momentum < 1:
        raise InputError("optimizer.momentum", f"must be in [0, 1), got {o.momentum}")


def _validate_scheduler(s: DictConfig, epochs: int) -> None:
    if s.name not in SCHEDULERS:
        raise InputError("scheduler.name", f"{s.name!r} is not one of {', '.join(SCHEDULERS)}")
    if s.name == "multistep":
        resolve_milestones(list(s.milestones), epochs)
    if not 0 <= s.warmup_epochs < epochs:
        raise InputError(
            "scheduler.warmup_epochs",
            f"must be in [0, trainer.epochs={epochs}), got {s.warmup_epochs}",
        )
    if not 0 < s.gamma <= 1:
        raise InputError("scheduler.gamma", f"must be in (0, 1], got {s.gamma}")


def _validate_dataset(dataset: DictConfig, mixer: Mixer) -> None:
    from dcutmix.data import parse_dataset

    settings = parse_dataset(OmegaConf.to_container(dataset, resolve=True))
    _check_fits(mixer, settings.image_size)


def _validate_logger(logger: DictConfig) -> None:
    if logger.name not in ("wandb", "none"):
        raise InputError("logger.name", f"{logger.name!r} is not one of wandb, none")


def _validate_run(cfg: DictConfig) -> None:
    """The top-level keys: the objective a search minimises, evaluation-only runs and ckpt."""
    if cfg.objective not in OBJECTIVES:
        raise InputError("objective", f"{cfg.objective!r} is not one of {', '.join(OBJECTIVES)}")
    if cfg.eval_only and not cfg.ckpt:
        raise InputError("ckpt", "eval_only=true needs ckpt=PATH to a checkpoint file")
    if cfg.ckpt:
        path = Path(cfg.ckpt).expanduser()
        if not path.is_file():
            raise InputError("ckpt", f"{path} is not a file; give the path of a .pt checkpoint")
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            raise InputError("ckpt", f"{path} cannot be read ({error.strerror})") from None


def _check_fits(mixer: Any, image_size: tuple[int, int]) -> None:
    """A cutout square must fit in the dataset's images (known before any data is read)."""
    length = getattr(mixer, "length", None)
    if length is not None and length > min(image_size):
        height, width = image_size
        raise InputError(
            "mixing.length",
            f"{length} is larger than the dataset's {height}x{width} images; "
            f"use at most {min(image_size)}",
        )


def explain_composition_error(error: BaseException) -> str:
    """One line for a Hydra composition error: the key or option, and what would be valid."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    text = str(error)
    if isinstance(error, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.MULTILINE)
        if missing:
            group, option = missing.groups()
            valid = f"; choose one of {', '.join(options)}" if options else ""
            return f"{group}={option}: no such {group} option{valid}"
    if isinstance(error, OverrideParseException):
        return f"command line: cannot parse an override ({text.splitlines()[0]})"
    cause = error.__cause__ if isinstance(error, ConfigCompositionException) else error
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and key:
        parent = key.rpartition(".")[0]
        valid = _keys_of(parent)
        hint = (
            f"; valid keys under {parent or 'the top level'}: {', '.join(valid)}" if valid else ""
        )
        return f"{key}: unknown key{hint} (add a new key with +{key}=VALUE)"
    if isinstance(cause, ValidationError) and key:
        return f"{key}: {str(cause).splitlines()[0]}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _keys_of(parent: str) -> list[str]:
    node: Any = OmegaConf.structured(TrainConfig)
    for part in [p for p in parent.split(".") if p]:
        node = node.get(part) if isinstance(node, DictConfig) else None
        if not isinstance(node, DictConfig):
            return []
    return [str(k) for k in node] if isinstance(node, DictConfig) and not node._is_missing() else []
