"""Load weights published by the CutMix/DCutMix authors (DataParallel state dicts) into our models."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from dcutmix.errors import ConfigError

__all__ = ["load_authors_state_dict"]

_SHOWN = 3  # keys quoted per kind of mismatch; the full lists can run to hundreds


def _sample(keys: list[str]) -> str:
    more = f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_authors_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load ``state_dict`` strictly into ``model`` after stripping DataParallel ``module.`` prefixes."""
    weights = {key.removeprefix("module."): value for key, value in state_dict.items()}
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    reshaped = sorted(
        f"{key} {tuple(weights[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected.keys() & weights.keys()
        if weights[key].shape != expected[key].shape
    )
    problems = [
        f"{label}: {_sample(keys)}"
        for label, keys in (
            (f"{len(missing)} missing", missing),
            (f"{len(unexpected)} unexpected", unexpected),
            (f"{len(reshaped)} of another shape (checkpoint vs model)", reshaped),
        )
        if keys
    ]
    if problems:
        raise ConfigError(
            f"state_dict: the weights do not fit this {type(model).__name__} ("
            + "; ".join(problems)
            + "); check model.name, its settings and num_classes against the checkpoint"
        )
    model.load_state_dict(weights, strict=True)
