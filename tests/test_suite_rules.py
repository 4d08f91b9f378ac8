"""Rules for the suite itself: what CI provides is never skipped under CI, every test asserts."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dcutmix.config import REPO_ROOT
from tests.helpers.provided import NEEDS_CUDA, require

TESTS = REPO_ROOT / "tests"


# --- require(): skip here, fail under CI ----------------------------------------------------------


def test_require_goes_on_when_nothing_is_missing(monkeypatch):
    for ci in ("true", ""):
        monkeypatch.setenv("CI", ci)
        assert require("a widget", None) is None


def test_require_skips_with_the_reason_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^needs a widget: no widget on PATH$"):
        require("a widget", "no widget on PATH")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require("a widget", "no widget on PATH")


@pytest.mark.parametrize("ci", ["true", "TRUE", " true"])
def test_require_fails_with_the_reason_under_ci(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(
        pytest.fail.Exception, match=r"^needs a widget: no widget on PATH \(CI=true"
    ):
        require("a widget", "no widget on PATH")


# --- the skip summary and its CI check (tests/helpers/skips.py) ----------------------------------

SKIPPING_TESTS = """
import pytest

def test_passes():
    assert True

@pytest.mark.skipif(True, reason="needs CUDA")
def test_on_a_gpu():
    assert False

@pytest.mark.parametrize("n", [1, 2])
def test_with_a_missing_tool(n):
    pytest.skip("no frobnicator here")
"""

ONLY_CUDA_SKIPS = """
import pytest

def test_passes():
    assert True

@pytest.mark.skipif(True, reason="needs CUDA")
def test_on_a_gpu():
    assert False
"""

MODULE_SKIP = """
import pytest

pytest.skip("no gadget", allow_module_level=True)

def test_never_collected():
    assert False
