"""The one error type for bad input that user-facing entrypoints turn into a single clear line."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a setting, a file, a command-line argument); exit code 2 at the entrypoints.

    ``key`` names what was wrong (``mixing.k``, ``ckpt``, ``PATH``, ``--sigmas``) and ``message``
    says why and what would be valid; ``str(error)`` is the line users see: ``key: message``.
    """

    def __init__(self, key: str, message: str | None = None) -> None:
        if message is None:
            # The one-string form "key: message", still used by code that predates the key.
            key, _, message = key.partition(": ")
        super().__init__(f"{key}: {message}" if message else key)
        self.key = key
        self.message = message

    def __reduce__(self):
        # Exceptions pickle their args; ours are (key, message), not the joined line.
        return (type(self), (self.key, self.message))


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (just ``Type`` without one), for logs and results."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


# The earlier name, kept so that existing imports and ``except ConfigError`` keep working.
ConfigError = InputError
