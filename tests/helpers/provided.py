"""One rule for what CI provides: skip here, fail under CI.

CI (``.ci/run``) installs the tools and files some tests need: a Slurm cluster, a C compiler, the
Fashion-MNIST files. On a person's machine a test whose tool is missing is skipped with the
reason; under ``CI=true`` the same absence fails the test with that reason, so the suite cannot
pass by skipping what CI was meant to provide. Use it as::

    from tests.helpers.provided import require

    require("a C compiler", None if shutil.which("cc") else "no cc on PATH; apt-get install gcc")

Skips of their own (the GPU tests' ``needs CUDA``) stay ordinary skips: CI has no GPU, and
``tests/conftest.py`` fails a CI run that skipped for any other reason (see ``ALLOWED_IN_CI``).
"""

from __future__ import annotations

import os

import pytest

# The only skip reason a CI run may report: CI machines have no GPU.
NEEDS_CUDA = "needs CUDA"
ALLOWED_IN_CI = (NEEDS_CUDA,)


def under_ci() -> bool:
    """Whether this is a CI run (``CI=true``, as CI services and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require(what: str, missing_reason: str | None) -> None:
    """Go on when ``missing_reason`` is None; else skip the calling test, or fail it under CI.

    ``what`` names the thing the test needs ("Slurm", "a C compiler"); ``missing_reason`` says why
    it is not usable here, and how to get it. Both appear in the skip or failure message.
    """
    if missing_reason is None:
        return
    message = f"needs {what}: {missing_reason}"
    if under_ci():
        pytest.fail(f"{message} (CI=true: CI provides it, so its absence is a failure)", False)
    pytest.skip(message)


def skip_allowed_in_ci(reason: str) -> bool:
    """Whether a skip with this reason may appear in a CI run (only the GPU tests' reason)."""
    return reason in ALLOWED_IN_CI
