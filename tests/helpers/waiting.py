"""Waiting for events, not for times: poll a condition, fail naming what was awaited."""

from __future__ import annotations

import time

import pytest


def wait_until(condition, timeout: float, what: str, poll: float = 0.5):
    """Poll ``condition()`` until it returns something truthy, and return that.

    ``timeout`` is a generous guard, not a measurement: past it the test fails with
    "timed out after N s waiting for ``what``", so the failure says which event never came.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