"""


def _pytest(tmp_path: Path, source: str, ci: str | None, *args: str):
    """Run pytest with the skip plugin on ``tmp_path``, where test_sample.py holds ``source``."""
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.helpers.skips", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, *args, str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _summary(stdout: str) -> list[str]:
    """The title and the count lines of the 'N skipped, by reason' section."""
    lines = stdout.splitlines()
    (start,) = [i for i, line in enumerate(lines) if "skipped, by reason" in line]
    section = []
    for line in lines[start + 1 :]:
        if not re.match(r"\s*\d+  ", line):
            break
        section.append(line.strip())
    return [lines[start].strip("= "), *section]


@pytest.mark.parametrize("workers", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_summary_counts_skips_by_reason_and_passes_outside_ci(tmp_path, workers):
    done = _pytest(tmp_path, SKIPPING_TESTS, None, *workers)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _summary(done.stdout) == [
        "3 skipped, by reason",
        "2  no frobnicator here",
        "1  needs CUDA",
    ]
    assert "CI=true" not in done.stdout


@pytest.mark.parametrize("workers", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_under_ci_a_skip_for_another_reason_than_cuda_fails_the_run(tmp_path, workers):
    done = _pytest(tmp_path, SKIPPING_TESTS, "true", *workers)
    assert done.returncode == 1, done.stdout + done.stderr
    refusals = [line for line in done.stdout.splitlines() if line.startswith("CI=true:")]
    assert refusals == [
        "CI=true: skipped for 'no frobnicator here', but CI may skip only for 'needs CUDA': failing"
    ], done.stdout
    # Nothing failed but the skips: the counts still say what happened.
    assert "1 passed, 3 skipped" in done.stdout


def test_under_ci_skips_for_cuda_alone_pass(tmp_path):
    done = _pytest(tmp_path, ONLY_CUDA_SKIPS, "true", "-p", "no:xdist")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _summary(done.stdout) == ["1 skipped, by reason", "1  needs CUDA"]


def test_under_ci_a_skipped_module_fails_the_run(tmp_path):
    (tmp_path / "test_other.py").write_text("def test_passes():\n    assert True\n")
    done = _pytest(tmp_path, MODULE_SKIP, "true", "-p", "no:xdist")
    assert done.returncode == 1, done.stdout + done.stderr
    assert _summary(done.stdout) == ["1 skipped, by reason", "1  no gadget"]


def test_a_run_without_skips_prints_no_summary(tmp_path):
    done = _pytest(tmp_path, "def test_passes():\n    assert True\n", "true", "-p", "no:xdist")
    assert done.returncode == 0 and "skipped, by reason" not in done.stdout, done.stdout


# --- static rules over the test files -------------------------------------------------------------


def _test_files() -> list[Path]:
    return sorted(TESTS.glob("test_*.py"))


def _python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


# Calls that check by themselves: pytest.raises/fail/warns and any assert_* (torch.testing's,
# numpy.testing's, a mock's).
CHECKING_CALLS = {"raises", "fail", "warns", "deprecated_call"}


def _checks_directly(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            name = _called_name(node) or ""
            if name in CHECKING_CALLS or name.startswith("assert"):
                return True
    return False


def _checking_helpers() -> set[str]:
    """Names of the functions under tests/ that assert, directly or through another such helper."""
    calls: dict[str, set[str]] = {}
    checking: set[str] = set()
    for path in _python_files():
        for function in _functions(path):
            called = {_called_name(n) for n in ast.walk(function) if isinstance(n, ast.Call)}
            calls.setdefault(function.name, set()).update(called - {None})
            if _checks_directly(function):
                checking.add(function.name)
    grown = True
    while grown:
        more = {name for name, called in calls.items() if called & checking} - checking
        checking |= more
        grown = bool(more)
    return checking


def test_every_test_function_asserts_something():
    checking = _checking_helpers()
    silent = [
        f"{path.name}::{function.name}"
        for path in _test_files()
        for function in _functions(path)
        if function.name.startswith("test_") and function.name not in checking
    ]
    assert silent == [], "tests without an assert, pytest.raises or a helper that asserts"


def test_the_assertion_rule_catches_a_test_that_only_calls():
    # The rule above is only worth its name if it can fail.
    tree = ast.parse("def test_calls_only():\n    compute(1)\n")
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert not _checks_directly(function)
    asserting = ast.parse("def test_x():\n    with pytest.raises(E):\n        f()\n").body[0]
    assert _checks_directly(asserting)


def _skip_reason(call: ast.Call) -> ast.expr | None:
    """The reason argument of a pytest.skip/skipif/importorskip/xfail call, else None."""
    name = _called_name(call)
    keywords = {k.arg: k.value for k in call.keywords}
    if name == "skip":
        return keywords.get("reason", call.args[0] if call.args else None)
    if name in ("skipif", "xfail"):
        return keywords.get("reason", call.args[1] if len(call.args) > 1 else None)
    return None


def _is_needs_cuda(reason: ast.expr | None) -> bool:
    if isinstance(reason, ast.Constant):
        return reason.value == NEEDS_CUDA
    return isinstance(reason, ast.Name) and reason.id == "NEEDS_CUDA"


def test_tests_skip_only_for_cuda_or_through_require():
    """Any other skip goes through tests/helpers/provided.require, which fails it under CI."""
    stray = []
    for path in _python_files():
        if path == TESTS / "helpers" / "provided.py" or path == Path(__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            if name == "importorskip" or (
                name in ("skip", "skipif", "xfail")
                and isinstance(node.func, ast.Attribute)
                and not _is_needs_cuda(_skip_reason(node))
            ):
                stray.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert stray == []


# --- the Slurm probe: one slow answer decides nothing ---------------------------------------------


def _fake_sinfo(folder: Path, answers: list[str]) -> None:
    """A ``sinfo`` on PATH that gives ``answers`` in turn (shell lines), the last one from then on."""
    folder.mkdir()
    (folder / "count").write_text("0")
    cases = "\n".join(f"  {i}) {answer} ;;" for i, answer in enumerate(answers[:-1]))
    script = folder / "sinfo"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{folder}/count"); echo $((n + 1)) > "{folder}/count"\n'
        f'case "$n" in\n{cases}\n  *) {answers[-1]} ;;\nesac\n'
    )
    script.chmod(0o755)


@pytest.fixture
def probe(monkeypatch, tmp_path):
    import conftest_slurm

    monkeypatch.setattr(conftest_slurm, "PROBE_PAUSE_S", 0)
    monkeypatch.setattr(conftest_slurm, "PROBE_TIMEOUT_S", 1)

    def run(answers: list[str]) -> tuple[str | None, int]:
        _fake_sinfo(tmp_path / "bin", answers)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
        reason = conftest_slurm.slurm_unavailable.__wrapped__()
        return reason, int((tmp_path / "bin" / "count").read_text())

    return run


def test_the_slurm_probe_retries_a_slow_answer(probe):
    assert probe(["exec sleep 5", "echo 'debug* idle'"]) == (None, 2)


def test_the_slurm_probe_gives_up_after_its_tries_with_the_last_reason(probe):
    reason, tries = probe(
        ["exec sleep 5", "echo 'slurm_load_partitions: Unable to contact' >&2; exit 1"]
    )
    assert tries == 3
    assert reason.startswith(
        "the Slurm cluster is down (sinfo: slurm_load_partitions: Unable to contact) (3 tries"
    ), reason


def test_the_slurm_probe_wants_a_node_up(probe):
    reason, tries = probe(["echo 'debug* down*'"])
    assert tries == 3 and reason.startswith("no Slurm node is up (node states: down)"), reason
