"""One home per default: values live in conf/*.yaml, the schema declares keys and types only.

Each test fails when a second copy of a default appears or when a copy elsewhere (the mixer
classes) drifts from the YAML.
"""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf

from dcutmix.config import (
    CONF_DIR,
    LoggerConfig,
    MixingConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
    TrainerConfig,
    TrialConfig,
    mixer_settings,
    register,
)
from dcutmix.mixing import MIXING_MODES, build_mixer, mode_settings

GROUPS = {
    "mixing": MixingConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "logger": LoggerConfig,
}
OPTIONS = [
    (group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))
]


def _names(schema: type) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


@pytest.mark.parametrize("schema", [*GROUPS.values(), TrainerConfig, TrialConfig, TrainConfig])
def test_the_schema_holds_no_values(schema):
    valued = [
        f.name
        for f in dataclasses.fields(schema)
        if f.default is not MISSING
        and not (f.default is dataclasses.MISSING and f.default_factory in GROUPS.values())
        and not (
            f.default is dataclasses.MISSING and f.default_factory in (TrainerConfig, TrialConfig)
        )
    ]
    assert valued == []


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_sets_every_key_of_its_group(group, option):
    listed = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    assert set(listed) == _names(GROUPS[group])


def test_train_yaml_sets_every_trainer_and_top_level_key():
    listed = OmegaConf.load(CONF_DIR / "train.yaml")
    assert set(listed.trainer) == _names(TrainerConfig)
    top = _names(TrainConfig) - {"dataset", "model", *GROUPS, "trainer"}
    assert top <= set(listed)


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_without_a_missing_value(group, option):
    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"{group}={option}"])
    finally:
        GlobalHydra.instance().clear()
    # Every value the schema leaves missing ("???") must be filled by the option's files.
    assert _missing_keys(OmegaConf.to_container(cfg, resolve=False)) == []


def _missing_keys(node, prefix: str = "") -> list[str]:
    """The dotted keys of a plain config tree whose value is still OmegaConf's ``???``."""
    if isinstance(node, dict):
        return [m for key, value in node.items() for m in _missing_keys(value, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [m for i, value in enumerate(node) for m in _missing_keys(value, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if node == "???" else []


@pytest.mark.parametrize("mode", MIXING_MODES)
def test_a_mixing_option_builds_the_mixer_its_class_defaults_build(mode):
    listed = OmegaConf.load(CONF_DIR / "mixing" / f"{mode}.yaml")
    from_yaml = build_mixer(listed.mode, num_classes=2, **mixer_settings(listed))
    default = build_mixer(mode, num_classes=2)
    settings = ("k", "alpha", "prob", "per_sample")
    assert [getattr(from_yaml, s) for s in settings] == [getattr(default, s) for s in settings]
    assert mode_settings(from_yaml) == mode_settings(default)
