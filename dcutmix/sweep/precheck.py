"""The command line's sweep checked before anything runs: every point composes and validates,
and its dataset's files are there and sound where that check is cheap.

``dcutmix-train`` calls ``precheck`` first, so a bad value anywhere in a sweep ends the command
with one line and exit code 2 before any job is launched or any folder written.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dcutmix.config import CONF_DIR, explain_composition_error, register, validate
from dcutmix.errors import InputError


def _unwritable(path: Path, key: str) -> str | None:
    """Why ``path`` cannot be created or written, or None: checked on its nearest existing ancestor."""
    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{key}: cannot create {path}: {probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{key}: cannot write to {path}: {probe} is on a read-only file system"
        return f"{key}: cannot write to {path}: no write permission on {probe}"
    return None


def _check_data_files(cfg: DictConfig, checked: set[str]) -> None:
    """The dataset's files, where a check is cheap (dcutmix.data.check_data_files), once each."""
    from dcutmix.data import check_data_files, parse_dataset

    settings = parse_dataset(OmegaConf.to_container(cfg.dataset, resolve=True))
    key = repr((settings.name, settings.root, settings.download))
    if key not in checked:
        checked.add(key)
        check_data_files(settings)


def precheck(overrides: list[str]) -> str | None:
    """Compose and validate every point of the command line's sweep before anything runs.

    Returns the first problem as one line, or None. Each swept key is tried value by value (the
    other keys at their first value; an interval at both ends), which catches a bad value anywhere
    in a sweep at the cost of one composition per value rather than per job. Each point's dataset
    files are checked too where that is cheap (the MNIST format's: found, headers, lengths,
    labels), so a missing or damaged file stops the command before any folder is written.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dcutmix.sweep.points import check_points, check_sweeper, read_sweep

    register()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:
        return explain_composition_error(error)
    for o in parsed:
        key = o.input_line.split("=", 1)[0]
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not o.is_sweep_override():
            problem = _unwritable(Path(str(o.value())), key)
            if problem:
                return problem
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            sweep = read_sweep(overrides)
            check_sweeper(sweep)
            checked: set[str] = set()
            for point in check_points(sweep):
                cfg = compose("train", overrides=point)
                validate(cfg)
                _check_data_files(cfg, checked)
    except InputError as error:
        return str(error)
    except Exception as error:
        return explain_composition_error(error)
    finally:
        GlobalHydra.instance().clear()
    return None
