"""Argument checks shared by the model constructors; each failure names the config key."""

from __future__ import annotations

from dcutmix.errors import ConfigError


def positive_int(value: object, key: str) -> int:
    """Return ``value`` if it is an integer >= 1, else raise ConfigError naming ``key``."""
    # bool is an int subclass; `true` in a YAML file is never meant as a width or depth
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: {value!r} is not valid; use a positive integer")
    return value
