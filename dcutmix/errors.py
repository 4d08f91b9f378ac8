"""The one error type that user-facing entrypoints turn into a single clear line."""


class ConfigError(ValueError):
    """A bad setting or input; the message names the key and what would be valid."""
