"""The pruners a search may use, their settings checked, and what they cost in epochs.

``hydra.sweeper.pruner`` names one (``name``) and sets any of its main settings; a setting left
null takes Optuna's default. ``pruner_spec`` turns that node into the plain spec the sweeper
stores in the study (``dcutmix.store.journal.PRUNER_ATTR``), from which every job builds the same
pruner. ``epoch_budget`` gives ``dcutmix-sweep plan`` its worst case and, for successive halving
and hyperband, the epochs to expect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dcutmix.errors import InputError
from dcutmix.store.journal import pruner_from_spec

KEY = "hydra.sweeper.pruner"

#: name -> (Optuna's class, the settings it takes)
PRUNERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "none": ("NopPruner", ()),
    "median": ("MedianPruner", ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")),
    "successive_halving": (
        "SuccessiveHalvingPruner",
        ("min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"),
    ),
    "hyperband": (
        "HyperbandPruner", ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
    ),
    # Known thresholds: a trial whose objective is above `upper` (or below `lower`) is pruned.
    "threshold": ("ThresholdPruner", ("lower", "upper", "n_warmup_steps", "interval_steps")),
}  # fmt: skip


def pruner_spec(node: Mapping[str, Any] | None) -> dict | None:
    """The checked spec of the sweeper's ``pruner`` node; None when it prunes nothing.

    An unknown name, a setting the named pruner does not take, or a value Optuna refuses raises
    InputError naming the key.
    """
    settings = {k: v for k, v in dict(node or {}).items() if v is not None}
    name = str(settings.pop("name", "none"))
    if name not in PRUNERS:
        raise InputError(f"{KEY}.name", f"{name!r} is not one of {', '.join(PRUNERS)}")
    cls, takes = PRUNERS[name]
    for key in settings:
        if key not in takes:
            takes_text = ", ".join(takes) or "no settings"
            raise InputError(f"{KEY}.{key}", f"the {name} pruner takes {takes_text}")
    for key, value in settings.items():
        _check_setting(name, key, value)
    if name == "none":
        return None
    spec = {"name": name, "class": cls, "kwargs": settings}
    try:
        pruner_from_spec(spec)
    except (ValueError, TypeError) as error:
        raise InputError(f"{KEY}", f"{name}: {error}") from None
    return spec


#: the least value of each whole-number setting ("auto" is allowed where Optuna takes it)
_LEAST = {
    "n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1, "n_min_trials": 1,
    "min_resource": 1, "max_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0,
    "bootstrap_count": 0,
}  # fmt: skip


def _check_setting(name: str, key: str, value: Any) -> None:
    if key in ("lower", "upper"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{KEY}.{key}", f"must be a number, got {value!r}")
        return
    if value == "auto" and key in ("min_resource", "max_resource"):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < _LEAST[key]:
        raise InputError(
            f"{KEY}.{key}",
            f"the {name} pruner needs a whole number >= {_LEAST[key]}"
            + (" or auto" if key.endswith("_resource") else "")
            + f", got {value!r}",
        )


@dataclass(frozen=True)
class Budget:
    """A search's epochs: ``worst`` when no trial is pruned, ``expected`` (or None) and where."""

    worst: int
    expected: float | None
    rungs: tuple[int, ...] = ()


def _int_or(value: Any, default: int) -> int:
    return default if value in (None, "auto") else int(value)


def _halving_epochs(epochs: int, first: int, factor: int, rate: int) -> tuple[float, list[int]]:
    """Expected epochs of one trial under successive halving when many trials compete.

    Rungs sit at ``first * factor**(rate + k)`` epochs; a trial goes on past a rung when it is in
    the best ``1/factor`` there, so ``factor**-k`` of the trials reach rung ``k``'s next segment.
    """
    rungs = []
    while (rung := first * factor ** (rate + len(rungs))) < epochs:
        rungs.append(rung)
    if not rungs:
        return float(epochs), []
    expected, done = float(rungs[0]), rungs[0]
    for k, rung in enumerate([*rungs[1:], epochs], start=1):
        expected += (rung - done) / factor**k
        done = rung
    return expected, rungs


def epoch_budget(spec: dict | None, trials: int, epochs: int) -> Budget:
    """The worst case and, for successive halving and hyperband, the expected epochs in all."""
    worst = trials * epochs
    name = (spec or {}).get("name")
    kwargs = (spec or {}).get("kwargs", {})
    if name == "successive_halving":
        # Optuna's "auto" takes a hundredth of the first completed trial's epochs, at least 1.
        first = _int_or(kwargs.get("min_resource"), max(epochs // 100, 1))
        per_trial, rungs = _halving_epochs(
            epochs, first, _int_or(kwargs.get("reduction_factor"), 4),
            _int_or(kwargs.get("min_early_stopping_rate"), 0),
        )  # fmt: skip
        return Budget(worst, trials * per_trial, tuple(rungs))
    if name == "hyperband":
        first = _int_or(kwargs.get("min_resource"), 1)
        last = min(_int_or(kwargs.get("max_resource"), epochs), epochs)
        factor = _int_or(kwargs.get("reduction_factor"), 3)
        brackets = math.floor(math.log(max(last / first, 1), factor)) + 1
        # Optuna shares trials out to its brackets in proportion to these budgets.
        shares = [
            math.ceil(brackets * factor ** (brackets - 1 - b) / (brackets - b))
            for b in range(brackets)
        ]
        per_trial = sum(
            share * _halving_epochs(epochs, first, factor, b)[0] for b, share in enumerate(shares)
        ) / sum(shares)
        return Budget(
            worst, trials * per_trial, tuple(_halving_epochs(epochs, first, factor, 0)[1])
        )
    return Budget(worst, None)
