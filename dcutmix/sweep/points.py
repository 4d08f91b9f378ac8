"""A multirun command line read as Hydra's sweepers read it: every key, its values, its jobs.

It understands every sweep syntax Hydra has: ``a,b``, ``choice()``, ``range()``, ``glob()``,
``interval()``, ``tag()`` and the ``sort``/``shuffle`` functions. Enumerable sweeps give their
values; an interval, which only a searching sweeper (Optuna) can use, gives its two ends to check.
Must be used inside ``hydra.initialize_config_dir`` on ``CONF_DIR``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from dcutmix.config import CONF_DIR
from dcutmix.errors import ConfigError
from dcutmix.sweep.hydra_private import BASIC_SWEEPER, apply_overrides
from dcutmix.sweep.search import check_search, search_lines

#: the project's searching sweeper (hydra/sweeper=dcutmix_optuna, dcutmix.sweep.search)
SEARCH_SWEEPER = "hydra_plugins.dcutmix_sweeper.OptunaSweeper"
_PRUNER_LINES = ("hydra.sweeper.pruner", "+hydra.sweeper.pruner", "++hydra.sweeper.pruner")


@dataclass
class Sweep:
    """What a multirun command line asks for, with the sweeper's own params merged in."""

    keys: dict[str, Override]  # in the order the basic sweeper takes them; the command line wins
    hydra: list[str]  # the hydra.* and hydra/* overrides, as given
    sweeper: DictConfig  # the composed hydra.sweeper node
    base: DictConfig = field(repr=False)  # the first point, with its hydra node

    @property
    def searched(self) -> list[Override]:
        """The interval sweeps: ranges a searching sweeper draws from rather than enumerates."""
        return [o for o in self.keys.values() if isinstance(o.value(), IntervalSweep)]

    @property
    def is_basic(self) -> bool:
        return self.sweeper.get("_target_") == BASIC_SWEEPER

    @property
    def is_search(self) -> bool:
        return self.sweeper.get("_target_") == SEARCH_SWEEPER

    @property
    def fixed(self) -> list[str]:
        return [o.input_line for o in self.keys.values() if not o.is_sweep_override()]


def _parser() -> OverridesParser:
    return OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())


def _element(value: Any) -> str:
    return str(value)


def values_to_check(override: Override) -> list[str]:
    """The values of one key worth composing: all of a discrete sweep, an interval's two ends."""
    key = override.get_key_element()
    value = override.value()
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if start is None or end is None or not start < end:
            raise ConfigError(
                f"{override.input_line}: an interval needs a start below its end, got {start} and {end}"
            )
        if "log" in value.tags and start <= 0:
            raise ConfigError(
                f"{override.input_line}: a log-scale interval needs a start > 0, got {start}"
            )
        return [_element(start), _element(end)]
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    values = list(override.sweep_string_iterator())
    if not values:
        what = (
            f"matches no option of the config group {override.key_or_group}"
            if isinstance(value, Glob)
            else "selects no value"
        )
        raise ConfigError(f"{key}: {override.input_line.split('=', 1)[1]} {what}")
    return values


def read_sweep(overrides: list[str]) -> Sweep:
    """Parse a multirun command line and merge in ``hydra.sweeper.params`` (the command line wins)."""
    parser = _parser()
    parsed = parser.parse_overrides(overrides)
    hydra_lines = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o for o in parsed if not o.is_hydra_override()]
    # The sweeper decides what a sweep means, so its choice and settings join the first point.
    sweeper_lines = [
        line for line in hydra_lines if line.startswith(("hydra/sweeper", "hydra.sweeper"))
    ]
    firsts = [f"{o.get_key_element()}={values_to_check(o)[0]}" for o in task]
    pruning = [line for line in sweeper_lines if line.startswith(_PRUNER_LINES)]
    if pruning:
        # Only the searching sweeper has a pruner: say so rather than fail at composition.
        others = [line for line in sweeper_lines if line not in pruning]
        chosen = compose("train", overrides=firsts + others, return_hydra_config=True)
        if chosen.hydra.sweeper.get("_target_") != SEARCH_SWEEPER:
            raise ConfigError(
                f"{pruning[0]}: the {str(chosen.hydra.sweeper.get('_target_')).rsplit('.', 1)[-1]} "
                "does not search, so it has nothing to prune; choose hydra/sweeper=dcutmix_optuna "
                "(with hydra/sweeper/sampler=grid for a grid) or +sweep=alpha_search"
            )
    base = compose("train", overrides=firsts + sweeper_lines, return_hydra_config=True)
    sweeper = base.hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    keys: dict[str, Override] = {}
    for o in [*parser.parse_overrides(params), *task]:
        keys.pop(o.get_key_element(), None)
        keys[o.get_key_element()] = o
    return Sweep(keys=keys, hydra=hydra_lines, sweeper=sweeper, base=base)


