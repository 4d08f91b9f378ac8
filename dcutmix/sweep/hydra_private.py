"""The one place that touches Hydra's private API (``hydra._internal``), so that an upgrade of
hydra-core (pinned to 1.3 in pyproject.toml) is checked and mended in this file alone.

Each function wraps one private name and says what the project needs of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra.core.config_loader import ConfigLoader
from omegaconf import DictConfig

#: the sweeper Hydra uses when none is chosen (its ``_target_`` in a composed config)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def apply_overrides(overrides: list[Any], cfg: DictConfig) -> None:
    """Apply parsed value overrides to a composed config in place, exactly as Hydra composes them."""
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def overrides_dirname(
    overrides: list[Any], exclude_keys: list[str], item_sep: str, kv_sep: str
) -> str:
    """Hydra's ``hydra.job.override_dirname`` of parsed overrides (what job names are made of)."""
    return get_overrides_dirname(
        overrides=overrides, exclude_keys=exclude_keys, item_sep=item_sep, kv_sep=kv_sep
    )


def config_loader(search_path: Iterable[tuple[str, str]]) -> ConfigLoader:
    """A config loader over (provider, path) search path entries, in order."""
    path = ConfigSearchPathImpl()
    for provider, entry in search_path:
        path.append(provider, entry)
    return ConfigLoaderImpl(config_search_path=path)
