"""The suite's own guards: a crashed worker or a hung test fails `make test` by name, at once."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap

import tomllib

from dcutmix.config import REPO_ROOT

CRASHING = """
    import os, signal, time

    import pytest

    @pytest.mark.xdist_group("one")
    def test_before():
        assert True

    @pytest.mark.xdist_group("one")
    def test_that_kills_its_worker():
        os.kill(os.getpid(), signal.SIGKILL)

    def test_that_hangs():
        time.sleep(3600)
"""


def _make_test_pytest_args() -> list[str]:
    """The arguments `make test` gives pytest (after ``-m pytest``), read from make itself."""
    printed = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/.installed", "test", "PYTEST_WORKERS=2"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (line,) = [row for row in printed.splitlines() if "-m pytest" in row]
    return shlex.split(line.split("-m pytest", 1)[1])


def test_make_test_stops_at_a_crashed_worker_and_a_hung_test_naming_each(tmp_path):
    (tmp_path / "test_guarded.py").write_text(textwrap.dedent(CRASHING))
    args = [*_make_test_pytest_args(), "--timeout", "5", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(tmp_path / "test_guarded.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:]
    assert "crashed while running 'test_guarded.py::test_that_kills_its_worker'" in done.stdout
    assert "test_that_hangs - Failed: Timeout" in done.stdout


def test_every_test_has_a_time_limit():
    options = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert 60 <= int(options["ini_options"]["timeout"]) <= 900