def check_sweeper(sweep: Sweep) -> None:
    """Refuse a sweep its sweeper cannot run: an interval for the basic sweeper, a maximised error."""
    searched = sweep.searched
    if searched and sweep.is_basic:
        raise ConfigError(
            f"{searched[0].input_line}: an interval is searched, not enumerated; choose a searching "
            "sweeper (hydra/sweeper=dcutmix_optuna, or +sweep=alpha_search) or give values as a,b "
            "or range()"
        )
    direction = sweep.sweeper.get("direction")
    directions = list(direction) if isinstance(direction, ListConfig | list) else [direction]
    if any(str(d).lower() == "maximize" for d in directions):
        raise ConfigError(
            "hydra.sweeper.direction: every objective (top1_err_last, top1_err_best, "
            "val_loss_last) is an error or a loss, so the search must minimize"
        )
    if sweep.is_search:
        task = [o.input_line for o in sweep.keys.values() if o.input_line not in _params(sweep)]
        check_search(
            sweep.sweeper, search_lines(sweep.sweeper.get("params"), task), target_folder(sweep)
        )


def _params(sweep: Sweep) -> set[str]:
    return {f"{k}={v}" for k, v in (sweep.sweeper.get("params") or {}).items()}


def target_folder(sweep: Sweep) -> Path | None:
    """The sweep folder named on the command line (``hydra.sweep.dir=...``), when there is one."""
    for line in sweep.hydra:
        key, _, value = line.partition("=")
        if key == "hydra.sweep.dir" and "${" not in value:
            return Path(value).expanduser()
    return None


def check_points(sweep: Sweep) -> Iterator[list[str]]:
    """Points covering every value of every key: the first point, then one key changed at a time."""
    values = {key: values_to_check(o) for key, o in sweep.keys.items()}
    yield [f"{k}={v[0]}" for k, v in values.items()]
    for key, options in values.items():
        for value in options[1:]:
            yield [f"{k}={value if k == key else v[0]}" for k, v in values.items()]


def grid_jobs(sweep: Sweep) -> list[list[str]]:
    """Every job the basic sweeper launches, in its order, as override lines."""
    lists = [
        [f"{key}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for key, o in sweep.keys.items()
    ]
    return [list(job) for job in itertools.product(*lists)]


def _is_group(override: Override) -> bool:
    return (CONF_DIR / override.key_or_group).is_dir()


class FastComposer:
    """Composes many points of one sweep: once per choice of config groups, then values applied.

    Hydra composes a config from its defaults list and then applies the value overrides; this
    does the same but keeps the first step's result for every point that picks the same groups.
    """

    def __init__(self) -> None:
        self._parser = _parser()
        self._parsed: dict[str, Override] = {}
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        # Per cached composition: the keys points have changed, with their composed values.
        self._changed: dict[tuple[str, ...], dict[str, Any]] = {}

    def parse(self, line: str) -> Override:
        """One override line, parsed once."""
        if line not in self._parsed:
            self._parsed[line] = self._parser.parse_overrides([line])[0]
        return self._parsed[line]

    @contextlib.contextmanager
    def point(self, lines: list[str]) -> Iterator[DictConfig]:
        """The config ``compose("train", overrides=lines)`` gives, valid inside the block.

        The value overrides are applied to the cached composition; a key an earlier point changed
        and this one does not is put back first. The points of a grid all set the same keys, so
        they cost one application each, a fraction of a composition or even a copy.
        """
        parsed = [self.parse(line) for line in lines]
        groups = tuple(o.input_line for o in parsed if _is_group(o) or o.is_delete())
        values = [o for o in parsed if not (_is_group(o) or o.is_delete())]
        if groups not in self._bases:
            self._bases[groups] = compose("train", overrides=list(groups))
            self._changed[groups] = {}
        cfg, changed = self._bases[groups], self._changed[groups]
        keys = {o.key_or_group for o in values}
        if any(_raw(cfg, key) is _ABSENT for key in keys - changed.keys()):
            # A typed node cannot drop a key once added: such a point gets its own copy.
            cfg = copy.deepcopy(cfg)
            apply_overrides(values, cfg)
            yield cfg
            return
        with open_dict(cfg):
            for key in [k for k in changed if k not in keys]:
                OmegaConf.update(cfg, key, changed.pop(key), merge=False, force_add=True)
        for key in keys - changed.keys():
            changed[key] = _raw(cfg, key)
        apply_overrides(values, cfg)
        yield cfg


_ABSENT = object()


def _raw(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` as written (interpolations unresolved), or ``_ABSENT``."""
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or last not in parent:
        return _ABSENT
    node = parent._get_node(last)
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node._value()
