"""A pytest plugin: at the end of a run, the count of skipped tests by reason; under ``CI=true``
a skip for any reason but ``needs CUDA`` fails the run.

``tests/conftest.py`` loads it, so ``make test`` (the command CI runs) prints the counts and exits
non-zero when CI skipped something it provides. Under pytest-xdist it counts in the controlling
process only, which sees every worker's reports.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.helpers.provided import ALLOWED_IN_CI, skip_allowed_in_ci, under_ci


def skip_reason(report) -> str:
    """The reason a skipped test or collector gave, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ").strip()


class SkipCounter:
    def __init__(self) -> None:
        self.skips: Counter[str] = Counter()
        self.refused: list[str] = []

    def _count(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips[skip_reason(report)] += 1

    def pytest_runtest_logreport(self, report) -> None:
        self._count(report)

    def pytest_collectreport(self, report) -> None:
        self._count(report)

    def pytest_sessionfinish(self, session) -> None:
        if not under_ci():
            return
        self.refused = sorted(r for r in self.skips if not skip_allowed_in_ci(r))
        if self.refused and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.skips:
            return
        terminalreporter.write_sep("=", f"{sum(self.skips.values())} skipped, by reason")
        for reason, count in sorted(self.skips.items(), key=lambda item: (-item[1], item[0])):
            terminalreporter.write_line(f"{count:5d}  {reason}")
        allowed = " or ".join(repr(r) for r in ALLOWED_IN_CI)
        for reason in self.refused:
            terminalreporter.write_line(
                f"CI=true: skipped for {reason!r}, but CI may skip only for {allowed}: failing",
                red=True,
            )


def pytest_configure(config) -> None:
    # xdist workers hand their reports to the controller, which counts them once.
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(SkipCounter(), "dcutmix-skip-counter")
