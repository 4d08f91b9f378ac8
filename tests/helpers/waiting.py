"""Waiting for events, not for times: poll a condition, fail naming what was awaited."""

from __future__ import annotations

import os
import select
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


def wait_for_line(stream, wanted, timeout: float, what: str) -> list[str]:
    """Read ``stream`` (a process's pipe) until a line for which ``wanted(line)`` holds.

    Returns the lines read, that one last; what followed it in the same read is dropped. Reads
    the pipe's descriptor directly, so the file object holds nothing back for a later
    ``communicate()``. Fails naming ``what`` when the stream ends first (the process exited) or
    after the generous ``timeout``.
    """
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}; read:\n" + "".join(lines)
            )
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            pytest.fail(
                f"the stream ended before {what}; read:\n" + "".join(lines) + pending.decode()
            )
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            lines.append(line.decode(errors="replace") + "\n")
            if wanted(lines[-1]):
                return lines
